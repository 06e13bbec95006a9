"""IMAP commands as typed values: what ``ImapReceiver.next()`` returns, and what ``to_wire`` writes back.

Invariants:
- Every command is a frozen, slotted dataclass that validates on construction
  (a tag is 1*ASTRING-CHAR without "+", a sequence set is never empty...);
  ``ValueError`` from a constructor is turned into a BAD by the parser.
- Mailbox names are Unicode here; the wire form is modified UTF-7 (RFC 3501 §5.1.3).
- ``to_wire(command)`` is the client's side of the grammar: ``parse(to_wire(c)) == c``
  (tested with Hypothesis), literals written as LITERAL+ ``{n+}``.

See Also: RFC 3501 §6 (commands), §9 (formal syntax); RFC 9051 where clients expect it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

from mailserver.imap.protocol import mutf7

#: RFC 3501 §2.3.2 system flags, canonical spelling (flags are case-insensitive)
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"
_SYSTEM_BY_UPPER = {f.upper(): f for f in (*SYSTEM_FLAGS, RECENT)}

_ATOM_SPECIALS = frozenset(b'(){ %*"\\]') | frozenset(range(0x20)) | {0x7F}
ATOM_CHARS = frozenset(range(0x21, 0x7F)) - _ATOM_SPECIALS
ASTRING_CHARS = ATOM_CHARS | {ord("]")}
TAG_CHARS = ASTRING_CHARS - {ord("+")}


def is_atom(s: str) -> bool:
    return bool(s) and all(ord(c) in ATOM_CHARS for c in s)


def canonical_flag(flag: str) -> str:
    """System flags in their canonical spelling; keywords as given. Raises ValueError for a malformed flag."""
    if flag.startswith("\\"):
        name = flag[1:]
        if not is_atom(name):
            raise ValueError(f"malformed flag {flag!r}")
        return _SYSTEM_BY_UPPER.get(flag.upper(), flag)
    if not is_atom(flag):
        raise ValueError(f"malformed flag {flag!r}")
    return flag


# --- sequence sets ---------------------------------------------------------------------------------------

STAR = 0  # "*" in a sequence set: the largest number in use


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """RFC 3501 sequence-set: ranges of message numbers or UIDs; ``STAR`` (0) stands for ``*``."""

    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        if not self.ranges:
            raise ValueError("empty sequence set")
        for lo, hi in self.ranges:
            for n in (lo, hi):
                if not 0 <= n < 2**32:
                    raise ValueError(f"sequence number {n} out of range")

    _RE: ClassVar[re.Pattern[str]] = re.compile(r"(?:[1-9][0-9]*|\*)(?::(?:[1-9][0-9]*|\*))?\Z")

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        ranges = []
        for item in text.split(","):
            if not cls._RE.match(item):
                raise ValueError(f"malformed sequence set {text!r}")
            lo, _, hi = item.partition(":")
            a = STAR if lo == "*" else int(lo)
            b = a if not hi else (STAR if hi == "*" else int(hi))
            ranges.append((a, b))
        return cls(tuple(ranges))

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """A compact set of the given (positive) numbers: 1,2,3,7 -> 1:3,7."""
        ranges: list[tuple[int, int]] = []
        for n in sorted(set(numbers)):
            if ranges and ranges[-1][1] + 1 == n:
                ranges[-1] = (ranges[-1][0], n)
            else:
                ranges.append((n, n))
        return cls(tuple(ranges))

    def __str__(self) -> str:
        def one(n: int) -> str:
            return "*" if n == STAR else str(n)

        return ",".join(one(lo) if lo == hi else f"{one(lo)}:{one(hi)}" for lo, hi in self.ranges)

    def bounds(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, each as (low, high)."""
        out = []
        for lo, hi in self.ranges:
            a = largest if lo == STAR else lo
            b = largest if hi == STAR else hi
            out.append((min(a, b), max(a, b)))
        return out

    def contains(self, n: int, largest: int) -> bool:
        return any(lo <= n <= hi for lo, hi in self.bounds(largest))

    def select(self, numbers: Iterable[int], largest: int) -> Iterator[int]:
        """Those of ``numbers`` in this set."""
        b = self.bounds(largest)
        return (n for n in numbers if any(lo <= n <= hi for lo, hi in b))


@dataclass(frozen=True, slots=True)
class SavedResult(SequenceSet):
    """``$`` (RFC 5182 SEARCHRES): the messages the last ``SEARCH RETURN (SAVE)`` kept.

    As parsed it holds no numbers (``SAVED``); before a handler runs the session puts the saved
    messages in (``searchres.substitute``), UIDs or sequence numbers as the command counts, maybe none."""

    def __post_init__(self) -> None:
        for lo, hi in self.ranges:
            if not 0 < lo <= hi < 2**32:
                raise ValueError("a saved result holds message numbers")

    def __str__(self) -> str:
        return "$"


SAVED = SavedResult(())


# --- search keys (RFC 3501 §6.4.4) -------------------------------------------------------------------------


