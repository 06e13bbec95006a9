"""The MIME tree of a message (RFC 2045/2046): the one MIME parser, for the doors, the policies and IMAP.

Invariants:
- The tree holds offsets into the bytes it was parsed from, never copies:
  a part's header, body and section are slices of the raw message, so a
  client sees exactly the octets RFC822.SIZE and BODYSTRUCTURE count.
- Bounds are named: ``MAX_DEPTH`` nested multiparts / messages, ``MAX_PARTS``
  entities, ``MAX_SIZE`` bytes. Past one, a strict parse (a message at the
  door) raises ``MessageTooComplex``; a lenient one (a message already
  stored) shows the deeper content as one opaque part. Nothing else escapes
  ``parse_tree``: no ``RecursionError``, no ``IndexError``.
- Types and parameters are kept as written (``text/x-MYOWN``,
  ``boundary="foo bar"``); comparisons use ``maintype``/``content_type``,
  which are lower-case.
- A multipart without a boundary, or whose boundary never occurs, is shown
  as one text/plain part, as before.

See Also: RFC 2045 §5 (Content-Type), §6 (Content-Transfer-Encoding); RFC 2046 §5.1.1 (boundaries);
RFC 2183 (Content-Disposition); RFC 3501 §6.4.5 (section numbers).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from mailserver.message.headers import HeaderField, decode_words, parse_fields, parse_params, split_header

MAX_DEPTH = 50  # nested multiparts and message/rfc822 parts
MAX_PARTS = 5_000  # entities in one message, the message itself included
MAX_SIZE = 1 << 30  # bytes: above any configurable message size limit

_BASE64_JUNK = re.compile(rb"[^A-Za-z0-9+/]")
_ENCAPSULATING = frozenset({"message/rfc822", "message/global"})


class MessageError(Exception):
    """A message the model refuses to take apart: ``text`` is a sentence a person understands."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class MessageTooComplex(MessageError):
    """Past ``MAX_DEPTH``, ``MAX_PARTS`` or ``MAX_SIZE``."""


@dataclass(frozen=True, slots=True)
class Entity:
    """A message or a body part: offsets of its header and body in the raw bytes, its type, its children."""

    fields: tuple[HeaderField, ...]
    start: int  # where the header block begins
    body_start: int  # where the body begins (just after the blank line)
    end: int
    type: str  # as written
    subtype: str  # as written
    params: tuple[tuple[str, str], ...]  # Content-Type parameters, names and values as written
    children: tuple[Entity, ...] = ()
    message: Entity | None = None  # the encapsulated message of a message/rfc822 part

    @property
    def maintype(self) -> str:
        return self.type.lower()

    @property
    def content_type(self) -> str:
        return f"{self.type}/{self.subtype}".lower()

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart" and bool(self.children)

    @property
    def body_size(self) -> int:
        return self.end - self.body_start

    def get(self, name: str) -> str | None:
        """The first field ``name`` unfolded, encoded words as written."""
        key = name.lower()
        for f in self.fields:
            if f.key == key:
                return f.value
        return None

    def get_all(self, name: str) -> list[str]:
        key = name.lower()
        return [f.value for f in self.fields if f.key == key]

    def param(self, name: str) -> str | None:
        key = name.lower()
        return next((v for k, v in self.params if k.lower() == key), None)

    def disposition(self) -> tuple[str, tuple[tuple[str, str], ...]] | None:
        value = self.get("content-disposition")
        if value is None:
            return None
        head, params = parse_params(value)
        return head, params

    @property
    def filename(self) -> str | None:
        """Content-Disposition ``filename``, else Content-Type ``name`` (RFC 2183 §2.3), encoded words decoded."""
        disp = self.disposition()
        name = None
        if disp is not None:
            name = next((v for k, v in disp[1] if k.lower() == "filename"), None)
        if name is None:
            name = self.param("name")
        return decode_words(name) if name is not None else None

    @property
    def charset(self) -> str | None:
        return self.param("charset")

    @property
    def transfer_encoding(self) -> str:
        cte = (self.get("content-transfer-encoding") or "").split()
        return cte[0] if cte else "7bit"


class _Budget:
    __slots__ = ("parts", "strict")

    def __init__(self, strict: bool) -> None:
        self.parts = 0
        self.strict = strict


