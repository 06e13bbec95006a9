"""Typed responses in, bytes out (RFC 3501 §7).

Invariants:
- Response objects validate on construction: a text is one line, a status is
  one the grammar knows, a response code is an atom with its arguments.
- ``render(value)`` writes IMAP data: ``None`` is NIL, ``int`` a number,
  ``Atom`` as is, ``str`` a quoted string when it can be one and a literal
  otherwise (8-bit, CR, LF, long), ``bytes``/``Literal`` always a literal,
  a list or tuple a parenthesised list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

STATUSES = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})
_CODE = re.compile(r"[A-Z][A-Z0-9.-]*(?: [^\r\n\]]*| \(.*\))?\Z")


@dataclass(frozen=True, slots=True)
class Atom:
    text: str

    def __post_init__(self) -> None:
        if not self.text or any(ch in "\r\n" for ch in self.text):
            raise ValueError("an atom is a non-empty single line")


@dataclass(frozen=True, slots=True)
class Literal:
    data: bytes


@dataclass(frozen=True, slots=True)
class Literal8:
    """``~{n}`` octets that may hold NUL (RFC 3516 §4.2: BINARY[] of binary content)."""

    data: bytes


Value = Union[None, int, str, bytes, Atom, Literal, Literal8, Sequence["Value"]]  # noqa: UP007 - a recursive alias


def render_string(s: str) -> bytes:
    data = s.encode("utf-8")
    if len(data) <= 1000 and all(0x20 <= b < 0x7F for b in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def render(value: Value) -> bytes:
    if value is None:
        return b"NIL"
    if isinstance(value, bool):
        raise TypeError("booleans have no IMAP form")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, Atom):
        return value.text.encode()
    if isinstance(value, str):
        return render_string(value)
    if isinstance(value, bytes):
        return b"{%d}\r\n" % len(value) + value
    if isinstance(value, Literal):
        return b"{%d}\r\n" % len(value.data) + value.data
    if isinstance(value, Literal8):
        return b"~{%d}\r\n" % len(value.data) + value.data
    return b"(" + b" ".join(render(v) for v in value) + b")"


def _check_text(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise ValueError("a response text is one line")


class Response:
    __slots__ = ()

    def to_bytes(self) -> bytes:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Tagged(Response):
    """``tag OK [CODE] text``."""

    tag: str
    status: str
    text: str
    code: str | None = None

    def __post_init__(self) -> None:
        if self.status not in ("OK", "NO", "BAD"):
            raise ValueError(f"tagged status {self.status}")
        _check_text(self.text)
        if self.code is not None and not _CODE.match(self.code):
            raise ValueError(f"malformed response code {self.code!r}")

    def to_bytes(self) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"{self.tag} {self.status} {code}{self.text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class Untagged(Response):
    """``* OK [CODE] text``, ``* BYE text``..."""

    status: str
    text: str
    code: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"untagged status {self.status}")
        _check_text(self.text)
        if self.code is not None and not _CODE.match(self.code):
            raise ValueError(f"malformed response code {self.code!r}")

    def to_bytes(self) -> bytes:
        code = f"[{self.code}] " if self.code else ""
        return f"* {self.status} {code}{self.text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class Data(Response):
    """``* <values separated by spaces>``: ``Data((Atom("CAPABILITY"), Atom("IMAP4rev1")))``, ``* 3 EXISTS``."""

    values: tuple[Value, ...]

    def to_bytes(self) -> bytes:
        return b"* " + b" ".join(render(v) for v in self.values) + b"\r\n"


@dataclass(frozen=True, slots=True)
class Continuation(Response):
    text: str = "Ready"

    def __post_init__(self) -> None:
        _check_text(self.text)

    def to_bytes(self) -> bytes:
        return f"+ {self.text}\r\n".encode()


@dataclass(frozen=True, slots=True)
class FetchData(Response):
    """``* 12 FETCH (UID 40 FLAGS (\\Seen) BODY[] {n}...)``."""

    seq: int
    items: tuple[tuple[str, Value], ...]

    def to_bytes(self) -> bytes:
        inner = b" ".join(name.encode() + b" " + render(v) for name, v in self.items)
        return b"* %d FETCH (" % self.seq + inner + b")\r\n"


def exists(n: int) -> Data:
    return Data((n, Atom("EXISTS")))


def recent(n: int) -> Data:
    return Data((n, Atom("RECENT")))


def expunge(seq: int) -> Data:
    return Data((seq, Atom("EXPUNGE")))


def flag_list(flags: Sequence[str]) -> tuple[Atom, ...]:
    return tuple(Atom(f) for f in flags)