class SearchKey:
    """A node of a SEARCH program."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SearchAll(SearchKey):
    pass


@dataclass(frozen=True, slots=True)
class SearchFlag(SearchKey):
    """ANSWERED / UNANSWERED ... KEYWORD x / UNKEYWORD x; RECENT and OLD use ``\\Recent``."""

    flag: str
    present: bool

    def __post_init__(self) -> None:
        if canonical_flag(self.flag) != self.flag:
            raise ValueError(f"flag {self.flag!r} not canonical")


@dataclass(frozen=True, slots=True)
class SearchNew(SearchKey):
    """NEW: recent and not seen."""


@dataclass(frozen=True, slots=True)
class SearchHeader(SearchKey):
    """FROM, TO, CC, BCC, SUBJECT, HEADER name value: case-insensitive substring of the decoded field."""

    field: str  # lower case
    value: str

    def __post_init__(self) -> None:
        if not self.field or self.field != self.field.lower() or not is_atom(self.field) or ":" in self.field:
            raise ValueError(f"malformed header field name {self.field!r}")


@dataclass(frozen=True, slots=True)
class SearchText(SearchKey):
    """BODY (the decoded text parts) or TEXT (headers and body)."""

    where: str  # "BODY" | "TEXT"
    value: str

    def __post_init__(self) -> None:
        if self.where not in ("BODY", "TEXT"):
            raise ValueError(self.where)


@dataclass(frozen=True, slots=True)
class SearchDate(SearchKey):
    """BEFORE/ON/SINCE (internal date) and SENTBEFORE/SENTON/SENTSINCE (Date: header), day granularity."""

    sent: bool
    op: str  # "BEFORE" | "ON" | "SINCE"
    date: dt.date

    def __post_init__(self) -> None:
        if self.op not in ("BEFORE", "ON", "SINCE"):
            raise ValueError(self.op)


@dataclass(frozen=True, slots=True)
class SearchSize(SearchKey):
    larger: bool
    size: int

    def __post_init__(self) -> None:
        if not 0 <= self.size < 2**63:
            raise ValueError("size out of range")


@dataclass(frozen=True, slots=True)
class SearchSeq(SearchKey):
    """A bare sequence set, or UID sequence-set."""

    seqset: SequenceSet
    uid: bool


@dataclass(frozen=True, slots=True)
class SearchModseq(SearchKey):
    """MODSEQ [entry-name entry-type] n (RFC 7162 §3.1.5): messages whose mod-sequence is at least ``modseq``."""

    modseq: int

    def __post_init__(self) -> None:
        if not 0 <= self.modseq < 2**63:
            raise ValueError("mod-sequence out of range")


@dataclass(frozen=True, slots=True)
class SearchWithin(SearchKey):
    """OLDER n / YOUNGER n (RFC 5032 WITHIN): the internal date more / at most n seconds before now.

    ``now`` is None as parsed; the session sets it from its clock before matching (``within.anchored``)."""

    older: bool
    seconds: int
    now: dt.datetime | None = None

    def __post_init__(self) -> None:
        if not 0 < self.seconds < 2**32:
            raise ValueError("an interval is a number of seconds above 0")


@dataclass(frozen=True, slots=True)
class SearchObjectId(SearchKey):
    """EMAILID id / THREADID id (RFC 8474 §6)."""

    kind: str  # "EMAILID" | "THREADID"
    value: str

    def __post_init__(self) -> None:
        if self.kind not in ("EMAILID", "THREADID"):
            raise ValueError(self.kind)
        if not 0 < len(self.value) <= 255 or not all(
            ch.isascii() and (ch.isalnum() or ch in "-_") for ch in self.value
        ):
            raise ValueError("an object id is 1 to 255 letters, digits, - and _")


@dataclass(frozen=True, slots=True)
class SearchSaveDate(SearchKey):
    """SAVEDBEFORE / SAVEDON / SAVEDSINCE date (RFC 8514 §4.2): the day the message was saved in its mailbox."""

    op: str  # "BEFORE" | "ON" | "SINCE"
    date: dt.date

    def __post_init__(self) -> None:
        if self.op not in ("BEFORE", "ON", "SINCE"):
            raise ValueError(self.op)


@dataclass(frozen=True, slots=True)
class SearchSaveDateSupported(SearchKey):
    """SAVEDATESUPPORTED (RFC 8514 §4.2): every message, when the mailbox keeps save dates (all do here)."""


@dataclass(frozen=True, slots=True)
class SearchNot(SearchKey):
    key: SearchKey


@dataclass(frozen=True, slots=True)
class SearchOr(SearchKey):
    left: SearchKey
    right: SearchKey


@dataclass(frozen=True, slots=True)
class SearchAnd(SearchKey):
    keys: tuple[SearchKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("empty search program")


# --- fetch items (RFC 3501 §6.4.5) -------------------------------------------------------------------------

SIMPLE_FETCH_ATTS = frozenset(
    {"ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE", "RFC822.TEXT", "BODY"}
    | {"BODYSTRUCTURE", "UID", "MODSEQ"}
    | {"EMAILID", "THREADID"}  # RFC 8474 OBJECTID
    | {"SAVEDATE"}  # RFC 8514
    | {"PREVIEW"}  # RFC 8970
)
SECTION_TEXTS = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"})


@dataclass(frozen=True, slots=True)
class FetchAttr:
    name: str

    def __post_init__(self) -> None:
        if self.name not in SIMPLE_FETCH_ATTS:
            raise ValueError(f"unknown fetch attribute {self.name}")


@dataclass(frozen=True, slots=True)
class Section:
    """``[1.2.HEADER.FIELDS (From To)]``: a part path, then what of it."""

    part: tuple[int, ...] = ()
    text: str | None = None  # HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not 0 < p < 2**32 for p in self.part):
            raise ValueError("section part numbers start at 1")
        if self.text is not None and self.text not in SECTION_TEXTS:
            raise ValueError(f"unknown section {self.text}")
        if self.text == "MIME" and not self.part:
            raise ValueError("MIME needs a part number")
        if (self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT")) != bool(self.fields):
            raise ValueError("HEADER.FIELDS needs a list of field names")
        if any(not f or not is_atom(f) or ":" in f for f in self.fields):
            raise ValueError("malformed header field name")

    def __str__(self) -> str:
        spec = ".".join(map(str, self.part))
        if self.text:
            spec = f"{spec}.{self.text}" if spec else self.text
        if self.fields:
            spec += " (" + " ".join(self.fields) + ")"
        return f"[{spec}]"


@dataclass(frozen=True, slots=True)
class FetchBody:
    """BODY[section]<partial> and BODY.PEEK[...]; ``partial`` is (offset, length)."""

    section: Section
    peek: bool = False
    partial: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.partial is not None and (self.partial[0] < 0 or self.partial[1] <= 0):
            raise ValueError("malformed partial")

    def response_name(self) -> str:
        """How the FETCH response names it: BODY[section]<origin> (no PEEK, no length)."""
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BODY{self.section}{origin}"


@dataclass(frozen=True, slots=True)
class FetchBinary:
    """BINARY[part]<partial>, BINARY.PEEK[...] and BINARY.SIZE[part] (RFC 3516 §4.2): a part without its
    content transfer encoding, or the size of that."""

    part: tuple[int, ...] = ()
    peek: bool = False
    partial: tuple[int, int] | None = None
    size: bool = False

    def __post_init__(self) -> None:
        if any(not 0 < p < 2**32 for p in self.part):
            raise ValueError("section part numbers start at 1")
        if self.partial is not None and (self.size or self.partial[0] < 0 or self.partial[1] <= 0):
            raise ValueError("malformed partial")
        if self.size and self.peek:
            raise ValueError("BINARY.SIZE has no PEEK form")

    @property
    def section(self) -> str:
        return "[" + ".".join(map(str, self.part)) + "]"

    def response_name(self) -> str:
        """BINARY[part]<origin>, BINARY.SIZE[part] (no PEEK, no length)."""
        if self.size:
            return f"BINARY.SIZE{self.section}"
        origin = f"<{self.partial[0]}>" if self.partial else ""
        return f"BINARY{self.section}{origin}"


FetchItem = FetchAttr | FetchBody | FetchBinary


# --- commands -----------------------------------------------------------------------------------------------


def _check_tag(tag: str) -> None:
    if not tag or any(ord(c) not in TAG_CHARS for c in tag):
        raise ValueError(f"malformed tag {tag!r}")


def _check_mailbox(name: str) -> None:
    if "\r" in name or "\n" in name or "\0" in name:
        raise ValueError("a mailbox name cannot hold CR, LF or NUL")


@dataclass(frozen=True, slots=True)
class Command:
    tag: str
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        _check_tag(self.tag)


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"


@dataclass(frozen=True, slots=True)
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    user: str = ""
    password: str = ""

    def __repr__(self) -> str:  # never show the password
        return f"Login(tag={self.tag!r}, user={self.user!r}, password='***')"


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """AUTHENTICATE mechanism [initial-response] (RFC 4959 SASL-IR; "=" is an empty response)."""

    name: ClassVar[str] = "AUTHENTICATE"
    mechanism: str = ""
    initial: str | None = None  # base64 text as sent, "=" for empty

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not is_atom(self.mechanism):
            raise ValueError("malformed SASL mechanism")
        if self.initial is not None and not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", self.initial):
            raise ValueError("the initial response is not base64")

    def __repr__(self) -> str:
        return f"Authenticate(tag={self.tag!r}, mechanism={self.mechanism!r}, initial='***')"


@dataclass(frozen=True, slots=True)
class Enable(Command):
    name: ClassVar[str] = "ENABLE"
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.capabilities or not all(is_atom(c) for c in self.capabilities):
            raise ValueError("ENABLE needs capability names")


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: the client's identification, field/value pairs, or None for NIL."""

    name: ClassVar[str] = "ID"
    params: tuple[tuple[str, str | None], ...] | None = None


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    name: ClassVar[str] = "NAMESPACE"


