"""The SMTP listeners (MX, submission, submissions) and the queue worker as ``Service``s of ``mailserver.app``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailserver.app import Service
    from mailserver.context import Context


def build(ctx: Context) -> list[Service]:
    """No SMTP listener yet: the SMTP work (issue 4) provides them here."""
    return []
