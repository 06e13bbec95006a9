"""The IMAP listeners (IMAP with STARTTLS, IMAPS) as a ``Service`` of ``mailserver.app``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailserver.app import Service
    from mailserver.context import Context


def build(ctx: Context) -> list[Service]:
    """No IMAP listener yet: the IMAP work (issue 3) provides them here."""
    return []