@dataclass(frozen=True, slots=True)
class _MailboxCommand(Command):
    mailbox: str = ""

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _check_mailbox(self.mailbox)


@dataclass(frozen=True, slots=True)
class Qresync:
    """SELECT's (QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]])) parameter (RFC 7162 §3.2.5)."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    seq_match: tuple[SequenceSet, SequenceSet] | None = None

    def __post_init__(self) -> None:
        if not 0 < self.uidvalidity < 2**32 or not 0 < self.modseq < 2**63:
            raise ValueError("QRESYNC needs a UIDVALIDITY and a mod-sequence above 0")
        if self.seq_match is not None and self.known_uids is None:
            raise ValueError("QRESYNC sequence match data needs known UIDs")


@dataclass(frozen=True, slots=True)
class _SelectCommand(_MailboxCommand):
    """SELECT / EXAMINE mailbox [(CONDSTORE) | (QRESYNC (...))] (RFC 7162)."""

    condstore: bool = False
    qresync: Qresync | None = None


@dataclass(frozen=True, slots=True)
class Select(_SelectCommand):
    name: ClassVar[str] = "SELECT"


@dataclass(frozen=True, slots=True)
class Examine(_SelectCommand):
    name: ClassVar[str] = "EXAMINE"


@dataclass(frozen=True, slots=True)
class Create(_MailboxCommand):
    """CREATE name [(USE (\\Archive ...))] (RFC 6154 §3 CREATE-SPECIAL-USE)."""

    name: ClassVar[str] = "CREATE"
    special_use: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _MailboxCommand.__post_init__(self)
        if not all(u.startswith("\\") and is_atom(u[1:]) for u in self.special_use):
            raise ValueError("a special use is a \\ and an atom, e.g. \\Archive")


@dataclass(frozen=True, slots=True)
class Delete(_MailboxCommand):
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Subscribe(_MailboxCommand):
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(_MailboxCommand):
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    old: str = ""
    new: str = ""

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _check_mailbox(self.old)
        _check_mailbox(self.new)


STATUS_ITEMS = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "HIGHESTMODSEQ", "APPENDLIMIT", "DELETED"}
    | {"MAILBOXID"}  # RFC 8474 §4.2
)
LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST [(selection)] reference pattern(s) [RETURN (options)] (RFC 5258 syntax, RFC 6154 SPECIAL-USE)."""

    name: ClassVar[str] = "LIST"
    reference: str = ""
    patterns: tuple[str, ...] = ("",)
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()
    status_items: tuple[str, ...] = ()  # RETURN (STATUS (items)), RFC 5819

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.patterns:
            raise ValueError("LIST needs a pattern")
        if ("STATUS" in self.return_options) != bool(self.status_items) or not set(self.status_items) <= STATUS_ITEMS:
            raise ValueError("LIST RETURN (STATUS (items)) needs items among " + " ".join(sorted(STATUS_ITEMS)))
        if self.select_options == ("RECURSIVEMATCH",) or (
            "RECURSIVEMATCH" in self.select_options and len(set(self.select_options) - {"REMOTE"}) < 2
        ):
            raise ValueError("RECURSIVEMATCH needs another selection option (RFC 5258 §3)")
        for p in (self.reference, *self.patterns):
            _check_mailbox(p)
        if not set(self.select_options) <= LIST_SELECT_OPTIONS:
            raise ValueError("unknown LIST selection option")
        if not set(self.return_options) <= LIST_RETURN_OPTIONS:
            raise ValueError("unknown LIST return option")


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    name: ClassVar[str] = "LSUB"
    reference: str = ""
    pattern: str = ""

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        _check_mailbox(self.reference)
        _check_mailbox(self.pattern)


