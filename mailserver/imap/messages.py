"""FETCH items rendered from a message, and SEARCH keys evaluated against one (RFC 3501 §6.4.4, §6.4.5, §7.4.2).

BINARY[part] (RFC 3516) is the part without its content transfer encoding: a literal8 ``~{n}`` when it
holds a NUL; an encoding that cannot be undone fails the FETCH with NO [UNKNOWN-CTE].

Pure functions over ``MessageData``: the session decides what to load (``needs``)
and the store loads it; nothing here touches the database. ENVELOPE and
BODYSTRUCTURE come from the typed ``ImapMeta`` sealed at delivery; sections and
body searches from the stored message taken apart once (``MessageData.parsed``).

SEARCH FROM/TO/CC/BCC/SUBJECT match a case-insensitive substring of the whole
field as a person reads it: display name and address, encoded words decoded
(RFC 3501 §6.4.4, RFC 9051 §6.4.4).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mailserver.errors import UnknownTransferEncoding
from mailserver.imap import objectid
from mailserver.imap.mailstore import MessageData
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.responses import Atom, Literal, Literal8, Value
from mailserver.imap.protocol.selected import flag_atoms
from mailserver.message.preview import preview

# --- FETCH ---------------------------------------------------------------------------------------------------

_META_ATTS = frozenset({"ENVELOPE", "BODY", "BODYSTRUCTURE"})
#: PREVIEW (RFC 8970) and THREADID (RFC 8474, from the header) read the message but never mark it \Seen
_BODY_ATTS = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "PREVIEW", "THREADID"})
_UNSEEN_ATTS = frozenset({"RFC822.HEADER", "PREVIEW", "THREADID"})


@dataclass(frozen=True, slots=True)
class Needs:
    meta: bool
    body: bool
    sets_seen: bool  # a non-PEEK body item: \Seen is set (RFC 3501 §6.4.5)


def fetch_needs(items: tuple[c.FetchItem, ...]) -> Needs:
    meta = body = seen = False
    for item in items:
        if isinstance(item, c.FetchBody | c.FetchBinary):
            body = True
            seen = seen or not (item.peek or isinstance(item, c.FetchBinary) and item.size)
        elif item.name in _META_ATTS:
            meta = True
        elif item.name in _BODY_ATTS:
            body = True
            seen = seen or item.name not in _UNSEEN_ATTS
    return Needs(meta, body, seen)


def render_fetch(
    items: tuple[c.FetchItem, ...], msg: MessageData, flags: frozenset[str], recent: bool, seen_changed: bool
) -> tuple[tuple[str, Value], ...]:
    out: list[tuple[str, Value]] = []
    has_flags = False
    for item in items:
        if isinstance(item, c.FetchBody):
            data = _section(msg, item.section)
            if item.partial is not None:
                offset, length = item.partial
                data = data[offset : offset + length]
            out.append((item.response_name(), Literal(data)))
            continue
        if isinstance(item, c.FetchBinary):
            out.append((item.response_name(), _binary(msg, item)))
            continue
        name = item.name
        value: Value
        if name == "UID":
            value = msg.uid
        elif name == "EMAILID":  # RFC 8474 §5.1
            value = (Atom(objectid.email_id(msg.blob_id)),) if msg.blob_id else None
        elif name == "THREADID":  # RFC 8474 §5.2
            value = (
                (Atom(objectid.thread_id(msg.parsed, msg.blob_id)),) if msg.raw is not None and msg.blob_id else None
            )
        elif name == "PREVIEW":  # RFC 8970 §3.1
            value = preview(msg.parsed) if msg.raw is not None else None
        elif name == "SAVEDATE":  # RFC 8514 §4.1
            value = c.format_datetime(msg.saved) if msg.saved is not None else None
        elif name == "MODSEQ":  # RFC 7162 §3.1.4.1
            value = (max(1, msg.modseq),)
        elif name == "FLAGS":
            has_flags = True
            value = flag_atoms(flags, recent)
        elif name == "INTERNALDATE":
            value = c.format_datetime(msg.internal_date)
        elif name == "RFC822.SIZE":
            value = msg.size
        elif name == "ENVELOPE":
            value = msg.meta.envelope.value() if msg.meta else None
        elif name == "BODY":
            value = msg.meta.body(extended=False) if msg.meta else None
        elif name == "BODYSTRUCTURE":
            value = msg.meta.body(extended=True) if msg.meta else None
        elif name == "RFC822":
            value = Literal(msg.raw or b"")
        elif name == "RFC822.HEADER":
            value = Literal(msg.parsed.section((), "HEADER"))
        else:  # RFC822.TEXT
            value = Literal(msg.parsed.section((), "TEXT"))
        out.append((name, value))
    if seen_changed and not has_flags:  # RFC 3501 §6.4.5: the implied \Seen change is reported
        out.append(("FLAGS", flag_atoms(flags, recent)))
    return tuple(out)


def _section(msg: MessageData, section: c.Section) -> bytes:
    if not section.part and section.text is None:
        return msg.raw or b""
    return msg.parsed.section(section.part, section.text, section.fields)


def _binary(msg: MessageData, item: c.FetchBinary) -> Value:
    """BINARY[part]: ``~{n}`` if the decoded octets hold a NUL, else a literal; BINARY.SIZE: their number."""
    data = msg.parsed.binary_section(item.part) if item.part else (msg.raw or b"")
    if data is None:
        raise UnknownTransferEncoding(
            f"Part {'.'.join(map(str, item.part))} has a content transfer encoding this server cannot decode; "
            "fetch it with BODY[] instead"
        )
    if item.size:
        return len(data)
    if item.partial is not None:
        offset, length = item.partial
        data = data[offset : offset + length]
    return Literal8(data) if b"\0" in data else Literal(data)


# --- SEARCH --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchNeeds:
    rows: bool  # size, internal date
    meta: bool  # decoded From/To/Cc/Bcc/Subject, Date
    body: bool  # other headers, BODY, TEXT


def search_needs(key: c.SearchKey) -> SearchNeeds:
    rows = meta = body = False

    def walk(k: c.SearchKey) -> None:
        nonlocal rows, meta, body
        if isinstance(k, c.SearchNot):
            walk(k.key)
        elif isinstance(k, c.SearchOr):
            walk(k.left)
            walk(k.right)
        elif isinstance(k, c.SearchAnd):
            for sub in k.keys:
                walk(sub)
        elif isinstance(k, c.SearchSize | c.SearchWithin | c.SearchObjectId | c.SearchSaveDate):
            rows = True
            body = body or (isinstance(k, c.SearchObjectId) and k.kind == "THREADID")
        elif isinstance(k, c.SearchDate):
            rows = True
            meta = meta or k.sent
        elif isinstance(k, c.SearchHeader):
            rows = True
            if k.field in c.SHORT_HEADER_KEYS:
                meta = True
            else:
                body = True
        elif isinstance(k, c.SearchText):
            rows = body = True

    walk(key)
    return SearchNeeds(rows or meta or body, meta, body)


def uses_modseq(key: c.SearchKey) -> bool:
    """A MODSEQ key anywhere in the program (RFC 7162 §3.1.5: the answer then carries MODSEQ)."""
    if isinstance(key, c.SearchModseq):
        return True
    if isinstance(key, c.SearchNot):
        return uses_modseq(key.key)
    if isinstance(key, c.SearchOr):
        return uses_modseq(key.left) or uses_modseq(key.right)
    if isinstance(key, c.SearchAnd):
        return any(uses_modseq(k) for k in key.keys)
    return False


@dataclass(slots=True)
class Candidate:
    seq: int
    uid: int
    flags: frozenset[str]
    recent: bool
    data: MessageData | None = None
    modseq: int = 0


def _fold(s: str) -> str:
    return s.casefold()


def _date_matches(op: str, day: dt.date, wanted: dt.date) -> bool:
    if op == "BEFORE":
        return day < wanted
    if op == "ON":
        return day == wanted
    return day >= wanted  # SINCE


def matches(key: c.SearchKey, m: Candidate, *, max_seq: int, max_uid: int) -> bool:  # noqa: C901 - one case a key
    if isinstance(key, c.SearchAll):
        return True
    if isinstance(key, c.SearchAnd):
        return all(matches(k, m, max_seq=max_seq, max_uid=max_uid) for k in key.keys)
    if isinstance(key, c.SearchOr):
        return matches(key.left, m, max_seq=max_seq, max_uid=max_uid) or matches(
            key.right, m, max_seq=max_seq, max_uid=max_uid
        )
    if isinstance(key, c.SearchNot):
        return not matches(key.key, m, max_seq=max_seq, max_uid=max_uid)
    if isinstance(key, c.SearchFlag):
        has = m.recent if key.flag == "\\Recent" else key.flag in m.flags
        return has == key.present
    if isinstance(key, c.SearchNew):
        return m.recent and "\\Seen" not in m.flags
    if isinstance(key, c.SearchModseq):
        return m.modseq >= key.modseq
    if isinstance(key, c.SearchSaveDateSupported):  # RFC 8514: every mailbox here keeps save dates
        return True
    if isinstance(key, c.SearchSeq):
        if key.uid:
            return key.seqset.contains(m.uid, max_uid)
        return key.seqset.contains(m.seq, max_seq)
    d = m.data
    if d is None:
        return False
    if isinstance(key, c.SearchSize):
        return d.size > key.size if key.larger else d.size < key.size
    if isinstance(key, c.SearchSaveDate):  # RFC 8514 §4.2, a day in UTC as BEFORE/ON/SINCE; unknown: internal date
        return _date_matches(key.op, (d.saved or d.internal_date).astimezone(dt.UTC).date(), key.date)
    if isinstance(key, c.SearchObjectId):  # RFC 8474 §6
        if d.blob_id is None:
            return False
        if key.kind == "EMAILID":
            return objectid.email_id(d.blob_id) == key.value
        return d.raw is not None and objectid.thread_id(d.parsed, d.blob_id) == key.value
    if isinstance(key, c.SearchWithin):  # RFC 5032: OLDER is BEFORE now - n to the second, YOUNGER its opposite
        if key.now is None:  # pragma: no cover - the session anchors every WITHIN key (within.anchored)
            raise ValueError("WITHIN key not anchored to a clock")
        older = d.internal_date < key.now - dt.timedelta(seconds=key.seconds)
        return older == key.older
    if isinstance(key, c.SearchDate):
        day = d.internal_date.date()
        if key.sent and d.meta is not None and d.meta.sent is not None:
            day = d.meta.sent
        return _date_matches(key.op, day, key.date)
    if isinstance(key, c.SearchHeader):
        needle = _fold(key.value)
        if key.field in c.SHORT_HEADER_KEYS and d.meta is not None:
            if not d.meta.has(key.field):
                return False
            return needle in _fold(d.meta.search[key.field])
        if d.raw is None:
            return False
        values = d.parsed.decoded(key.field)
        if not values:
            return False
        return any(needle in _fold(v) for v in values)
    if isinstance(key, c.SearchText):
        if d.raw is None:
            return False
        needle = _fold(key.value)
        texts = d.parsed.search_texts()
        if key.where == "TEXT":
            texts = [d.parsed.decoded_headers(), *texts]
        return any(needle in _fold(t) for t in texts)
    raise TypeError(type(key).__name__)  # pragma: no cover - every key is handled above
