"""The one message builder of the suite: what a mail client or a professional's software sends.

``message()`` builds it with the stdlib's ``EmailMessage``: From, To, Subject,
a fixed Date, a Message-ID unique to (sender, recipient, subject), any other
header (``Reply_To=`` is ``Reply-To``), a text body, an optional HTML
alternative and attachments. Line endings are CRLF, as on the wire (SMTP and
IMAP both speak CRLF), unless ``crlf=False``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from email.message import EmailMessage

__all__ = ["DATE", "crlf", "message"]

#: the Date every test message carries unless told otherwise (RFC 5322 §3.3)
DATE = "Mon, 23 Nov 2026 09:30:00 +0000"


def crlf(raw: bytes) -> bytes:
    """Line ends as on the wire (SMTP and IMAP speak CRLF)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def message(
    sender: str,
    rcpt: str,
    subject: str,
    body: str = "Bonjour.\n",
    *,
    html: str | None = None,
    attachments: Sequence[tuple[str, str, bytes]] = (),
    date: str | None = DATE,
    message_id: str | None = None,
    crlf_endings: bool = True,
    **headers: str,
) -> bytes:
    """A message from ``sender`` to ``rcpt``; ``attachments`` are ``(filename, content type, data)``."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, rcpt, subject
    if date is not None:
        msg["Date"] = date
    digest = hashlib.sha256(f"{sender}\0{rcpt}\0{subject}".encode()).hexdigest()[:20]
    msg["Message-ID"] = message_id or f"<{digest}@test>"
    for k, v in headers.items():
        msg[k.replace("_", "-")] = v
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/", 1)
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    raw = msg.as_bytes()
    return crlf(raw) if crlf_endings else raw