@dataclass(frozen=True, slots=True)
class Status(_MailboxCommand):
    name: ClassVar[str] = "STATUS"
    items: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _MailboxCommand.__post_init__(self)
        if not self.items or not set(self.items) <= STATUS_ITEMS:
            raise ValueError("STATUS needs items among " + " ".join(sorted(STATUS_ITEMS)))


def _check_append(flags: tuple[str, ...], date: dt.datetime | None) -> None:
    for f in flags:
        if canonical_flag(f) != f:
            raise ValueError(f"flag {f!r} not canonical")
    if date is not None and date.tzinfo is None:
        raise ValueError("an APPEND date has a time zone")


@dataclass(frozen=True, slots=True)
class CatPart:
    """One part of CATENATE (RFC 4469 §5): TEXT octets, or the IMAP URL of a part of a message here."""

    text: bytes | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.url is None):
            raise ValueError("a CATENATE part is TEXT or URL")

    def __repr__(self) -> str:  # never the text
        return f"CatPart(url={self.url!r})" if self.url is not None else f"CatPart(size={len(self.text or b'')})"


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message of an APPEND: its flags, date and octets (RFC 3502 MULTIAPPEND: an APPEND holds several),
    or the parts it is made of (RFC 4469 CATENATE; ``message`` empty)."""

    flags: tuple[str, ...] = ()
    date: dt.datetime | None = None
    message: bytes = b""
    catenate: tuple[CatPart, ...] = ()

    def __post_init__(self) -> None:
        _check_append(self.flags, self.date)

    def __repr__(self) -> str:  # never the message
        return f"AppendItem(flags={self.flags!r}, size={len(self.message)})"


@dataclass(frozen=True, slots=True)
class Append(_MailboxCommand):
    """APPEND of one message (its fields here) and, with MULTIAPPEND (RFC 3502), ``more`` after it."""

    name: ClassVar[str] = "APPEND"
    flags: tuple[str, ...] = ()
    date: dt.datetime | None = None
    message: bytes = b""
    more: tuple[AppendItem, ...] = ()
    catenate: tuple[CatPart, ...] = ()  # the first message's parts (RFC 4469), ``message`` then empty

    def __post_init__(self) -> None:
        _MailboxCommand.__post_init__(self)
        _check_append(self.flags, self.date)

    @property
    def items(self) -> tuple[AppendItem, ...]:
        """Every message of the command, in order."""
        return (AppendItem(self.flags, self.date, self.message, self.catenate), *self.more)

    def __repr__(self) -> str:  # never the message
        return (
            f"Append(tag={self.tag!r}, mailbox={self.mailbox!r}, flags={self.flags!r}, size={len(self.message)}, "
            f"more={len(self.more)})"
        )


@dataclass(frozen=True, slots=True)
class Check(Command):
    name: ClassVar[str] = "CHECK"


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    name: ClassVar[str] = "UNSELECT"


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE uids (RFC 4315) when ``uids`` is given."""

    name: ClassVar[str] = "EXPUNGE"
    uids: SequenceSet | None = None


#: SAVE: RFC 5182; CONTEXT, UPDATE and PARTIAL: RFC 5267 §4 (CONTEXT=SEARCH, CONTEXT=SORT)
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "COUNT", "ALL", "SAVE", "CONTEXT", "UPDATE", "PARTIAL"})


