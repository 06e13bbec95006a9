"""What the IMAP side needs to know of a message without reparsing it: derived once, at delivery.

The result is sealed next to the body (``Blob.meta``). It carries a version
``v``: a reader finding an older version derives it again from the body.
"""

from __future__ import annotations

import email
import email.policy
from typing import Any

META_VERSION = 1

_SUMMARY_HEADERS = ("subject", "from", "to", "cc", "date", "message-id", "in-reply-to", "reply-to")


def derive(raw: bytes) -> dict[str, Any]:
    """A summary of ``raw``: the main header fields (raw text, unfolded)."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    headers: dict[str, str] = {}
    for name in _SUMMARY_HEADERS:
        value = msg.get(name)
        if value is not None:
            headers[name] = " ".join(str(value).split())
    return {"v": META_VERSION, "headers": headers}