def _content_type(fields: tuple[HeaderField, ...], default: str) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    value = next((f.value for f in fields if f.key == "content-type"), None)
    if value is not None:
        head, params = parse_params(value)
        maintype, slash, subtype = head.partition("/")
        maintype, subtype = maintype.strip(), subtype.strip()
        if slash and maintype and subtype and " " not in maintype and " " not in subtype:
            return maintype, subtype, params
        # RFC 2045 §5.2: an invalid Content-Type means text/plain (its parameters still count)
        t, _, s = default.partition("/")
        return t, s, params if default == "text/plain" else ()
    t, _, s = default.partition("/")
    return t, s, ()


def parse_tree(raw: bytes, *, strict: bool = True) -> Entity:
    """The MIME tree of ``raw``. ``strict`` (a message coming in): ``MessageTooComplex`` past a bound."""
    if strict and len(raw) > MAX_SIZE:
        raise MessageTooComplex(f"This message is larger than {MAX_SIZE} bytes and cannot be taken apart")
    return _parse(raw, 0, len(raw), "text/plain", 0, _Budget(strict))


def _parse(raw: bytes, start: int, end: int, default: str, depth: int, budget: _Budget) -> Entity:
    budget.parts += 1
    hend = split_header(raw, start, end)
    fields = parse_fields(raw[start:hend])
    maintype, subtype, params = _content_type(fields, default)
    kind = f"{maintype}/{subtype}".lower()
    opaque = Entity(fields, start, hend, end, maintype, subtype, params)
    container = maintype.lower() == "multipart" or kind in _ENCAPSULATING
    if not container:
        return opaque
    if depth >= MAX_DEPTH:
        if budget.strict:
            raise MessageTooComplex(
                f"This message nests its MIME parts more than {MAX_DEPTH} levels deep: it cannot be accepted"
            )
        return opaque
    if budget.parts >= MAX_PARTS:
        if budget.strict:
            raise MessageTooComplex(f"This message has more than {MAX_PARTS} MIME parts: it cannot be accepted")
        return opaque
    if kind in _ENCAPSULATING:
        inner = _parse(raw, hend, end, "text/plain", depth + 1, budget)
        return Entity(fields, start, hend, end, maintype, subtype, params, message=inner)
    boundary = next((v for k, v in params if k.lower() == "boundary"), None)
    if not boundary:
        return Entity(fields, start, hend, end, "text", "plain", params)
    child_default = "message/rfc822" if subtype.lower() == "digest" else "text/plain"
    children: list[Entity] = []
    for a, b in _chunks(raw, hend, end, boundary):
        if budget.parts >= MAX_PARTS:
            if budget.strict:
                raise MessageTooComplex(f"This message has more than {MAX_PARTS} MIME parts: it cannot be accepted")
            break
        children.append(_parse(raw, a, b, child_default, depth + 1, budget))
    if not children:
        return Entity(fields, start, hend, end, "text", "plain", params)
    return Entity(fields, start, hend, end, maintype, subtype, params, children=tuple(children))