def check_returns(what: str, returns: tuple[str, ...] | None, partial: tuple[int, int] | None) -> None:
    """RETURN options of SEARCH and SORT: known ones; PARTIAL with its range (``partial``), never with ALL."""
    if returns is None:
        if partial is not None:
            raise ValueError(f"{what} PARTIAL needs RETURN (PARTIAL low:high)")
        return
    if not set(returns) <= SEARCH_RETURN_OPTIONS:
        raise ValueError(f"{what} RETURN options are " + ", ".join(sorted(SEARCH_RETURN_OPTIONS)))
    if ("PARTIAL" in returns) != (partial is not None):
        raise ValueError(f"{what} RETURN (PARTIAL) goes with its range low:high (RFC 5267 §4.4)")
    if partial is not None:
        low, high = partial
        if not 1 <= low <= high < 2**32:
            raise ValueError(f"{what} PARTIAL {low}:{high} is not a range of positions from 1 upwards")
        if "ALL" in returns:
            raise ValueError(f"{what} RETURN cannot ask for both PARTIAL and ALL (RFC 5267 §4.4)")


@dataclass(frozen=True, slots=True)
class Search(Command):
    """[UID] SEARCH [RETURN (options)] [CHARSET x] keys; ``returns`` not None: an ESEARCH answer (RFC 4731)."""

    name: ClassVar[str] = "SEARCH"
    key: SearchKey = SearchAll()
    charset: str | None = None
    uid: bool = False
    returns: tuple[str, ...] | None = None  # () is RETURN (): as ALL
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL low:high), RFC 5267 §4.4

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        check_returns("SEARCH", self.returns, self.partial)


SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"} | {"DISPLAYFROM", "DISPLAYTO"})


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """[UID] SORT (criteria) charset keys (RFC 5256 §3); a criterion is (reverse, key)."""

    name: ClassVar[str] = "SORT"
    criteria: tuple[tuple[bool, str], ...] = ((False, "ARRIVAL"),)
    charset: str = "UTF-8"
    key: SearchKey = SearchAll()
    uid: bool = False
    returns: tuple[str, ...] | None = None  # RFC 5267 ESORT: SORT RETURN (...), answered ESEARCH
    partial: tuple[int, int] | None = None  # RETURN (PARTIAL low:high), RFC 5267 §4.4

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.criteria or not all(k in SORT_KEYS for _, k in self.criteria):
            raise ValueError("SORT criteria are among " + " ".join(sorted(SORT_KEYS)) + ", each maybe after REVERSE")
        check_returns("SORT", self.returns, self.partial)


@dataclass(frozen=True, slots=True)
class CancelUpdate(Command):
    """CANCELUPDATE "tag" ...: stop the updates of those searches (RFC 5267 §4.3.5)."""

    name: ClassVar[str] = "CANCELUPDATE"
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.tags:
            raise ValueError("CANCELUPDATE names at least one tag")


THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})


@dataclass(frozen=True, slots=True)
class Thread(Command):
    """[UID] THREAD algorithm charset keys (RFC 5256 §4)."""

    name: ClassVar[str] = "THREAD"
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    key: SearchKey = SearchAll()
    uid: bool = False

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if self.algorithm not in THREAD_ALGORITHMS:
            raise ValueError("THREAD algorithms are " + " and ".join(sorted(THREAD_ALGORITHMS)))


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    name: ClassVar[str] = "FETCH"
    seqset: SequenceSet = SequenceSet(((1, 1),))
    items: tuple[FetchItem, ...] = ()
    uid: bool = False
    changed_since: int | None = None  # RFC 7162 §3.1.4 CHANGEDSINCE
    vanished: bool = False  # RFC 7162 §3.2.6 VANISHED (UID FETCH with CHANGEDSINCE only)

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if not self.items:
            raise ValueError("FETCH needs items")
        if self.vanished and (not self.uid or self.changed_since is None):
            raise ValueError("VANISHED is a modifier of UID FETCH with CHANGEDSINCE")


@dataclass(frozen=True, slots=True)
class Store(Command):
    """STORE set [+-]FLAGS[.SILENT] (flags)."""

    name: ClassVar[str] = "STORE"
    seqset: SequenceSet = SequenceSet(((1, 1),))
    mode: str = ""  # "" replace, "+" add, "-" remove
    silent: bool = False
    flags: tuple[str, ...] = ()
    uid: bool = False
    unchanged_since: int | None = None  # RFC 7162 §3.1.3 UNCHANGEDSINCE

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if self.mode not in ("", "+", "-"):
            raise ValueError("STORE mode is FLAGS, +FLAGS or -FLAGS")
        for f in self.flags:
            if canonical_flag(f) != f:
                raise ValueError(f"flag {f!r} not canonical")


@dataclass(frozen=True, slots=True)
class Copy(_MailboxCommand):
    name: ClassVar[str] = "COPY"
    seqset: SequenceSet = SequenceSet(((1, 1),))
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Move(_MailboxCommand):
    """RFC 6851."""

    name: ClassVar[str] = "MOVE"
    seqset: SequenceSet = SequenceSet(((1, 1),))
    uid: bool = False


