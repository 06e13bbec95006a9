"""What the IMAP side needs to know of a message without reparsing it: derived once, at delivery.

The result is sealed next to the body (``Blob.meta``). It carries a version
``v``: a reader finding an older version derives it again from the body
(``meta_of``).

Invariants:
- ``derive`` never raises: a message the parsers cannot make sense of still
  gets an envelope and a body structure (text/plain of its whole body).
- Sections (``parse``/``find_part``/``section``) are cut from the raw bytes
  as stored, so a client sees exactly the octets it counts in RFC822.SIZE and
  BODYSTRUCTURE sizes.
- Strings in the derived data are valid Unicode (undecodable 8-bit header
  bytes become U+FFFD); encoded words are kept as written (RFC 3501 §7.4.2),
  except in ``search``, where they are decoded for SEARCH.

See Also: RFC 3501 §6.4.5 (section numbering), §7.4.2 (ENVELOPE, BODYSTRUCTURE); RFC 2045/2046.
"""

from __future__ import annotations

import binascii
import email.header
import email.parser
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

META_VERSION = 2
MAX_DEPTH = 20  # nested multiparts / message/rfc822 followed; deeper content is one opaque part

_SUMMARY_HEADERS = ("subject", "from", "to", "cc", "date", "message-id", "in-reply-to", "reply-to")
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def clean(s: str) -> str:
    """A header string from the compat32 parser (8-bit bytes as surrogates) as valid Unicode."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _unfold(value: str) -> str:
    return re.sub(r"\r?\n(?=[ \t])", "", value).strip()


# --- the MIME tree ---------------------------------------------------------------------------------------


@dataclass
class Entity:
    """A message or body part: its header block (with the blank line), its body, its children."""

    header: bytes
    body: bytes
    fields: Message
    maintype: str
    subtype: str
    children: list[Entity] = field(default_factory=list)
    message: Entity | None = None  # the encapsulated message of a message/rfc822 part

    @property
    def is_multipart(self) -> bool:
        return self.maintype == "multipart"

    def get(self, name: str) -> str | None:
        v = self.fields.get(name)
        return None if v is None else _unfold(clean(str(v)))


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _split(raw: bytes) -> tuple[bytes, bytes]:
    if raw.startswith(b"\r\n"):
        return b"\r\n", raw[2:]
    if raw.startswith(b"\n"):
        return b"\n", raw[1:]
    m = _HEADER_END.search(raw)
    if m is None:
        return raw, b""
    return raw[: m.end()], raw[m.end() :]


def parse(raw: bytes, *, default: str = "text/plain", depth: int = 0) -> Entity:
    header, body = _split(raw)
    try:
        fields = _HEADER_PARSER.parsebytes(header)
    except Exception:  # noqa: BLE001 - the stdlib parser on hostile input; fall back to no header
        fields = Message()
    fields.set_default_type(default)
    try:
        ctype = fields.get_content_type()
    except Exception:  # noqa: BLE001
        ctype = default
    maintype, _, subtype = ctype.partition("/")
    entity = Entity(header, body, fields, maintype, subtype or "plain")
    if depth >= MAX_DEPTH:
        return entity
    if maintype == "multipart":
        boundary = fields.get_param("boundary")
        if isinstance(boundary, tuple):
            boundary = email.utils.collapse_rfc2231_value(boundary)
        if isinstance(boundary, str) and boundary:
            child_default = "message/rfc822" if subtype == "digest" else "text/plain"
            for chunk in _multipart_chunks(body, clean(boundary).encode("utf-8")):
                entity.children.append(parse(chunk, default=child_default, depth=depth + 1))
        if not entity.children:  # a multipart without parts: show its body as one text part
            entity.maintype, entity.subtype = "text", "plain"
    elif ctype == "message/rfc822":
        entity.message = parse(body, depth=depth + 1)
    return entity


def _multipart_chunks(body: bytes, boundary: bytes) -> list[bytes]:
    delim = re.compile(rb"(?:\A|(?<=\n))--" + re.escape(boundary) + rb"(--)?[ \t]*(?:\r?\n|\Z)")
    chunks: list[bytes] = []
    start: int | None = None
    for m in delim.finditer(body):
        if start is not None:
            end = m.start()
            chunk = body[start:end]
            if chunk.endswith(b"\r\n"):
                chunk = chunk[:-2]
            elif chunk.endswith(b"\n"):
                chunk = chunk[:-1]
            chunks.append(chunk)
        if m.group(1):  # close delimiter
            return chunks
        start = m.end()
    if start is not None:
        chunks.append(body[start:])
    return chunks


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


def header_fields(header: bytes) -> list[tuple[str, bytes]]:
    """The fields of a header block: (lower-case name, the field's lines as written, CRLF included)."""
    out: list[tuple[str, bytes]] = []
    for line in header.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and out:
            name, text = out[-1]
            out[-1] = (name, text + line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower() if b":" in line else ""
        out.append((name, line))
    return out


def section(root: Entity, part: tuple[int, ...], text: str | None, fields: tuple[str, ...] = ()) -> bytes:
    """The octets of BODY[part.text (fields)] of the message ``root`` (empty if there is no such part)."""
    if not part:
        target: Entity | None = root
    else:
        target = find_part(root, part)
    if target is None:
        return b""
    if text is None:
        return target.body if part else root.header + root.body
    if text == "MIME":
        return target.header
    msg = target if not part else target.message
    if msg is None:
        return b""
    if text == "TEXT":
        return msg.body
    if text == "HEADER":
        return msg.header
    wanted = {f.lower() for f in fields}
    keep = text == "HEADER.FIELDS"
    lines = [t for n, t in header_fields(msg.header) if (n in wanted) == keep and n]
    return b"".join(lines) + b"\r\n"


# --- ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2) ---------------------------------------------------------


def _addresses(value: str | None) -> list[list[str | None]] | None:
    if not value:
        return None
    out: list[list[str | None]] = []
    for name, addr in email.utils.getaddresses([value]):
        if not addr and not name:
            continue
        mailbox, at, host = addr.rpartition("@")
        if not at:
            mailbox, host = addr, ""
        out.append([name or None, None, mailbox or None, host or None])
    return out or None


def envelope(entity: Entity) -> list[Any]:
    from_ = _addresses(entity.get("from"))
    sender = _addresses(entity.get("sender")) or from_
    reply_to = _addresses(entity.get("reply-to")) or from_
    return [
        entity.get("date"),
        entity.get("subject"),
        from_,
        sender,
        reply_to,
        _addresses(entity.get("to")),
        _addresses(entity.get("cc")),
        _addresses(entity.get("bcc")),
        entity.get("in-reply-to"),
        entity.get("message-id"),
    ]


def _params(entity: Entity, header: str) -> list[str] | None:
    try:
        params = entity.fields.get_params(header=header)
    except Exception:  # noqa: BLE001
        return None
    if not params:
        return None
    out: list[str] = []
    for key, value in params[1:]:
        v = email.utils.collapse_rfc2231_value(value) if isinstance(value, tuple) else value
        out += [clean(key).lower(), clean(str(v))]
    return out or None


def _disposition(entity: Entity) -> list[Any] | None:
    value = entity.get("content-disposition")
    if not value:
        return None
    return [value.split(";", 1)[0].strip().lower(), _params(entity, "content-disposition")]


def _language(entity: Entity) -> list[str] | None:
    value = entity.get("content-language")
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()] or None


def body_structure(entity: Entity, *, extended: bool) -> list[Any]:
    """BODYSTRUCTURE (``extended``) or BODY of an entity, as nested lists of str/int/None."""
    if entity.is_multipart:
        out: list[Any] = [body_structure(ch, extended=extended) for ch in entity.children]
        out.append(entity.subtype)
        if extended:
            out += [_params(entity, "content-type"), _disposition(entity), _language(entity)]
            out.append(entity.get("content-location"))
        return out
    cte = (entity.get("content-transfer-encoding") or "").split()
    encoding = cte[0] if cte else "7bit"
    out = [
        entity.maintype,
        entity.subtype,
        _params(entity, "content-type"),
        entity.get("content-id"),
        entity.get("content-description"),
        encoding,
        len(entity.body),
    ]
    if entity.message is not None:
        out += [
            envelope(entity.message),
            body_structure(entity.message, extended=extended),
            entity.body.count(b"\n"),
        ]
    elif entity.maintype == "text":
        out.append(entity.body.count(b"\n"))
    if extended:
        out += [entity.get("content-md5"), _disposition(entity), _language(entity), entity.get("content-location")]
    return out


# --- text for SEARCH ------------------------------------------------------------------------------------------


def decode_header_value(value: str) -> str:
    """RFC 2047 encoded words decoded, folded lines joined."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:  # noqa: BLE001 - malformed encoded words: keep the text as written
        return value


def _decoded_body(entity: Entity) -> str:
    cte = (entity.get("content-transfer-encoding") or "").lower()
    data = entity.body
    try:
        if cte == "base64":
            data = binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/=]", b"", data) + b"==")
        elif cte == "quoted-printable":
            data = quopri.decodestring(data)
    except (binascii.Error, ValueError):
        data = entity.body
    charset = entity.fields.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def search_texts(entity: Entity, *, depth: int = 0) -> list[str]:
    """The decoded text/* parts of a message (attachments of other types are not searched)."""
    if depth > MAX_DEPTH:
        return []
    if entity.is_multipart:
        out: list[str] = []
        for ch in entity.children:
            out += search_texts(ch, depth=depth + 1)
        return out
    if entity.message is not None:
        return [decoded_headers(entity.message), *search_texts(entity.message, depth=depth + 1)]
    if entity.maintype == "text":
        return [_decoded_body(entity)]
    return []


def decoded_headers(entity: Entity) -> str:
    return "\n".join(
        f"{name}: {decode_header_value(_unfold(clean(str(value))))}" for name, value in entity.fields.items()
    )


def header_values(entity: Entity, name: str) -> list[str]:
    """Every value of header ``name``, decoded."""
    return [decode_header_value(_unfold(clean(str(v)))) for v in entity.fields.get_all(name, [])]


# --- derive ------------------------------------------------------------------------------------------------


def _sent_date(entity: Entity) -> str | None:
    value = entity.get("date")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return when.date().isoformat() if when else None


def derive(raw: bytes) -> dict[str, Any]:
    """The summary sealed with a message: header fields, ENVELOPE, BODY, BODYSTRUCTURE, decoded search fields."""
    try:
        entity = parse(raw)
        headers = {n: v for n in _SUMMARY_HEADERS if (v := entity.get(n)) is not None}
        search = {n: " ".join(header_values(entity, n)) for n in ("from", "to", "cc", "bcc", "subject")}
        return {
            "v": META_VERSION,
            "headers": headers,
            "envelope": envelope(entity),
            "body": body_structure(entity, extended=False),
            "bodystructure": body_structure(entity, extended=True),
            "search": search,
            "sent": _sent_date(entity),
        }
    except Exception:  # noqa: BLE001 - a message we cannot analyse is still delivered and shown
        lines = raw.count(b"\n")
        plain: list[Any] = ["text", "plain", ["charset", "us-ascii"], None, None, "7bit", len(raw), lines]
        return {
            "v": META_VERSION,
            "headers": {},
            "envelope": [None] * 10,
            "body": plain,
            "bodystructure": [*plain, None, None, None, None],
            "search": {},
            "sent": None,
        }


def is_current(meta: dict[str, Any] | None) -> bool:
    return bool(meta) and meta.get("v") == META_VERSION  # type: ignore[union-attr]
