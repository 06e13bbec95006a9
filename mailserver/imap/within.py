"""WITHIN (RFC 5032): OLDER and YOUNGER measured from the session's clock, read once per command.

Invariants:
- Every ``SearchWithin`` of a program is anchored to the same instant, the injected
  clock's (``ctx.clock``, a ``FakeClock`` in tests) when the command starts, so that
  one SEARCH never sees time move and a test moves time by advancing the clock.
- ``OLDER n`` matches an internal date strictly before ``now - n``; ``YOUNGER n``
  matches the others, so ``NOT OLDER n`` is ``YOUNGER n`` (``messages.matches``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from mailserver.imap.protocol import commands as c
from mailserver.imap.searchres import rewrite


def anchored(key: c.SearchKey, now: dt.datetime) -> c.SearchKey:
    """``key`` with its OLDER/YOUNGER keys measured from ``now``."""

    def anchor(k: c.SearchKey) -> c.SearchKey | None:
        return dataclasses.replace(k, now=now) if isinstance(k, c.SearchWithin) else None

    return rewrite(key, anchor)
