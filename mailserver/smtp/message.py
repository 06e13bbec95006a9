"""Header work on RFC 5322 messages, without re-serialising them (signatures survive).

The door works on the ``ParsedMessage`` (``complete_ids``; its own ``prepend``,
``remove``); the functions on raw bytes serve messages the server writes itself
(DSNs).

Invariants:
- The message is never parsed into objects and written back: fields are found
  by scanning the header block, and added or removed as bytes, so everything
  else (and every DKIM signature over it) stays byte for byte as received.
- Added fields are ASCII, folded at 78 columns with CRLF (RFC 5322 §2.2.3).
- The header block ends at the first empty line; a message without one is all header.

See Also: RFC 5322 §2.2 (fields), §3.6.4 (Message-ID), §3.6.1 (Date);
RFC 5321 §4.4 (Received, trace fields); RFC 8601 (Authentication-Results).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mailserver.message import ParsedMessage

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(frozen=True, slots=True)
class Field:
    name: str  # lower-case
    raw: bytes  # the whole field, continuation lines and final CRLF included

    @property
    def value(self) -> str:
        _, _, v = self.raw.partition(b":")
        return " ".join(v.decode("utf-8", "replace").split())


def split(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its last CRLF, the rest starting at the empty line)."""
    if raw.startswith(b"\r\n"):
        return b"", raw
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw, b""
    return raw[: end + 2], raw[end + 2 :]


def fields(raw: bytes) -> list[Field]:
    return list(_iter_fields(split(raw)[0]))


def _iter_fields(header: bytes) -> Iterator[Field]:
    lines = header.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    current: list[bytes] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and current:
            current.append(line)
            continue
        if current:
            yield _field(current)
        current = [line]
    if current:
        yield _field(current)


def _field(lines: list[bytes]) -> Field:
    m = _FIELD_NAME.match(lines[0])
    name = m.group(1).decode("ascii").lower() if m else ""
    return Field(name, b"\r\n".join(lines) + b"\r\n")


def count(raw: bytes, name: str) -> int:
    n = name.lower()
    return sum(1 for f in fields(raw) if f.name == n)


def has(raw: bytes, name: str) -> bool:
    return count(raw, name) > 0


def values(raw: bytes, name: str) -> list[str]:
    n = name.lower()
    return [f.value for f in fields(raw) if f.name == n]


def prepend(raw: bytes, *new_fields: bytes) -> bytes:
    return b"".join(new_fields) + raw


def append_to_header(raw: bytes, *new_fields: bytes) -> bytes:
    """Add fields at the end of the header block (where a client would have put them)."""
    header, rest = split(raw)
    if not rest:
        rest = b"\r\n"
    return header + b"".join(new_fields) + rest


def remove(raw: bytes, predicate: Callable[[Field], bool]) -> bytes:
    header, rest = split(raw)
    kept = b"".join(f.raw for f in _iter_fields(header) if not predicate(f))
    return kept + rest


def fold(name: str, parts: Sequence[str]) -> bytes:
    """``Name: part part ...``, folded before a part when the line would pass 78 columns."""
    head = f"{name}:"
    lines: list[str] = []
    line = head
    for part in parts:
        if len(line) + 1 + len(part) > 78 and line not in (head, " "):
            lines.append(line)
            line = " " + part
        else:
            line += " " + part
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii", "replace")


def message_id(hostname: str) -> str:
    return f"<{uuid.uuid4().hex}@{hostname}>"


def rfc5322_date(when: dt.datetime) -> str:
    return email.utils.format_datetime(when.astimezone(dt.UTC))


def add_missing_ids(raw: bytes, *, hostname: str, now: dt.datetime) -> bytes:
    """Message-ID and Date when the client left them out (RFC 6409 §8.3, §8.2)."""
    missing: list[bytes] = []
    if not has(raw, "message-id"):
        missing.append(f"Message-ID: {message_id(hostname)}\r\n".encode("ascii"))
    if not has(raw, "date"):
        missing.append(f"Date: {rfc5322_date(now)}\r\n".encode("ascii"))
    return append_to_header(raw, *missing) if missing else raw


def complete_ids(msg: ParsedMessage, *, hostname: str, now: dt.datetime) -> ParsedMessage:
    """Message-ID and Date when the client left them out (RFC 6409 §8.3, §8.2), on the parsed message."""
    missing: list[bytes] = []
    if not msg.has("message-id"):
        missing.append(f"Message-ID: {message_id(hostname)}\r\n".encode("ascii"))
    if not msg.has("date"):
        missing.append(f"Date: {rfc5322_date(now)}\r\n".encode("ascii"))
    return msg.add_to_header(*missing)


def _comment(text: str) -> str:
    """A safe RFC 5322 comment body: no parentheses, backslashes or control characters."""
    return re.sub(r"[()\\\x00-\x1f\x7f]", "", text)[:200]


def received(
    *,
    helo: str | None,
    peer_ip: str | None,
    by: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    tls: str | None,
    when: dt.datetime,
) -> bytes:
    """A Received trace field (RFC 5321 §4.4, with-protocol names of RFC 3848: ESMTPS, ESMTPSA)."""
    parts: list[str] = []
    if helo or peer_ip:
        parts += ["from", _comment(helo or "unknown").replace(" ", "") or "unknown"]
        if peer_ip:
            parts.append(f"([{_comment(peer_ip)}])")
    if tls:
        parts.append(f"({_comment(tls)})")
    parts += ["by", by, "(masante-mail)", "with", protocol, "id", queue_id]
    if recipient:
        parts += ["for", f"<{recipient}>"]
    tokens = [*parts[:-1], parts[-1] + ";", rfc5322_date(when)]
    return fold("Received", tokens)