@dataclass(frozen=True, slots=True)
class Idle(Command):
    """RFC 2177: the client ends it with a line ``DONE``."""

    name: ClassVar[str] = "IDLE"


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    """RFC 9208 §4.1.1: the usage and limits of one quota root."""

    name: ClassVar[str] = "GETQUOTA"
    root: str = ""


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(_MailboxCommand):
    """RFC 9208 §4.1.2: the quota roots over a mailbox, and their usage and limits."""

    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """RFC 9208 §4.1.3: (resource limit) pairs for a root; refused here, the operator sets quotas."""

    name: ClassVar[str] = "SETQUOTA"
    root: str = ""
    limits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Compress(Command):
    """RFC 4978: COMPRESS DEFLATE, after which both directions are deflated."""

    name: ClassVar[str] = "COMPRESS"
    mechanism: str = "DEFLATE"


#: RFC 5465 mailbox filters: the selected mailbox's two, then the others'
NOTIFY_SELECTED = frozenset({"SELECTED", "SELECTED-DELAYED"})
NOTIFY_FILTERS = NOTIFY_SELECTED | {"INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "MAILBOXES"}
#: RFC 5465 §5 message events (upper case: event names are case-insensitive)
NOTIFY_MESSAGE_EVENTS = frozenset({"MESSAGENEW", "MESSAGEEXPUNGE", "FLAGCHANGE", "ANNOTATIONCHANGE"})
#: RFC 5465 §5 mailbox and user events: never for the selected filters (§6.1)
NOTIFY_MAILBOX_EVENTS = frozenset(
    {"MAILBOXNAME", "SUBSCRIPTIONCHANGE", "MAILBOXMETADATACHANGE", "SERVERMETADATACHANGE"}
)


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    """One RFC 5465 event-group: a mailbox filter, its events (upper case; () is NONE) and MessageNew's
    fetch-att (the selected filters only)."""

    filter: str
    mailboxes: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    fetch: tuple[FetchItem, ...] = ()

    def __post_init__(self) -> None:
        if self.filter not in NOTIFY_FILTERS:
            raise ValueError(f"unknown mailbox filter {self.filter}")
        if (self.filter in ("SUBTREE", "MAILBOXES")) != bool(self.mailboxes):
            raise ValueError(f"{self.filter} takes no mailbox names" if self.mailboxes else "mailbox names missing")
        ev = set(self.events)
        # RFC 5465 §5: MessageNew and MessageExpunge go together; FlagChange and AnnotationChange need both
        if ("MESSAGENEW" in ev) != ("MESSAGEEXPUNGE" in ev):
            raise ValueError("MessageNew and MessageExpunge must be asked for together")
        if ev & {"FLAGCHANGE", "ANNOTATIONCHANGE"} and "MESSAGENEW" not in ev:
            raise ValueError("FlagChange needs MessageNew and MessageExpunge")
        if self.filter in NOTIFY_SELECTED and ev & NOTIFY_MAILBOX_EVENTS:
            raise ValueError("only message events apply to the selected mailbox")  # RFC 5465 §6.1
        if self.fetch and self.filter not in NOTIFY_SELECTED:
            raise ValueError("MessageNew's fetch attributes apply to the selected mailbox only")


@dataclass(frozen=True, slots=True)
class Notify(Command):
    """RFC 5465: NOTIFY NONE (``groups`` None) or NOTIFY SET [STATUS] event-groups."""

    name: ClassVar[str] = "NOTIFY"
    groups: tuple[NotifyGroup, ...] | None = None
    status: bool = False

    def __post_init__(self) -> None:
        Command.__post_init__(self)
        if self.groups is not None:
            if not self.groups:
                raise ValueError("NOTIFY SET needs event groups")
            if sum(g.filter in NOTIFY_SELECTED for g in self.groups) > 1:
                raise ValueError("only one of SELECTED and SELECTED-DELAYED can be given")


COMMANDS: tuple[type[Command], ...] = (
    Capability,
    Noop,
    Logout,
    StartTLS,
    Login,
    Authenticate,
    Enable,
    Id,
    Namespace,
    Select,
    Examine,
    Create,
    Delete,
    Rename,
    Subscribe,
    Unsubscribe,
    List,
    Lsub,
    Status,
    Append,
    Check,
    Close,
    Unselect,
    Expunge,
    Search,
    Sort,
    Fetch,
    Store,
    Copy,
    Move,
    Idle,
    GetQuota,
    GetQuotaRoot,
    SetQuota,
    Compress,
    Thread,
    CancelUpdate,
    Notify,
)


# --- the client's side: commands to bytes --------------------------------------------------------------------


def _returns_wire(cmd: Search | Sort) -> bytes:
    """``RETURN (options) `` as a client writes it (PARTIAL with its range), or nothing."""
    if cmd.returns is None:
        return b""
    p = cmd.partial
    opts = [f"PARTIAL {p[0]}:{p[1]}" if o == "PARTIAL" and p is not None else o for o in cmd.returns]
    return b"RETURN (" + " ".join(opts).encode() + b") "


def _quoted(value: str) -> bytes:
    return b'"' + value.replace("\\", "\\\\").replace('"', '\\"').encode() + b'"'


def wire_string(value: str | bytes) -> bytes:
    """An astring as a client writes it: atom if possible, else quoted, else a LITERAL+ literal."""
    data = value.encode() if isinstance(value, str) else value
    if data and all(c in ASTRING_CHARS for c in data):
        return data
    if all(0x20 <= c < 0x7F for c in data) and len(data) < 1000:
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d+}\r\n" % len(data) + data


def _wire_string_forced(value: str | bytes) -> bytes:
    """A string (never an atom), for places where the grammar asks for ``string``."""
    out = wire_string(value)
    if out and out[:1] not in (b'"', b"{"):
        return b'"' + out + b'"'
    return out