def _chunks(raw: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """The (start, end) of each body part between the delimiters of ``boundary`` in ``raw[start:end]``."""
    candidates = [boundary.encode("utf-8")]
    try:
        latin = boundary.encode("latin-1")  # the header was not UTF-8 (headers.text)
        if latin != candidates[0]:
            candidates.append(latin)
    except UnicodeEncodeError:
        pass
    for b in candidates:
        out = _split_parts(raw, start, end, b"--" + b)
        if out:
            return out
    return []


def _delimiter_end(raw: bytes, i: int, end: int) -> tuple[int, bool] | None:
    """After ``--boundary`` at ``i``: (where the next line starts, is it the close delimiter), or None."""
    close = raw.startswith(b"--", i) and i + 2 <= end
    if close:
        i += 2
    while i < end and raw[i] in b" \t":  # RFC 2046 §5.1.1: linear white space may follow the boundary
        i += 1
    if i >= end:
        return end, close
    if raw[i] == 0x0A:
        return i + 1, close
    if raw[i] == 0x0D and i + 1 < end and raw[i + 1] == 0x0A:
        return i + 2, close
    return None


def _split_parts(raw: bytes, start: int, end: int, dash_boundary: bytes) -> list[tuple[int, int]]:
    """RFC 2046 §5.1.1: a delimiter is ``--boundary`` at the start of a line; its line end belongs to it."""
    out: list[tuple[int, int]] = []
    begin: int | None = None
    i = start
    while True:
        j = raw.find(dash_boundary, i, end)
        if j < 0:
            break
        i = j + 1
        if j != start and raw[j - 1] != 0x0A:
            continue
        after = _delimiter_end(raw, j + len(dash_boundary), end)
        if after is None:
            continue
        if begin is not None:
            stop = j
            if stop - 2 >= begin and raw[stop - 2 : stop] == b"\r\n":
                stop -= 2
            elif stop - 1 >= begin and raw[stop - 1] == 0x0A:
                stop -= 1
            out.append((begin, stop))
        nxt, close = after
        if close:
            return out
        begin = nxt
        i = nxt
    if begin is not None:
        out.append((begin, end))
    return out


def find_part(root: Entity, path: tuple[int, ...]) -> Entity | None:
    """RFC 3501 §6.4.5: part ``path`` of message ``root`` (a non-multipart message's only part is 1)."""
    current = root
    for i, n in enumerate(path):
        if i == 0:
            body = root
        elif current.message is not None:
            body = current.message
        elif current.is_multipart:
            body = current
        else:
            return None
        if body.is_multipart:
            if not 1 <= n <= len(body.children):
                return None
            current = body.children[n - 1]
        elif n == 1:
            current = body
        else:
            return None
    return current


#: the content transfer encodings ``decode_body`` undoes, or that need no undoing (RFC 2045 §6.1)
KNOWN_ENCODINGS = frozenset({"7bit", "8bit", "binary", "base64", "quoted-printable"})


def decode_body(data: bytes, transfer_encoding: str) -> bytes:
    """A body's bytes without their transfer encoding (RFC 2045 §6); malformed input is decoded as far as it goes."""
    cte = transfer_encoding.lower()
    try:
        if cte == "base64":
            clean = _BASE64_JUNK.sub(b"", data)
            clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
            return binascii.a2b_base64(clean + b"=" * (-len(clean) % 4))
        if cte == "quoted-printable":
            return binascii.a2b_qp(data)
    except (binascii.Error, ValueError):
        return data
    return data


def decode_range(raw: bytes, start: int, end: int, transfer_encoding: str) -> bytes:
    """``decode_body(raw[start:end], ...)`` without copying the encoded body first (a 49 MB attachment is read
    in place: the decoded bytes are the only new ones). Base64 without ``=`` before its end goes straight to
    ``binascii`` (which skips line breaks and junk as ``decode_body`` does); anything else takes that path."""
    if transfer_encoding.lower() == "base64":
        pad = raw.find(b"=", start, end)
        if pad < 0 or not raw[pad:end].strip(b"= \t\r\n"):
            try:
                return binascii.a2b_base64(memoryview(raw)[start:end])
            except (binascii.Error, ValueError):
                pass  # missing padding, a stray octet: decoded as far as it goes below
    return decode_body(raw[start:end], transfer_encoding)


def walk(root: Entity) -> list[Entity]:
    """Every entity of the tree, depth first, encapsulated messages included (no recursion)."""
    out: list[Entity] = []
    stack = [root]
    while stack:
        e = stack.pop()
        out.append(e)
        if e.message is not None:
            stack.append(e.message)
        stack.extend(reversed(e.children))
    return out


def leaves(root: Entity) -> list[tuple[tuple[int, ...], Entity]]:
    """The leaf parts with their RFC 3501 part numbers (an encapsulated message's parts under its own)."""
    out: list[tuple[tuple[int, ...], Entity]] = []
    stack: list[tuple[tuple[int, ...], Entity, bool]] = [((), root, True)]
    while stack:
        path, e, is_message = stack.pop()
        if e.message is not None:
            stack.append((path, e.message, True))
        elif e.is_multipart:
            for i in range(len(e.children), 0, -1):
                stack.append(((*path, i), e.children[i - 1], False))
        else:
            out.append(((*path, 1) if is_message else path, e))
    return out
