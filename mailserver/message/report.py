"""The ``multipart/report`` (RFC 6522) that a DSN (RFC 3464) and an MDN (RFC 8098) are built as.

Invariants:
- Three parts, in this order: the human explanation (``text/plain``, UTF-8, quoted-printable, CRLF lines),
  the machine-readable ``message/<report-type>`` (RFC 6522 §3: ``message/delivery-status`` for
  ``report-type=delivery-status``, ``message/disposition-notification`` for ``disposition-notification``),
  and the original: whole (``message/rfc822``) or only its header (``text/rfc822-headers``).
- The original is returned as it came, CRLF-terminated, marked ``8bit`` when it is not ASCII.
- The caller writes every other header field (From, To, Subject, Date, Message-ID, Auto-Submitted,
  threading), each one line it made safe; this module adds ``MIME-Version`` and the ``Content-Type`` with a
  fresh boundary.
"""

from __future__ import annotations

import quopri
import uuid
from collections.abc import Sequence


def _quoted_printable(text: str) -> bytes:
    human = quopri.encodestring(text.encode("utf-8"))
    return human.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def build_report(
    head: Sequence[str],
    *,
    report_type: str,
    preamble: str,
    human_text: str,
    machine_part: str,
    original: bytes,
    whole: bool,
    boundary_tag: str,
) -> bytes:
    """The report message: ``head`` (header lines without CRLF), then the three parts; ``original`` is the
    message when ``whole``, else its header."""
    boundary = f"=_{boundary_tag}_{uuid.uuid4().hex}"
    head = [
        *head,
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report_type};\r\n boundary="{boundary}"',
    ]
    returned_type = "message/rfc822" if whole else "text/rfc822-headers"
    if not original.endswith(b"\r\n"):
        original += b"\r\n"
    parts = [
        b"\r\n".join(h.encode("utf-8") for h in head) + b"\r\n\r\n",
        preamble.encode("utf-8") + b"\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n",
        _quoted_printable(human_text),
        f"\r\n--{boundary}\r\n".encode(),
        f"Content-Type: message/{report_type}\r\n\r\n".encode(),
        machine_part.encode("utf-8"),
        f"\r\n--{boundary}\r\n".encode(),
        f"Content-Type: {returned_type}\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n" if not original.isascii() else b"",
        b"\r\n",
        original,
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)
