"""Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).

Printable ASCII stands for itself except "&", written "&-"; other characters are
UTF-16 in modified base64 ("," for "/") between "&" and "-".
``decode`` is strict (``ValueError`` on a malformed name) except that a name
holding 8-bit bytes is taken as UTF-8, as some clients send.
"""

from __future__ import annotations

import base64
import binascii


def encode(name: str) -> str:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            data = "".join(run).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(raw: bytes) -> str:
    if any(b > 0x7F for b in raw):
        return raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    text = raw.decode("ascii")
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated modified UTF-7 shift sequence")
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        b64 = chunk.replace(",", "/")
        b64 += "=" * (-len(b64) % 4)
        try:
            data = base64.b64decode(b64, validate=True)
        except binascii.Error:
            raise ValueError("malformed modified UTF-7") from None
        if len(data) % 2:
            raise ValueError("malformed modified UTF-7")
        decoded = data.decode("utf-16-be")
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise ValueError("modified UTF-7 must not encode printable ASCII")
        out.append(decoded)
    result = "".join(out)
    if encode(result) != text:
        raise ValueError("non-canonical modified UTF-7")
    return result


def wire(name: str, utf8: bool) -> str:
    """A mailbox name as a response carries it: UTF-8 once IMAP4rev2 or UTF8=ACCEPT is enabled (RFC 9051 §5.1,
    RFC 6855 §3), modified UTF-7 before."""
    return name if utf8 else encode(name)
