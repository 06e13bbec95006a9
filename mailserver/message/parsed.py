"""``ParsedMessage``: one message, parsed once at the door and handed down to every layer that reads it.

Built at the end of SMTP DATA or IMAP APPEND (``parse_message``; in a worker
thread above ``PARSE_IN_THREAD`` bytes with ``parse_message_async``), it holds
the raw bytes, the header index, the MIME tree, the policy ``Content``, the
IMAP metadata (``ImapMeta``) and the attachments and calendar parts the vault
and the agenda file.

Invariants:
- ``mime.parse_tree`` runs once per ``ParsedMessage`` built from bytes; header
  edits (``prepend``, ``add_to_header``, ``remove``) return a new
  ``ParsedMessage`` sharing the tree: they only touch the top header block,
  so every part's offsets move by the same amount and nothing is reparsed.
- Header edits are made on bytes, never by re-serialising: everything else
  (and every DKIM signature over it) stays byte for byte as received.
- A message at the door is parsed ``strict``: past the bounds of
  ``mailserver.message.mime`` it raises ``MessageTooComplex`` (the SMTP door
  answers ``554 5.6.0``). A message read back from the store is parsed
  leniently: it was accepted once and is always shown.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mailserver.message import mime
from mailserver.message.addresses import mailboxes
from mailserver.message.headers import HeaderField, parse_fields, unfold
from mailserver.message.imap import (
    SEARCH_FIELDS,
    Disposition,
    Envelope,
    Extension,
    ImapMeta,
    MultiPart,
    SinglePart,
    address_list,
)
from mailserver.message.mime import Entity
from mailserver.message.offload import in_thread
from policies import content as C

#: messages larger than this are parsed in a worker thread, off the event loop (the one threshold)
PARSE_IN_THREAD = 64 * 1024

_CALENDAR_TYPES = frozenset({"text/calendar", "application/ics"})


@dataclass(frozen=True, slots=True)
class Attachment:
    """A leaf part the vault or the agenda may file: where it is, what it says it is, its decoded bytes."""

    part: tuple[int, ...]  # RFC 3501 part number
    content_type: str  # lower-case
    filename: str | None
    disposition: str | None  # "attachment", "inline" or None
    entity: Entity
    _message: ParsedMessage

    def decoded(self) -> bytes:
        return self._message.decoded_body(self.entity)


class ParsedMessage:
    """One message: raw bytes, header index, MIME tree, and what each layer derives from them."""

    __slots__ = ("_content", "_root", "_shift", "_structure", "fields", "header_end", "raw")

    def __init__(
        self,
        raw: bytes,
        fields: tuple[HeaderField, ...],
        header_end: int,
        root: Entity,
        shift: int,
    ) -> None:
        self.raw = raw
        self.fields = fields  # the top header block, in order
        self.header_end = header_end  # offset of the top body in ``raw``
        self._root = root  # offsets as parsed; add ``_shift`` for ``raw``
        self._shift = shift
        self._content: C.Content | None = None
        self._structure: SinglePart | MultiPart | None = None

    # --- building --------------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, raw: bytes, *, strict: bool = True) -> ParsedMessage:
        root = mime.parse_tree(raw, strict=strict)
        return cls(raw, root.fields, root.body_start, root, 0)

    def prepared(self) -> ParsedMessage:
        """Derive now what the layers read (policy content, body structure), so no layer pays for it later."""
        _ = self.content
        _ = self.structure
        return self

    def _edited(self, header: bytes) -> ParsedMessage:
        fields = parse_fields(header)
        # one copy of the body, not two (a slice, then the concatenation)
        new_raw = b"".join((header, memoryview(self.raw)[self.header_end :]))
        new = ParsedMessage(new_raw, fields, len(header), self._root, self._shift + len(header) - self.header_end)
        new._content, new._structure = self._content, self._structure
        return new

    # --- the header index ------------------------------------------------------------------------------------

    @property
    def header(self) -> bytes:
        """The top header block, its blank line included."""
        return self.raw[: self.header_end]

    @property
    def size(self) -> int:
        return len(self.raw)

    def get(self, name: str) -> str | None:
        key = name.lower()
        return next((f.value for f in self.fields if f.key == key), None)

    def values(self, name: str) -> list[str]:
        key = name.lower()
        return [f.value for f in self.fields if f.key == key]

    def decoded(self, name: str) -> list[str]:
        """Every field ``name``, RFC 2047 encoded words decoded."""
        key = name.lower()
        return [f.decoded for f in self.fields if f.key == key]

    def count(self, name: str) -> int:
        key = name.lower()
        return sum(1 for f in self.fields if f.key == key)

    def has(self, name: str) -> bool:
        return self.count(name) > 0

    def addresses(self, name: str) -> list[str]:
        """The addresses (``local@domain``) of every field ``name``, group members included."""
        return [m.address for m in mailboxes(self.values(name)) if m.local and m.domain]

    # --- header edits (no reparse) ----------------------------------------------------------------------------

    def prepend(self, *new_fields: bytes) -> ParsedMessage:
        """Fields on top of the header block (trace fields, RFC 5321 §4.4)."""
        if not new_fields:
            return self
        return self._edited(b"".join(new_fields) + self.header)

    def add_to_header(self, *new_fields: bytes) -> ParsedMessage:
        """Fields at the end of the header block (where a client would have put them)."""
        if not new_fields:
            return self
        header = self.header
        cut = sum(len(f.raw) for f in self.fields)
        blank = header[cut:]
        if blank:
            return self._edited(header[:cut] + b"".join(new_fields) + blank)
        # a message that is all header (no blank line): fields go at the end, then the blank line
        sep = b"" if header.endswith(b"\n") or not header else b"\r\n"
        return self._edited(header + sep + b"".join(new_fields) + b"\r\n")

    def remove(self, predicate: Callable[[HeaderField], bool]) -> ParsedMessage:
        if not any(predicate(f) for f in self.fields):
            return self
        rest = self.header[sum(len(f.raw) for f in self.fields) :]  # the blank line
        return self._edited(b"".join(f.raw for f in self.fields if not predicate(f)) + rest)

    # --- the MIME tree ---------------------------------------------------------------------------------------

    @property
    def root(self) -> Entity:
        return self._root

    def header_of(self, e: Entity) -> bytes:
        if e is self._root:
            return self.header
        return self.raw[e.start + self._shift : e.body_start + self._shift]

    def body_of(self, e: Entity) -> bytes:
        return self.raw[e.body_start + self._shift : e.end + self._shift]

    def decoded_body(self, e: Entity) -> bytes:
        """The body of ``e`` without its transfer encoding, decoded in place (no copy of the encoded body)."""
        return mime.decode_range(self.raw, e.body_start + self._shift, e.end + self._shift, e.transfer_encoding)

    def fields_of(self, e: Entity) -> tuple[HeaderField, ...]:
        return self.fields if e is self._root else e.fields

    def find_part(self, path: tuple[int, ...]) -> Entity | None:
        return mime.find_part(self._root, path)

    def section(self, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()) -> bytes:
        """The octets of ``BODY[part.text (fields)]`` (RFC 3501 §6.4.5); empty if there is no such part."""
        target = self._root if not part else self.find_part(part)
        if target is None:
            return b""
        if text is None:
            return self.body_of(target) if part else self.raw
        if text == "MIME":
            return self.header_of(target)
        msg = target if not part else target.message
        if msg is None:
            return b""
        if text == "TEXT":
            return self.body_of(msg)
        header = self.header_of(msg)
        if text == "HEADER":
            return header
        wanted = {f.lower() for f in fields}
        keep = text == "HEADER.FIELDS"
        lines = [f.raw for f in self.fields_of(msg) if f.name and (f.key in wanted) == keep]
        return b"".join(lines) + b"\r\n"

    def binary_section(self, part: tuple[int, ...]) -> bytes | None:
        """The octets of ``BINARY[part]`` (RFC 3516 §4.2): the part's body without its content transfer
        encoding (the whole message for no part); empty if there is no such part, None if its encoding is
        none this server can undo."""
        if not part:
            return self.raw
        target = self.find_part(part)
        if target is None:
            return b""
        if target.transfer_encoding.lower() not in mime.KNOWN_ENCODINGS:
            return None
        return self.decoded_body(target)

    # --- the policy view -------------------------------------------------------------------------------------

    @property
    def content(self) -> C.Content:
        """What ``policies.content`` decides on (computed once; header edits keep it)."""
        if self._content is None:
            self._content = C.content_of(
                subject=next(iter(self.decoded("subject")), None),
                mss_mes=self.get("x-mss-mes"),
                reply_to=self.addresses("reply-to"),
                from_=self.addresses("from"),
                sender=self.addresses("sender"),
                answers=any(v.strip() for v in (*self.values("in-reply-to"), *self.values("references"))),
                leaves=self._leaves(),
            )
        return self._content

    def _leaves(self) -> Iterable[C.Leaf]:
        for path, e in mime.leaves(self._root):
            payload = self.decoded_body(e)
            yield C.Leaf(e.content_type, e.filename, payload, path)

    # --- what the vault and the agenda need ------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        """Leaf parts with a file name, an ``attachment`` disposition, or a type other than text."""
        out = []
        for path, e in mime.leaves(self._root):
            disp = e.disposition()
            kind = disp[0].lower() if disp else None
            if e.filename is None and kind != "attachment" and e.maintype == "text":
                continue
            out.append(Attachment(path, e.content_type, e.filename, kind, e, self))
        return out

    def calendar_parts(self) -> list[Attachment]:
        """The iCalendar parts (RFC 6047 iMIP: ``text/calendar``)."""
        out = []
        for path, e in mime.leaves(self._root):
            if e.content_type in _CALENDAR_TYPES:
                disp = e.disposition()
                out.append(Attachment(path, e.content_type, e.filename, disp[0].lower() if disp else None, e, self))
        return out

    # --- the IMAP view ---------------------------------------------------------------------------------------

    def envelope(self) -> Envelope:
        return envelope_of(self.fields)

    @property
    def structure(self) -> SinglePart | MultiPart:
        if self._structure is None:
            self._structure = self._body_structure(self._root)
        return self._structure

    def _body_structure(self, e: Entity) -> SinglePart | MultiPart:
        fields = self.fields_of(e)
        ext = _extension(fields, e)
        if e.is_multipart:
            return MultiPart(tuple(self._body_structure(ch) for ch in e.children), e.subtype, e.params, ext)
        start, end = e.body_start + self._shift, e.end + self._shift  # counted in place: no copy of the body
        inner = e.message  # message/rfc822: its envelope and structure are part of ours
        return SinglePart(
            e.type,
            e.subtype,
            e.params,
            _get(fields, "content-id"),
            _get(fields, "content-description"),
            e.transfer_encoding,
            end - start,
            self.raw.count(b"\n", start, end) if inner is not None or e.maintype == "text" else None,
            envelope_of(inner.fields) if inner is not None else None,
            self._body_structure(inner) if inner is not None else None,
            ext,
        )

    def imap_meta(self) -> ImapMeta:
        search = {n: " ".join(v) for n in SEARCH_FIELDS if (v := self.decoded(n))}
        return ImapMeta(self.envelope(), self.structure, self.size, search, _sent(self.get("date")))

    # --- SEARCH over the body --------------------------------------------------------------------------------

    def search_texts(self) -> list[str]:
        """The decoded text/* parts, and the headers of encapsulated messages (SEARCH BODY / TEXT)."""
        out: list[str] = []
        for e in mime.walk(self._root):
            if e.message is not None:
                out.append(decoded_headers(e.message.fields))
            elif not e.is_multipart and e.maintype == "text":
                data = self.decoded_body(e)
                try:
                    out.append(data.decode(e.charset or "utf-8", "replace"))
                except LookupError:
                    out.append(data.decode("utf-8", "replace"))
        return out

    def decoded_headers(self) -> str:
        return decoded_headers(self.fields)


def decoded_headers(fields: Iterable[HeaderField]) -> str:
    return "\n".join(f"{f.name}: {f.decoded}" for f in fields if f.name)


def _get(fields: Iterable[HeaderField], name: str) -> str | None:
    return next((f.value for f in fields if f.key == name), None)


def envelope_of(fields: tuple[HeaderField, ...]) -> Envelope:
    """RFC 3501 §7.4.2: Sender and Reply-To default to From."""
    from_ = address_list(_get(fields, "from"))
    return Envelope(
        _get(fields, "date"),
        _get(fields, "subject"),
        from_,
        address_list(_get(fields, "sender")) or from_,
        address_list(_get(fields, "reply-to")) or from_,
        address_list(_get(fields, "to")),
        address_list(_get(fields, "cc")),
        address_list(_get(fields, "bcc")),
        _get(fields, "in-reply-to"),
        _get(fields, "message-id"),
    )


def _extension(fields: tuple[HeaderField, ...], e: Entity) -> Extension:
    disp = e.disposition()
    language = _get(fields, "content-language")
    langs = tuple(v.strip() for v in language.split(",") if v.strip()) if language else None
    return Extension(
        _get(fields, "content-md5"),
        Disposition(disp[0].lower(), disp[1]) if disp and disp[0] else None,
        langs or None,
        _get(fields, "content-location"),
    )


def _sent(value: str | None) -> dt.date | None:
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(unfold(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return when.date() if when else None


def parse_message(raw: bytes, *, strict: bool = True) -> ParsedMessage:
    """The one entry point: ``raw`` parsed, and what every layer reads derived (``MessageTooComplex``)."""
    return ParsedMessage.parse(raw, strict=strict).prepared()


async def parse_message_async(raw: bytes, *, strict: bool = True) -> ParsedMessage:
    """``parse_message``, in a worker thread above ``PARSE_IN_THREAD`` bytes."""
    if len(raw) > PARSE_IN_THREAD:
        return await in_thread(parse_message, raw, strict=strict)
    return parse_message(raw, strict=strict)


def stored(raw: bytes) -> ParsedMessage:
    """A message read back from the store: parsed leniently, nothing derived beforehand."""
    return ParsedMessage.parse(raw, strict=False)
