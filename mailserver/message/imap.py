"""What IMAP shows of a message without its body: typed ENVELOPE, BODYSTRUCTURE, sizes, search fields.

Derived once at delivery from the ``ParsedMessage`` and sealed next to the body
(``Blob.meta``) as JSON: ``ImapMeta.to_json`` / ``ImapMeta.from_json``.

Invariants:
- ``value()`` gives the nested lists of str/int/None the IMAP renderer writes:
  ENVELOPE and BODY/BODYSTRUCTURE exactly as RFC 3501 §7.4.2 orders them.
- Stored meta of version 2 (the ``dict`` the previous ``mailserver.mime``
  wrote) has the same layout and is read as it is; older or unreadable meta
  gives ``None`` and the reader derives it again from the body.
- Strings are the header text as written (encoded words kept, RFC 3501
  §7.4.2); ``search`` holds the decoded whole fields SEARCH matches against.

See Also: RFC 3501 §7.4.2 (ENVELOPE, BODY, BODYSTRUCTURE), RFC 9051 §7.5.2.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mailserver.message.addresses import GroupEnd, GroupStart, Mailbox, parse_addresses

META_VERSION = 3
READABLE_VERSIONS = frozenset({2, 3})
SEARCH_FIELDS = ("from", "to", "cc", "bcc", "subject")

Params = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Address:
    """One ``(name adl mailbox host)`` of an ENVELOPE address list; group markers too (RFC 3501 §7.4.2)."""

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None

    def value(self) -> list[str | None]:
        return [self.name, self.adl, self.mailbox, self.host]


GROUP_END = Address(None, None, None, None)


def address_list(value: str | None) -> tuple[Address, ...] | None:
    """An address list for ENVELOPE: mailboxes, and groups between their start and end markers."""
    if not value:
        return None
    out: list[Address] = []
    for item in parse_addresses(value):
        if isinstance(item, GroupStart):
            out.append(Address(None, None, item.name or None, None))
        elif isinstance(item, GroupEnd):
            out.append(GROUP_END)
        elif isinstance(item, Mailbox):
            out.append(Address(item.name, item.route, item.local, item.domain))
    return tuple(out) or None


def _addresses_value(addrs: tuple[Address, ...] | None) -> list[list[str | None]] | None:
    return None if not addrs else [a.value() for a in addrs]


def _addresses_of(value: Any) -> tuple[Address, ...] | None:
    if not value:
        return None
    return tuple(Address(*(None if x is None else str(x) for x in (list(a) + [None] * 4)[:4])) for a in value)


@dataclass(frozen=True, slots=True)
class Envelope:
    date: str | None
    subject: str | None
    from_: tuple[Address, ...] | None
    sender: tuple[Address, ...] | None
    reply_to: tuple[Address, ...] | None
    to: tuple[Address, ...] | None
    cc: tuple[Address, ...] | None
    bcc: tuple[Address, ...] | None
    in_reply_to: str | None
    message_id: str | None

    def value(self) -> list[Any]:
        return [
            self.date,
            self.subject,
            _addresses_value(self.from_),
            _addresses_value(self.sender),
            _addresses_value(self.reply_to),
            _addresses_value(self.to),
            _addresses_value(self.cc),
            _addresses_value(self.bcc),
            self.in_reply_to,
            self.message_id,
        ]

    @classmethod
    def of_value(cls, v: Any) -> Envelope:
        items = (list(v) + [None] * 10)[:10] if isinstance(v, list) else [None] * 10

        def s(x: Any) -> str | None:
            return None if x is None else str(x)

        return cls(
            s(items[0]),
            s(items[1]),
            _addresses_of(items[2]),
            _addresses_of(items[3]),
            _addresses_of(items[4]),
            _addresses_of(items[5]),
            _addresses_of(items[6]),
            _addresses_of(items[7]),
            s(items[8]),
            s(items[9]),
        )


EMPTY_ENVELOPE = Envelope(None, None, None, None, None, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class Disposition:
    kind: str
    params: Params

    def value(self) -> list[Any]:
        return [self.kind, _params_value(self.params)]


def _params_value(params: Params) -> list[str] | None:
    out: list[str] = []
    for k, v in params:
        out += [k, v]
    return out or None


def _params_of(v: Any) -> Params:
    if not v:
        return ()
    items = [str(x) for x in v]
    return tuple(zip(items[0::2], items[1::2], strict=False))


def _disposition_of(v: Any) -> Disposition | None:
    if not v:
        return None
    return Disposition(str(v[0]), _params_of(v[1] if len(v) > 1 else None))


def _language_of(v: Any) -> tuple[str, ...] | None:
    if not v:
        return None
    return tuple(str(x) for x in v)


@dataclass(frozen=True, slots=True)
class Extension:
    """The extension data BODYSTRUCTURE adds and BODY leaves out."""

    md5: str | None = None  # single parts only
    disposition: Disposition | None = None
    language: tuple[str, ...] | None = None
    location: str | None = None


@dataclass(frozen=True, slots=True)
class SinglePart:
    type: str
    subtype: str
    params: Params
    id: str | None
    description: str | None
    encoding: str
    size: int
    lines: int | None = None  # text/* and message/rfc822
    envelope: Envelope | None = None  # message/rfc822
    body: BodyStructure | None = None  # message/rfc822
    ext: Extension = field(default_factory=Extension)

    def value(self, *, extended: bool) -> list[Any]:
        out: list[Any] = [
            self.type,
            self.subtype,
            _params_value(self.params),
            self.id,
            self.description,
            self.encoding,
            self.size,
        ]
        if self.envelope is not None and self.body is not None:
            out += [self.envelope.value(), self.body.value(extended=extended), self.lines or 0]
        elif self.lines is not None:
            out.append(self.lines)
        if extended:
            out += [
                self.ext.md5,
                self.ext.disposition.value() if self.ext.disposition else None,
                list(self.ext.language) if self.ext.language else None,
                self.ext.location,
            ]
        return out


@dataclass(frozen=True, slots=True)
class MultiPart:
    parts: tuple[BodyStructure, ...]
    subtype: str
    params: Params = ()
    ext: Extension = field(default_factory=Extension)

    def value(self, *, extended: bool) -> list[Any]:
        out: list[Any] = [p.value(extended=extended) for p in self.parts]
        out.append(self.subtype)
        if extended:
            out += [
                _params_value(self.params),
                self.ext.disposition.value() if self.ext.disposition else None,
                list(self.ext.language) if self.ext.language else None,
                self.ext.location,
            ]
        return out


BodyStructure = SinglePart | MultiPart


def structure_of(v: Any) -> BodyStructure:
    """A BODYSTRUCTURE from its stored (extended) value."""
    if not isinstance(v, list) or not v:
        raise ValueError("not a body structure")
    if isinstance(v[0], list):
        i = 0
        parts: list[BodyStructure] = []
        while i < len(v) and isinstance(v[i], list):
            parts.append(structure_of(v[i]))
            i += 1
        rest = (v[i:] + [None] * 5)[:5]
        return MultiPart(
            tuple(parts),
            str(rest[0] or "mixed"),
            _params_of(rest[1]),
            Extension(None, _disposition_of(rest[2]), _language_of(rest[3]), rest[4]),
        )
    head = (v + [None] * 7)[:7]
    rest = v[7:]
    envelope = body = None
    lines: int | None = None
    if len(rest) >= 3 and isinstance(rest[0], list) and isinstance(rest[1], list):  # message/rfc822
        envelope, body, lines = Envelope.of_value(rest[0]), structure_of(rest[1]), int(rest[2] or 0)
        rest = rest[3:]
    elif str(head[0]).lower() == "text" and rest and isinstance(rest[0], int):
        lines = rest[0]
        rest = rest[1:]
    ext = (rest + [None] * 4)[:4]
    return SinglePart(
        str(head[0]),
        str(head[1]),
        _params_of(head[2]),
        head[3],
        head[4],
        str(head[5] or "7bit"),
        int(head[6] or 0),
        lines,
        envelope,
        body,
        Extension(ext[0], _disposition_of(ext[1]), _language_of(ext[2]), ext[3]),
    )


@dataclass(frozen=True, slots=True)
class ImapMeta:
    """ENVELOPE, BODYSTRUCTURE and what SEARCH reads, for one message."""

    envelope: Envelope
    structure: BodyStructure
    size: int
    search: Mapping[str, str]  # decoded whole fields, for the fields present
    sent: dt.date | None  # the Date field's day (SEARCH SENT*)

    def body(self, *, extended: bool) -> list[Any]:
        return self.structure.value(extended=extended)

    def has(self, name: str) -> bool:
        return name in self.search

    def to_json(self) -> dict[str, Any]:
        return {
            "v": META_VERSION,
            "envelope": self.envelope.value(),
            "bodystructure": self.structure.value(extended=True),
            "size": self.size,
            "search": dict(self.search),
            "sent": self.sent.isoformat() if self.sent else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None, *, envelope: bool = True) -> ImapMeta | None:
        """The stored meta (version 2 or 3); None if it must be derived again. Without ``envelope`` the
        envelope is left empty (``EMPTY_ENVELOPE``, its addresses not decoded): for SEARCH's matching only,
        which reads ``search`` and ``sent``."""
        if not data or data.get("v") not in READABLE_VERSIONS:
            return None
        try:
            structure = structure_of(data["bodystructure"])
            env = Envelope.of_value(data.get("envelope")) if envelope else EMPTY_ENVELOPE
            search = {str(k): str(v) for k, v in (data.get("search") or {}).items()}
            if data.get("v") == 2:  # version 2 listed every field, present or not
                headers = data.get("headers") or {}
                search = {k: v for k, v in search.items() if v or headers.get(k)}
            sent = dt.date.fromisoformat(data["sent"]) if data.get("sent") else None
            size = int(data.get("size") or 0)
        except (KeyError, TypeError, ValueError, IndexError):
            return None
        return cls(env, structure, size, search, sent)