def _mailbox(name: str) -> bytes:
    return wire_string(mutf7.encode(name))


def _pattern(p: str) -> bytes:
    enc = mutf7.encode(p)
    if enc and all(c in ATOM_CHARS or c in b"%*]" for c in enc.encode()):
        return enc.encode()
    return wire_string(enc) if enc else b'""'


def _flags(flags: Iterable[str]) -> bytes:
    return b"(" + b" ".join(f.encode() for f in flags) + b")"


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date(d: dt.date) -> str:
    return f"{d.day}-{_MONTHS[d.month - 1]}-{d.year:04d}"


def format_datetime(when: dt.datetime) -> str:
    """RFC 3501 date-time: ``"23-Nov-2026 09:30:00 +0100"`` (without the quotes)."""
    off = when.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{minutes // 60:02d}{minutes % 60:02d}"
    )


_FLAG_KEYS = {
    "\\Answered": ("ANSWERED", "UNANSWERED"),
    "\\Deleted": ("DELETED", "UNDELETED"),
    "\\Draft": ("DRAFT", "UNDRAFT"),
    "\\Flagged": ("FLAGGED", "UNFLAGGED"),
    "\\Seen": ("SEEN", "UNSEEN"),
    "\\Recent": ("RECENT", "OLD"),
}
SHORT_HEADER_KEYS = ("from", "to", "cc", "bcc", "subject")


def search_wire(key: SearchKey) -> bytes:
    if isinstance(key, SearchAll):
        return b"ALL"
    if isinstance(key, SearchNew):
        return b"NEW"
    if isinstance(key, SearchFlag):
        if key.flag in _FLAG_KEYS:
            return _FLAG_KEYS[key.flag][0 if key.present else 1].encode()
        return (b"KEYWORD " if key.present else b"UNKEYWORD ") + key.flag.encode()
    if isinstance(key, SearchHeader):
        if key.field in SHORT_HEADER_KEYS:
            return key.field.upper().encode() + b" " + wire_string(key.value)
        return b"HEADER " + wire_string(key.field) + b" " + wire_string(key.value)
    if isinstance(key, SearchText):
        return key.where.encode() + b" " + wire_string(key.value)
    if isinstance(key, SearchDate):
        return (b"SENT" if key.sent else b"") + key.op.encode() + b" " + format_date(key.date).encode()
    if isinstance(key, SearchSize):
        return (b"LARGER " if key.larger else b"SMALLER ") + str(key.size).encode()
    if isinstance(key, SearchSeq):
        return (b"UID " if key.uid else b"") + str(key.seqset).encode()
    if isinstance(key, SearchModseq):
        return b"MODSEQ %d" % key.modseq
    if isinstance(key, SearchSaveDate):
        return b"SAVED" + key.op.encode() + b" " + format_date(key.date).encode()
    if isinstance(key, SearchSaveDateSupported):
        return b"SAVEDATESUPPORTED"
    if isinstance(key, SearchObjectId):
        return key.kind.encode() + b" " + key.value.encode()
    if isinstance(key, SearchWithin):
        return (b"OLDER %d" if key.older else b"YOUNGER %d") % key.seconds
    if isinstance(key, SearchNot):
        return b"NOT " + search_wire(key.key)
    if isinstance(key, SearchOr):
        return b"OR " + search_wire(key.left) + b" " + search_wire(key.right)
    if isinstance(key, SearchAnd):
        return b"(" + b" ".join(search_wire(k) for k in key.keys) + b")"
    raise TypeError(type(key).__name__)


def fetch_item_wire(item: FetchItem) -> bytes:
    if isinstance(item, FetchAttr):
        return item.name.encode()
    if isinstance(item, FetchBinary):
        name = "BINARY.SIZE" if item.size else "BINARY.PEEK" if item.peek else "BINARY"
        partial = f"<{item.partial[0]}.{item.partial[1]}>" if item.partial else ""
        return f"{name}{item.section}{partial}".encode()
    out = b"BODY.PEEK" if item.peek else b"BODY"
    out += str(item.section).encode()
    if item.partial:
        out += b"<%d.%d>" % item.partial
    return out


def to_wire(cmd: Command) -> bytes:  # noqa: C901 - one branch per command, as the grammar has
    """The bytes a client sends for ``cmd`` (CRLF included)."""
    t = cmd.tag.encode() + b" "
    uid = b"UID " if getattr(cmd, "uid", False) else b""
    body: bytes
    if isinstance(cmd, Login):
        body = b"LOGIN " + wire_string(cmd.user) + b" " + wire_string(cmd.password)
    elif isinstance(cmd, Authenticate):
        body = b"AUTHENTICATE " + cmd.mechanism.encode()
        if cmd.initial is not None:
            body += b" " + (cmd.initial.encode() or b"=")
    elif isinstance(cmd, Enable):
        body = b"ENABLE " + " ".join(cmd.capabilities).encode()
    elif isinstance(cmd, Id):
        if cmd.params is None:
            body = b"ID NIL"
        else:
            items = []
            for k, v in cmd.params:
                items.append(_wire_string_forced(k))
                items.append(b"NIL" if v is None else _wire_string_forced(v))
            body = b"ID (" + b" ".join(items) + b")"
    elif isinstance(cmd, Rename):
        body = b"RENAME " + _mailbox(cmd.old) + b" " + _mailbox(cmd.new)
    elif isinstance(cmd, List):
        body = b"LIST "
        if cmd.select_options:
            body += b"(" + " ".join(cmd.select_options).encode() + b") "
        body += _mailbox(cmd.reference) + b" "
        if len(cmd.patterns) == 1:
            body += _pattern(cmd.patterns[0])
        else:
            body += b"(" + b" ".join(_pattern(p) for p in cmd.patterns) + b")"
        if cmd.return_options:
            opts = [f"STATUS ({' '.join(cmd.status_items)})" if o == "STATUS" else o for o in cmd.return_options]
            body += b" RETURN (" + " ".join(opts).encode() + b")"
    elif isinstance(cmd, Lsub):
        body = b"LSUB " + _mailbox(cmd.reference) + b" " + _pattern(cmd.pattern)
    elif isinstance(cmd, Status):
        body = b"STATUS " + _mailbox(cmd.mailbox) + b" (" + " ".join(cmd.items).encode() + b")"
    elif isinstance(cmd, Append):
        body = b"APPEND " + _mailbox(cmd.mailbox)
        for item in cmd.items:
            if item.flags:
                body += b" " + _flags(item.flags)
            if item.date is not None:
                body += b' "' + format_datetime(item.date).encode() + b'"'
            if item.catenate:
                parts = [
                    b"URL " + _wire_string_forced(p.url)
                    if p.url is not None
                    else b"TEXT {%d+}\r\n" % len(p.text or b"") + (p.text or b"")
                    for p in item.catenate
                ]
                body += b" CATENATE (" + b" ".join(parts) + b")"
                continue
            body += b" {%d+}\r\n" % len(item.message) + item.message
    elif isinstance(cmd, Select | Examine):
        body = cmd.name.encode() + b" " + _mailbox(cmd.mailbox)
        if cmd.qresync is not None:
            q = cmd.qresync
            body += b" (QRESYNC (%d %d" % (q.uidvalidity, q.modseq)
            if q.known_uids is not None:
                body += b" " + str(q.known_uids).encode()
            if q.seq_match is not None:
                body += b" (" + str(q.seq_match[0]).encode() + b" " + str(q.seq_match[1]).encode() + b")"
            body += b"))"
        elif cmd.condstore:
            body += b" (CONDSTORE)"
    elif isinstance(cmd, Create) and cmd.special_use:
        body = b"CREATE " + _mailbox(cmd.mailbox) + b" (USE (" + " ".join(cmd.special_use).encode() + b"))"
    elif isinstance(cmd, Copy | Move):
        body = uid + cmd.name.encode() + b" " + str(cmd.seqset).encode() + b" " + _mailbox(cmd.mailbox)
    elif isinstance(cmd, _MailboxCommand):
        body = cmd.name.encode() + b" " + _mailbox(cmd.mailbox)
    elif isinstance(cmd, Expunge):
        body = b"UID EXPUNGE " + str(cmd.uids).encode() if cmd.uids is not None else b"EXPUNGE"
    elif isinstance(cmd, Search):
        body = uid + b"SEARCH "
        body += _returns_wire(cmd)
        if cmd.charset is not None:
            body += b"CHARSET " + wire_string(cmd.charset) + b" "
        keys = cmd.key.keys if isinstance(cmd.key, SearchAnd) else (cmd.key,)
        body += b" ".join(search_wire(k) for k in keys)
    elif isinstance(cmd, Sort):
        crit = " ".join(("REVERSE " if rev else "") + k for rev, k in cmd.criteria)
        keys = cmd.key.keys if isinstance(cmd.key, SearchAnd) else (cmd.key,)
        body = uid + b"SORT " + _returns_wire(cmd)
        body += b"(" + crit.encode() + b") " + wire_string(cmd.charset) + b" "
        body += b" ".join(search_wire(k) for k in keys)
    elif isinstance(cmd, CancelUpdate):
        body = b"CANCELUPDATE " + b" ".join(_quoted(t) for t in cmd.tags)
    elif isinstance(cmd, Thread):
        keys = cmd.key.keys if isinstance(cmd.key, SearchAnd) else (cmd.key,)
        body = uid + b"THREAD " + cmd.algorithm.encode() + b" " + wire_string(cmd.charset) + b" "
        body += b" ".join(search_wire(k) for k in keys)
    elif isinstance(cmd, Fetch):
        atts = b" ".join(fetch_item_wire(i) for i in cmd.items)
        body = uid + b"FETCH " + str(cmd.seqset).encode() + b" (" + atts + b")"
        if cmd.changed_since is not None:
            body += b" (CHANGEDSINCE %d%s)" % (cmd.changed_since, b" VANISHED" if cmd.vanished else b"")
    elif isinstance(cmd, Store):
        body = (
            uid
            + b"STORE "
            + str(cmd.seqset).encode()
            + (b" (UNCHANGEDSINCE %d)" % cmd.unchanged_since if cmd.unchanged_since is not None else b"")
            + b" "
            + cmd.mode.encode()
            + b"FLAGS"
            + (b".SILENT" if cmd.silent else b"")
            + b" "
            + _flags(cmd.flags)
        )
    elif isinstance(cmd, Compress):
        body = b"COMPRESS " + cmd.mechanism.encode()
    elif isinstance(cmd, GetQuota):
        body = b"GETQUOTA " + _wire_string_forced(cmd.root)
    elif isinstance(cmd, SetQuota):
        pairs = " ".join(f"{res} {n}" for res, n in cmd.limits)
        body = b"SETQUOTA " + _wire_string_forced(cmd.root) + b" (" + pairs.encode() + b")"
    else:
        body = cmd.name.encode()
    return t + body + b"\r\n"
