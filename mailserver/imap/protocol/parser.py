"""Bytes in, commands out: the incremental IMAP command receiver.

    receiver = ImapReceiver(max_line=8192, max_literal=50 * 2**20)
    receiver.feed(data)
    while True:
        event = receiver.next()       # Command | NeedData | NeedLiteral(size)
        ...

Implementation notes (invariants):
- Input is cut into lines and literals as it arrives; a line ending in ``{n}``
  or ``{n+}`` (RFC 3501 §4.3, RFC 7888 LITERAL+) is followed by exactly n bytes
  of literal. Nothing is scanned twice: the grammar runs once, over the whole
  command, when its last line has arrived.
- A synchronising literal yields ``NeedLiteral`` once; the session answers
  ``+`` (or rejects it with ``reject_literal()``, and the client sends nothing).
- Bounds are named and raise ``ImapParseError``: a line longer than
  ``max_line`` (the rest of it is skipped), a literal larger than
  ``max_literal`` (``TOOBIG``; fatal for a non-synchronising one, whose bytes
  are on their way), lists nested deeper than ``max_depth``, more than
  ``max_literals`` literals in a command.
- ``ImapParseError`` is the only exception that leaves this module; anything else
  is a bug (tested with Hypothesis, whole and byte by byte).

See Also: RFC 3501 §9 (formal syntax), RFC 9051 §9.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7


class ImapParseError(Exception):
    """A command the server cannot parse: answered BAD (or NO [TOOBIG]), counted towards BAD_COMMAND_LIMIT.

    ``fatal`` errors end the connection (the stream cannot be resynchronised).
    """

    def __init__(self, message: str, *, tag: str | None = None, code: str | None = None, fatal: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.code = code
        self.fatal = fatal


class InvalidMailboxName(ImapParseError):
    """A well-formed command whose mailbox name is not modified UTF-7 (RFC 3501 §5.1.3).

    Such a name names no mailbox: the session answers NO, not BAD (``states.Connection.parse_error``).
    """

    def __init__(self, message: str, *, tag: str, command: type[c.Command], uid: bool) -> None:
        super().__init__(message, tag=tag)
        self.command = command
        self.uid = uid


@dataclass(frozen=True, slots=True)
class NeedData:
    """Feed more bytes."""


@dataclass(frozen=True, slots=True)
class NeedLiteral:
    """The client waits for a ``+`` before sending ``size`` bytes of a synchronising literal."""

    size: int
    tag: str | None
    command: str | None


NEED_DATA = NeedData()


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


_LITERAL_END = re.compile(rb"\{([0-9]{1,20})(\+?)\}\Z")
_TAG_AND_NAME = re.compile(rb"([^ ]+) ([A-Za-z]+)(?: ([A-Za-z]+))?")


def _guess_tag(line: bytes) -> tuple[str | None, str | None]:
    m = _TAG_AND_NAME.match(line)
    if not m:
        return None, None
    tag = m.group(1).decode("ascii", "replace")
    if any(ord(ch) not in c.TAG_CHARS for ch in tag):
        return None, None
    name = m.group(2).decode().upper()
    if name == "UID" and m.group(3):
        name = "UID " + m.group(3).decode().upper()
    return tag, name


class ImapReceiver:
    def __init__(
        self,
        *,
        max_line: int = 8192,
        max_literal: int = 64 * 2**20,
        max_depth: int = 32,
        max_literals: int = 64,
    ) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_depth = max_depth
        self.max_literals = max_literals
        #: mailbox names arrive in UTF-8, not modified UTF-7: IMAP4rev2 or UTF8=ACCEPT is enabled (RFC 9051
        #: §5.1, RFC 6855 §3)
        self.utf8 = False
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0  # where to resume looking for LF
        self._parts: list[bytes] = []  # text, literal, text, literal, ..., text
        self._literal: bytearray | None = None
        self._literal_left = 0
        self._skip_line = False
        self._closed = False

    # --- input -----------------------------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._scan -= self._pos
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed (STARTTLS: must be 0, else a command was injected)."""
        return len(self._buf) - self._pos

    @property
    def in_literal(self) -> bool:
        """A literal's octets are being received (a command's line is half read)."""
        return self._literal is not None

    def take_buffer(self) -> bytes:
        """The octets received after the last command, taken out (COMPRESS: they were sent deflated)."""
        rest = bytes(self._buf[self._pos :])
        self.discard_buffer()
        return rest

    def discard_buffer(self) -> None:
        del self._buf[:]
        self._pos = self._scan = 0
        self._reset_command()

    def _reset_command(self) -> None:
        self._parts = []
        self._literal = None
        self._literal_left = 0

    # --- raw lines (AUTHENTICATE responses, IDLE's DONE) -----------------------------------------------------

    def next_line(self) -> bytes | NeedData:
        """The next line as is (without CRLF), outside command syntax. Raises ImapParseError if too long."""
        line = self._take_line()
        return NEED_DATA if line is None else line

    def _take_line(self) -> bytes | None:
        idx = self._buf.find(b"\n", max(self._scan, self._pos))
        if idx < 0:
            self._scan = len(self._buf)
            if len(self._buf) - self._pos > self.max_line:
                tag, _ = _guess_tag(bytes(self._buf[self._pos : self._pos + 200]))
                self._pos = self._scan = len(self._buf)
                self._skip_line = True
                self._reset_command()
                raise ImapParseError(f"Line too long (the limit is {self.max_line} bytes)", tag=tag)
            return None
        line = bytes(self._buf[self._pos : idx])
        self._pos = self._scan = idx + 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > self.max_line:
            self._reset_command()
            tag, _ = _guess_tag(line[:200])
            raise ImapParseError(f"Line too long (the limit is {self.max_line} bytes)", tag=tag)
        return line

    # --- commands ------------------------------------------------------------------------------------------

    def reject_literal(self) -> None:
        """The session refused a synchronising literal: the client will not send it; forget the command."""
        self._reset_command()

    def next(self) -> c.Command | NeedData | NeedLiteral:
        while True:
            if self._skip_line:
                idx = self._buf.find(b"\n", self._pos)
                if idx < 0:
                    self._pos = self._scan = len(self._buf)
                    return NEED_DATA
                self._pos = self._scan = idx + 1
                self._skip_line = False
                continue
            if self._literal is not None:
                take = min(self._literal_left, len(self._buf) - self._pos)
                self._literal += self._buf[self._pos : self._pos + take]
                self._pos += take
                self._scan = self._pos
                self._literal_left -= take
                if self._literal_left:
                    return NEED_DATA
                self._parts.append(bytes(self._literal))
                self._literal = None
                continue
            line = self._take_line()
            if line is None:
                return NEED_DATA
            m = _LITERAL_END.search(line)
            if m is None:
                parts = [*self._parts, line]
                self._parts = []
                return parse_command(parts, max_depth=self.max_depth, utf8=self.utf8)
            size, nonsync = int(m.group(1)), bool(m.group(2))
            first = self._parts[0] if self._parts else line
            tag, name = _guess_tag(first)
            if size > self.max_literal:
                self._reset_command()
                if nonsync:
                    self._skip_line = False
                    raise ImapParseError(
                        f"Literal too big (the limit is {self.max_literal} bytes)", tag=tag, code="TOOBIG", fatal=True
                    )
                raise ImapParseError(f"Literal too big (the limit is {self.max_literal} bytes)", tag=tag, code="TOOBIG")
            if len(self._parts) // 2 >= self.max_literals:
                self._reset_command()
                raise ImapParseError(
                    f"Too many literals in one command (the limit is {self.max_literals})", tag=tag, fatal=nonsync
                )
            self._parts.append(line)
            self._literal = bytearray()
            self._literal_left = size
            if not nonsync:
                return NeedLiteral(size, tag, name)


# --- the grammar --------------------------------------------------------------------------------------------


class _Cursor:
    """Reads tokens across the text parts and literals of one command."""

    def __init__(self, parts: list[bytes], max_depth: int, utf8: bool = False) -> None:
        self.parts = parts
        self.utf8 = utf8
        self.i = 0
        self.text = parts[0]
        self.pos = 0
        self.max_depth = max_depth
        self.depth = 0
        self.tag: str | None = None
        self.bad_name: str | None = None  # why a mailbox name was not modified UTF-7

    def error(self, message: str) -> ImapParseError:
        return ImapParseError(message, tag=self.tag)

    def peek(self) -> int | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def at_end(self) -> bool:
        return self.pos >= len(self.text) and self.i == len(self.parts) - 1

    def expect(self, s: bytes, what: str | None = None) -> None:
        if self.text[self.pos : self.pos + len(s)] != s:
            raise self.error(f"Expected {what or repr(s.decode())}")
        self.pos += len(s)

    def maybe(self, s: bytes) -> bool:
        if self.text[self.pos : self.pos + len(s)] == s:
            self.pos += len(s)
            return True
        return False

    def maybe_upper(self, s: bytes) -> bool:
        if self.text[self.pos : self.pos + len(s)].upper() == s:
            self.pos += len(s)
            return True
        return False

    def sp(self) -> None:
        if self.peek() != 0x20:
            raise self.error("Expected a space")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():
            raise self.error("Unexpected characters at the end of the command")

    def open(self) -> None:
        self.expect(b"(")
        self.depth += 1
        if self.depth > self.max_depth:
            raise self.error(f"Too deeply nested (the limit is {self.max_depth})")

    def close(self) -> None:
        self.expect(b")")
        self.depth -= 1

    def chars(self, allowed: frozenset[int], what: str) -> bytes:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        if self.pos == start:
            raise self.error(f"Expected {what}")
        return self.text[start : self.pos]

    def atom(self, what: str = "an atom") -> str:
        return self.chars(c.ATOM_CHARS, what).decode("ascii")

    def number(self, what: str = "a number") -> int:
        digits = self.chars(_DIGITS, what)
        if len(digits) > 19:
            raise self.error(f"Number too large: {what}")
        return int(digits)

    def nz_number(self, what: str = "a number") -> int:
        n = self.number(what)
        if n == 0 or n >= 2**32:
            raise self.error(f"Expected a non-zero 32-bit number: {what}")
        return n

    def literal(self) -> bytes:
        m = _LITERAL_END.match(self.text, self.pos)
        if m is None:
            raise self.error("Malformed literal")
        if self.i + 2 >= len(self.parts):
            raise self.error("Missing literal")
        data = self.parts[self.i + 1]
        self.i += 2
        self.text = self.parts[self.i]
        self.pos = 0
        return data

    def quoted(self) -> bytes:
        self.expect(b'"')
        out = bytearray()
        while True:
            ch = self.peek()
            if ch is None:
                raise self.error("Unterminated quoted string")
            self.pos += 1
            if ch == 0x22:
                return bytes(out)
            if ch == 0x5C:
                nxt = self.peek()
                if nxt not in (0x22, 0x5C):
                    raise self.error('Only \\\\ and \\" may be escaped in a quoted string')
                self.pos += 1
                out.append(nxt)
            elif ch == 0:
                raise self.error("NUL in a quoted string")
            else:
                out.append(ch)

    def string(self) -> bytes:
        ch = self.peek()
        if ch == 0x22:
            return self.quoted()
        if ch == 0x7B:
            return self.literal()
        raise self.error("Expected a string")

    def astring(self, what: str = "a string") -> bytes:
        ch = self.peek()
        if ch in (0x22, 0x7B):
            return self.string()
        return self.chars(c.ASTRING_CHARS, what)

    def nstring(self) -> bytes | None:
        if self.maybe_upper(b"NIL"):
            return None
        return self.string()

    def text_of(self, data: bytes, what: str) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"{what} is not valid UTF-8") from None

    def mailbox(self) -> str:
        raw = self.astring("a mailbox name")
        try:
            return raw.decode("utf-8") if self.utf8 else mutf7.decode(raw)
        except ValueError:
            # parse on: the command may still be malformed elsewhere (BAD); if not, it names no mailbox (NO)
            self.bad_name = "Mailbox name is not valid " + ("UTF-8" if self.utf8 else "modified UTF-7")
            return raw.decode("latin-1")

    def list_mailbox(self) -> str:
        ch = self.peek()
        if ch in (0x22, 0x7B):
            raw = self.string()
        else:
            raw = self.chars(_LIST_CHARS, "a mailbox pattern")
        try:
            return raw.decode("utf-8") if self.utf8 else mutf7.decode(raw)
        except ValueError:
            raise self.error("Mailbox pattern is not valid " + ("UTF-8" if self.utf8 else "modified UTF-7")) from None

    def flag(self) -> str:
        backslash = self.maybe(b"\\")
        if backslash and self.maybe(b"*"):
            raise self.error("\\* is not a flag one can set")
        name = self.atom("a flag")
        try:
            return c.canonical_flag(("\\" if backslash else "") + name)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def flag_list(self) -> tuple[str, ...]:
        self.open()
        flags: list[str] = []
        if not self.maybe(b")"):
            flags.append(self.flag())
            while self.maybe(b" "):
                flags.append(self.flag())
            self.close()
        else:
            self.depth -= 1
        return tuple(dict.fromkeys(flags))

    def seqset(self) -> c.SequenceSet:
        if self.maybe(b"$"):  # RFC 5182 SEARCHRES
            return c.SAVED
        raw = self.chars(_SEQ_CHARS, "a sequence set").decode()
        try:
            return c.SequenceSet.parse(raw)
        except ValueError as exc:
            raise self.error(_sentence(str(exc))) from None


_DIGITS = frozenset(b"0123456789")
_SEQ_CHARS = frozenset(b"0123456789:*,")
_LIST_CHARS = c.ATOM_CHARS | frozenset(b"%*]")
_MONTHS = {m.upper(): i + 1 for i, m in enumerate(c._MONTHS)}
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATETIME = re.compile(
    rb"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)


def _date(cur: _Cursor) -> dt.date:
    quoted = cur.maybe(b'"')
    m = _DATE.match(cur.text, cur.pos)
    if not m or m.group(2).upper().decode() not in _MONTHS:
        raise cur.error("Expected a date like 23-Nov-2026")
    cur.pos = m.end()
    if quoted:
        cur.expect(b'"')
    try:
        return dt.date(int(m.group(3)), _MONTHS[m.group(2).upper().decode()], int(m.group(1)))
    except ValueError:
        raise cur.error("No such date") from None


def _datetime(cur: _Cursor) -> dt.datetime:
    cur.expect(b'"', "a date-time in double quotes")
    m = _DATETIME.match(cur.text, cur.pos)
    if not m or m.group(2).upper().decode() not in _MONTHS:
        raise cur.error('Expected a date-time like "23-Nov-2026 09:30:00 +0100"')
    cur.pos = m.end()
    cur.expect(b'"')
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (1 if sign == b"+" else -1)
    try:
        return dt.datetime(
            int(year),
            _MONTHS[mon.upper().decode()],
            int(day),
            int(hh),
            int(mm),
            int(ss),
            tzinfo=dt.timezone(offset),
        )
    except ValueError:
        raise cur.error("No such date-time") from None


# --- search ---


_FLAG_SEARCH = {
    "ANSWERED": ("\\Answered", True),
    "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True),
    "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True),
    "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True),
    "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True),
    "UNSEEN": ("\\Seen", False),
    "RECENT": ("\\Recent", True),
    "OLD": ("\\Recent", False),
}


def _search_key(cur: _Cursor, decode: Callable[[bytes], str]) -> c.SearchKey:
    ch = cur.peek()
    if ch == 0x28:  # "("
        cur.open()
        keys = [_search_key(cur, decode)]
        while cur.maybe(b" "):
            keys.append(_search_key(cur, decode))
        cur.close()
        return keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    if ch is not None and (ch in _DIGITS or ch in (0x2A, 0x24)):  # a number, "*" or "$" (RFC 5182)
        return c.SearchSeq(cur.seqset(), uid=False)
    word = cur.atom("a search key").upper()
    if word == "ALL":
        return c.SearchAll()
    if word == "NEW":
        return c.SearchNew()
    if word in _FLAG_SEARCH:
        flag, present = _FLAG_SEARCH[word]
        return c.SearchFlag(flag, present)
    if word in ("KEYWORD", "UNKEYWORD"):
        cur.sp()
        kw = cur.flag()
        if kw.startswith("\\"):
            raise cur.error("KEYWORD takes a keyword, not a system flag")
        return c.SearchFlag(kw, word == "KEYWORD")
    if word in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
        cur.sp()
        return c.SearchHeader(word.lower(), decode(cur.astring()))
    if word == "HEADER":
        cur.sp()
        name = cur.astring("a header field name").decode("ascii", "replace").lower()
        cur.sp()
        value = decode(cur.astring())
        try:
            return c.SearchHeader(name, value)
        except ValueError as exc:
            raise cur.error(_sentence(str(exc))) from None
    if word in ("BODY", "TEXT"):
        cur.sp()
        return c.SearchText(word, decode(cur.astring()))
    for prefix, sent in (("SENT", True), ("", False)):
        op = word[len(prefix) :] if word.startswith(prefix) else None
        if op in ("BEFORE", "ON", "SINCE"):
            cur.sp()
            return c.SearchDate(sent, op, _date(cur))
    if word in ("LARGER", "SMALLER"):
        cur.sp()
        return c.SearchSize(word == "LARGER", cur.number("a size"))
    if word == "UID":
        cur.sp()
        return c.SearchSeq(cur.seqset(), uid=True)
    if word == "MODSEQ":  # RFC 7162 §3.1.5: MODSEQ [entry-name entry-type-req] mod-sequence-valzer
        cur.sp()
        if cur.peek() == 0x22:
            cur.quoted()  # the entry name ("/flags/\\draft"): per-flag mod-sequences are not kept apart
            cur.sp()
            kind = cur.atom("an entry type").lower()
            if kind not in ("priv", "shared", "all"):
                raise cur.error("The MODSEQ entry type is priv, shared or all")
            cur.sp()
        return c.SearchModseq(cur.number("a mod-sequence"))
    if word in ("SAVEDBEFORE", "SAVEDON", "SAVEDSINCE"):  # RFC 8514 §4.2
        cur.sp()
        return c.SearchSaveDate(word[len("SAVED") :], _date(cur))
    if word == "SAVEDATESUPPORTED":
        return c.SearchSaveDateSupported()
    if word in ("EMAILID", "THREADID"):  # RFC 8474 §6
        cur.sp()
        value = cur.atom("an object id")
        try:
            return c.SearchObjectId(word, value)
        except ValueError as exc:
            raise cur.error(_sentence(str(exc))) from None
    if word in ("OLDER", "YOUNGER"):  # RFC 5032 WITHIN
        cur.sp()
        return c.SearchWithin(word == "OLDER", cur.nz_number("an interval in seconds"))
    if word == "NOT":
        cur.sp()
        cur.depth += 1
        if cur.depth > cur.max_depth:
            raise cur.error(f"Too deeply nested (the limit is {cur.max_depth})")
        inner = _search_key(cur, decode)
        cur.depth -= 1
        return c.SearchNot(inner)
    if word == "OR":
        cur.sp()
        cur.depth += 1
        if cur.depth > cur.max_depth:
            raise cur.error(f"Too deeply nested (the limit is {cur.max_depth})")
        left = _search_key(cur, decode)
        cur.sp()
        right = _search_key(cur, decode)
        cur.depth -= 1
        return c.SearchOr(left, right)
    raise cur.error(f"Unknown search key {word}")


# --- fetch ---

_FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_FETCH_NAME = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")


def _section(cur: _Cursor) -> c.Section:
    cur.expect(b"[")
    part: list[int] = []
    text: str | None = None
    fields: tuple[str, ...] = ()
    if not cur.maybe(b"]"):
        while (ch := cur.peek()) is not None and ch in _DIGITS:
            part.append(cur.nz_number("a part number"))
            if not cur.maybe(b"."):
                break
        if cur.peek() != 0x5D:
            spec = cur.chars(_FETCH_NAME, "a section").decode().upper()
            if spec not in c.SECTION_TEXTS:
                raise cur.error(f"Unknown section {spec}")
            text = spec
            if spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
                cur.sp()
                cur.open()
                names = [cur.astring("a header field name")]
                while cur.maybe(b" "):
                    names.append(cur.astring("a header field name"))
                cur.close()
                fields = tuple(n.decode("ascii", "replace") for n in names)
        cur.expect(b"]")
    try:
        return c.Section(tuple(part), text, fields)
    except ValueError as exc:
        raise cur.error(_sentence(str(exc))) from None


def _partial(cur: _Cursor) -> tuple[int, int] | None:
    if not cur.maybe(b"<"):
        return None
    offset = cur.number("an offset")
    cur.expect(b".")
    length = cur.nz_number("a length")
    cur.expect(b">")
    return offset, length


def _fetch_binary(cur: _Cursor, name: str) -> c.FetchItem:
    """BINARY[.PEEK|.SIZE] "[" [section-part] "]" [partial] (RFC 3516 §6)."""
    cur.expect(b"[")
    part: list[int] = []
    while not cur.maybe(b"]"):
        if part:
            cur.expect(b".")
        part.append(cur.nz_number("a part number"))
    size = name == "BINARY.SIZE"
    partial = None if size else _partial(cur)
    return c.FetchBinary(tuple(part), peek=name == "BINARY.PEEK", partial=partial, size=size)


def _fetch_att(cur: _Cursor) -> c.FetchItem:
    name = cur.chars(_FETCH_NAME, "a fetch attribute").decode().upper()
    if name in ("BINARY", "BINARY.PEEK", "BINARY.SIZE") and cur.peek() == 0x5B:
        return _fetch_binary(cur, name)
    if name in ("BODY", "BODY.PEEK") and cur.peek() == 0x5B:
        section = _section(cur)
        partial = None
        if cur.maybe(b"<"):
            offset = cur.number("an offset")
            cur.expect(b".")
            length = cur.nz_number("a length")
            cur.expect(b">")
            partial = (offset, length)
        return c.FetchBody(section, peek=name == "BODY.PEEK", partial=partial)
    if name == "BODY.PEEK":
        raise cur.error("BODY.PEEK needs a section, e.g. BODY.PEEK[]")
    if name not in c.SIMPLE_FETCH_ATTS:
        raise cur.error(f"Unknown fetch attribute {name}")
    if name == "PREVIEW":
        cur.maybe_upper(b" (LAZY)")  # RFC 8970 §3.2: a preview is always made here, so LAZY changes nothing
    return c.FetchAttr(name)


def _fetch_items(cur: _Cursor) -> tuple[c.FetchItem, ...]:
    if cur.peek() == 0x28:
        cur.open()
        items = [_fetch_att(cur)]
        while cur.maybe(b" "):
            items.append(_fetch_att(cur))
        cur.close()
        return tuple(items)
    start = cur.pos
    word = cur.chars(_FETCH_NAME, "fetch attributes").decode().upper()
    if word in _FETCH_MACROS:
        return tuple(c.FetchAttr(n) for n in _FETCH_MACROS[word])
    cur.pos = start
    return (_fetch_att(cur),)


# --- commands ---


def _status_items(cur: _Cursor) -> tuple[str, ...]:
    cur.open()
    items = [cur.atom("a status item").upper()]
    while cur.maybe(b" "):
        items.append(cur.atom("a status item").upper())
    cur.close()
    unknown = set(items) - c.STATUS_ITEMS
    if unknown:
        raise cur.error(f"Unknown STATUS item {sorted(unknown)[0]}")
    return tuple(dict.fromkeys(items))


def _options(cur: _Cursor, allowed: frozenset[str], what: str) -> tuple[str, ...]:
    cur.open()
    opts: list[str] = []
    if not cur.maybe(b")"):
        opts.append(cur.atom(what).upper())
        while cur.maybe(b" "):
            opts.append(cur.atom(what).upper())
        cur.close()
    else:
        cur.depth -= 1
    for o in opts:
        if o not in allowed:
            raise cur.error(f"Unsupported {what} {o}")
    return tuple(dict.fromkeys(opts))


def _parse_list(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    select: tuple[str, ...] = ()
    if cur.peek() == 0x28:
        select = _options(cur, c.LIST_SELECT_OPTIONS, "LIST selection option")
        cur.sp()
    reference = cur.mailbox()
    cur.sp()
    if cur.peek() == 0x28:
        cur.open()
        patterns = [cur.list_mailbox()]
        while cur.maybe(b" "):
            patterns.append(cur.list_mailbox())
        cur.close()
    else:
        patterns = [cur.list_mailbox()]
    ret: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    if cur.maybe(b" "):
        if not cur.maybe_upper(b"RETURN "):
            raise cur.error("Expected RETURN (options)")
        ret, status = _list_return(cur)
    cur.end()
    return c.List(tag, reference, tuple(patterns), select, ret, status)


def _list_return(cur: _Cursor) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """RETURN (option ...) of LIST (RFC 5258), STATUS (items) among them (RFC 5819)."""
    cur.open()
    opts: list[str] = []
    status: tuple[str, ...] = ()
    while cur.peek() != 0x29:
        if opts:
            cur.sp()
        o = cur.atom("a LIST return option").upper()
        if o not in c.LIST_RETURN_OPTIONS:
            raise cur.error(f"Unsupported LIST return option {o}")
        if o == "STATUS":
            cur.sp()
            status = _status_items(cur)
        opts.append(o)
    cur.close()
    return tuple(dict.fromkeys(opts)), status


_PARTIAL_RANGE = re.compile(rb"([0-9]{1,10}):([0-9]{1,10})")


def _partial_range(cur: _Cursor, what: str) -> tuple[int, int]:
    """``low:high`` after PARTIAL (RFC 5267 §4.4): positions from 1; ``high:low`` is read as ``low:high``
    (RFC 9394 §3.1)."""
    start = cur.pos
    token = cur.chars(c.ATOM_CHARS, f"a {what} PARTIAL range low:high")
    m = _PARTIAL_RANGE.fullmatch(token)
    shown = token[:40].decode("ascii", "replace")
    if m is None:
        cur.pos = start
        raise cur.error(f"{what} PARTIAL takes a range of result positions low:high, such as 1:100, not {shown}")
    a, b = int(m[1]), int(m[2])
    if a == 0 or b == 0 or max(a, b) >= 2**32:
        raise cur.error(f"{what} PARTIAL range {shown}: positions in a result run from 1 to 4294967295")
    return min(a, b), max(a, b)


def _search_returns(cur: _Cursor, what: str) -> tuple[tuple[str, ...], tuple[int, int] | None]:
    """RETURN (options) of SEARCH and SORT (RFC 4731, RFC 5267): PARTIAL with its range, once, not with ALL."""
    cur.open()
    opts: list[str] = []
    partial: tuple[int, int] | None = None
    while cur.peek() != 0x29:
        if opts:
            cur.sp()
        o = cur.atom(f"a {what} RETURN option").upper()
        if o not in c.SEARCH_RETURN_OPTIONS:
            raise cur.error(f"Unsupported {what} RETURN option {o[:40]}")
        if o == "PARTIAL":
            if partial is not None:
                raise cur.error(f"{what} RETURN names PARTIAL once at most (RFC 5267 §4.4)")
            cur.sp()
            partial = _partial_range(cur, what)
        opts.append(o)
    cur.close()
    if partial is not None and "ALL" in opts:
        raise cur.error(f"{what} RETURN cannot ask for both PARTIAL and ALL (RFC 5267 §4.4)")
    return tuple(dict.fromkeys(opts)), partial


def _parse_search(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    charset = None
    returns = None
    partial = None
    if cur.maybe_upper(b"RETURN "):  # RFC 4731 ESEARCH, RFC 5267 §4 CONTEXT=SEARCH
        returns, partial = _search_returns(cur, "SEARCH")
        cur.sp()
    if cur.maybe_upper(b"CHARSET "):
        charset = cur.astring("a charset").decode("ascii", "replace").upper()
        cur.sp()

    def decode(data: bytes) -> str:
        if charset in (None, "UTF-8", "US-ASCII"):
            return cur.text_of(data, "The search string")
        return data.decode("latin-1")  # the session refuses other charsets with NO [BADCHARSET]

    keys = [_search_key(cur, decode)]
    while cur.maybe(b" "):
        _add_search_key(cur, decode, keys)
    cur.end()
    key = keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))
    return c.Search(tag, key, charset, uid, returns, partial)


def _parse_sort(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    """[UID] SORT [RETURN (options)] (criteria) charset search-keys (RFC 5256 §3, RFC 5267 §3 ESORT)."""
    cur.sp()
    returns = None
    partial = None
    if cur.maybe_upper(b"RETURN "):  # RFC 5267 §3 ESORT, §4 CONTEXT=SORT
        returns, partial = _search_returns(cur, "SORT")
        cur.sp()
    cur.open()
    criteria: list[tuple[bool, str]] = []
    while True:
        word = cur.atom("a sort criterion").upper()
        reverse = word == "REVERSE"
        if reverse:
            cur.sp()
            word = cur.atom("a sort criterion").upper()
        if word not in c.SORT_KEYS:
            raise cur.error(f"Unknown sort criterion {word[:40]}")
        criteria.append((reverse, word))
        if not cur.maybe(b" "):
            break
    cur.close()
    cur.sp()
    charset, key = _charset_and_keys(cur)
    return c.Sort(tag, tuple(criteria), charset, key, uid, returns, partial)


def _parse_thread(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    """[UID] THREAD algorithm charset search-keys (RFC 5256 §4)."""
    cur.sp()
    algorithm = cur.atom("a threading algorithm").upper()
    if algorithm not in c.THREAD_ALGORITHMS:
        raise cur.error(f"Unknown threading algorithm {algorithm[:40]}")
    cur.sp()
    charset, key = _charset_and_keys(cur)
    return c.Thread(tag, algorithm, charset, key, uid)


def _charset_and_keys(cur: _Cursor) -> tuple[str, c.SearchKey]:
    """``charset SP search-keys`` to the end of the command, as SORT and THREAD take them (RFC 5256 §4)."""
    charset = cur.astring("a charset").decode("ascii", "replace").upper()
    cur.sp()

    def decode(data: bytes) -> str:
        if charset in ("UTF-8", "US-ASCII"):
            return cur.text_of(data, "The search string")
        return data.decode("latin-1")  # the session refuses other charsets with NO [BADCHARSET]

    keys = [_search_key(cur, decode)]
    while cur.maybe(b" "):
        _add_search_key(cur, decode, keys)
    cur.end()
    return charset, keys[0] if len(keys) == 1 else c.SearchAnd(tuple(keys))


def _add_search_key(cur: _Cursor, decode: Callable[[bytes], str], keys: list[c.SearchKey]) -> None:
    """Parse the next top-level search key into ``keys``, with one leniency for clients that do not quote.

    Python's imaplib sends ``SEARCH SUBJECT Re: question`` unquoted. When what follows a
    text key (FROM, SUBJECT, BODY...) is not a search key, it is taken as more of that
    key's text, as the user meant; anything else stays a syntax error (BAD).
    """
    mark = (cur.i, cur.text, cur.pos)
    try:
        key = _search_key(cur, decode)
        if cur.peek() not in (None, 0x20):
            raise cur.error("Unexpected characters after a search key")
        keys.append(key)
    except ImapParseError as exc:
        previous = keys[-1]
        if not isinstance(previous, c.SearchHeader | c.SearchText):
            raise
        cur.i, cur.text, cur.pos = mark
        try:
            word = decode(cur.astring())
        except ImapParseError:
            raise exc from None
        keys[-1] = dataclasses.replace(previous, value=f"{previous.value} {word}")


def _parse_store(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    seqset = cur.seqset()
    cur.sp()
    unchanged_since = None
    if cur.peek() == 0x28:  # RFC 7162 §3.1.3: (UNCHANGEDSINCE mod-sequence-valzer)
        cur.open()
        if not cur.maybe_upper(b"UNCHANGEDSINCE "):
            raise cur.error("The only STORE modifier is UNCHANGEDSINCE")
        unchanged_since = cur.number("a mod-sequence")
        cur.close()
        cur.sp()
    mode = "+" if cur.maybe(b"+") else "-" if cur.maybe(b"-") else ""
    if not cur.maybe_upper(b"FLAGS"):
        raise cur.error("Expected FLAGS, +FLAGS or -FLAGS")
    silent = cur.maybe_upper(b".SILENT")
    cur.sp()
    if cur.peek() == 0x28:
        flags = cur.flag_list()
    else:
        fl = [cur.flag()]
        while cur.maybe(b" "):
            fl.append(cur.flag())
        flags = tuple(dict.fromkeys(fl))
    cur.end()
    return c.Store(tag, seqset, mode, silent, flags, uid, unchanged_since)


def _parse_id(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    if cur.maybe_upper(b"NIL"):
        cur.end()
        return c.Id(tag, None)
    cur.open()
    params: list[tuple[str, str | None]] = []
    if not cur.maybe(b")"):
        while True:
            key = cur.text_of(cur.string(), "An ID field")
            cur.sp()
            raw = cur.nstring()
            params.append((key, None if raw is None else cur.text_of(raw, "An ID value")))
            if cur.maybe(b")"):
                break
            cur.sp()
        if len(params) > 30:
            raise cur.error("Too many ID fields (at most 30)")
    cur.depth -= 1
    cur.end()
    return c.Id(tag, tuple(params))


def _parse_append(cur: _Cursor, tag: str) -> c.Command:
    """APPEND mailbox 1*(SP [flag-list SP] [date-time SP] literal / literal8 / "UTF8 (" literal8 ")")
    (RFC 3501 §6.3.11, RFC 3502 §6, RFC 3516 §6, RFC 6855 §4)."""
    cur.sp()
    mailbox = cur.mailbox()
    items = [_append_item(cur)]
    while not cur.at_end():
        items.append(_append_item(cur))
    first = items[0]
    return c.Append(tag, mailbox, first.flags, first.date, first.message, tuple(items[1:]), first.catenate)


def _append_item(cur: _Cursor) -> c.AppendItem:
    cur.sp()
    flags: tuple[str, ...] = ()
    date = None
    if cur.peek() == 0x28:
        flags = cur.flag_list()
        cur.sp()
    if cur.peek() == 0x22:
        date = _datetime(cur)
        cur.sp()
    if cur.maybe_upper(b"CATENATE "):
        return c.AppendItem(flags, date, b"", _catenate(cur))
    if cur.maybe_upper(b"UTF8 ("):  # RFC 6855 §4: a message with UTF-8 header fields, as a literal8 in parentheses
        if not cur.maybe(b"~") or cur.peek() != 0x7B:
            raise cur.error("APPEND UTF8 needs the message as a literal8 ~{size}")
        message = cur.literal()
        if not cur.maybe(b")"):
            raise cur.error("APPEND UTF8 (~{size} message) needs its closing parenthesis")
        return c.AppendItem(flags, date, message)
    cur.maybe(b"~")  # RFC 3516 §4.4: a literal8, which may hold any octet
    if cur.peek() != 0x7B:
        raise cur.error("APPEND needs the message as a literal {size}")
    return c.AppendItem(flags, date, cur.literal())


def _catenate(cur: _Cursor) -> tuple[c.CatPart, ...]:
    """ "(" cat-part *(SP cat-part) ")", cat-part = "TEXT" SP literal / "URL" SP astring (RFC 4469 §5)."""
    cur.open()
    parts: list[c.CatPart] = []
    while True:
        if cur.maybe_upper(b"TEXT "):
            cur.maybe(b"~")
            if cur.peek() != 0x7B:
                raise cur.error("CATENATE TEXT needs a literal {size}")
            parts.append(c.CatPart(text=cur.literal()))
        elif cur.maybe_upper(b"URL "):
            parts.append(c.CatPart(url=cur.text_of(cur.astring("an IMAP URL"), "The URL")))
        else:
            raise cur.error("CATENATE parts are TEXT {literal} and URL url")
        if not cur.maybe(b" "):
            break
    cur.close()
    return tuple(parts)


def _simple(cls: type[c.Command]) -> Callable[[_Cursor, str], c.Command]:
    def parse(cur: _Cursor, tag: str) -> c.Command:
        cur.end()
        return cls(tag)

    return parse


def _one_mailbox(cls: type[c._MailboxCommand]) -> Callable[[_Cursor, str], c.Command]:
    def parse(cur: _Cursor, tag: str) -> c.Command:
        cur.sp()
        name = cur.mailbox()
        cur.end()
        return cls(tag, name)

    return parse


def _parse_create(cur: _Cursor, tag: str) -> c.Command:
    """CREATE name [(USE (use-attr ...))] (RFC 6154 §3)."""
    cur.sp()
    name = cur.mailbox()
    uses: list[str] = []
    if cur.maybe(b" "):
        cur.open()
        if not cur.maybe_upper(b"USE "):
            raise cur.error("The only CREATE parameter is USE (...)")
        cur.open()
        uses.append(cur.flag())
        while cur.maybe(b" "):
            uses.append(cur.flag())
        cur.close()
        cur.close()
    cur.end()
    return c.Create(tag, name, tuple(dict.fromkeys(uses)))


def _parse_login(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    user = cur.text_of(cur.astring("a user name"), "The user name")
    cur.sp()
    password = cur.text_of(cur.astring("a password"), "The password")
    cur.end()
    return c.Login(tag, user, password)


def _parse_authenticate(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    mech = cur.atom("a SASL mechanism").upper()
    initial = None
    if cur.maybe(b" "):
        initial = cur.chars(frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), "base64")
        if initial != b"=" and not re.fullmatch(rb"[A-Za-z0-9+/]*={0,2}", initial):
            raise cur.error("The initial response is not base64")
    cur.end()
    return c.Authenticate(tag, mech, None if initial is None else ("" if initial == b"=" else initial.decode()))


def _parse_enable(cur: _Cursor, tag: str) -> c.Command:
    caps = []
    while cur.maybe(b" "):
        caps.append(cur.atom("a capability").upper())
    if not caps:
        raise cur.error("ENABLE needs at least one capability")
    cur.end()
    return c.Enable(tag, tuple(caps))


def _parse_rename(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    old = cur.mailbox()
    cur.sp()
    new = cur.mailbox()
    cur.end()
    return c.Rename(tag, old, new)


def _parse_lsub(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    ref = cur.mailbox()
    cur.sp()
    pattern = cur.list_mailbox()
    cur.end()
    return c.Lsub(tag, ref, pattern)


def _parse_status(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    name = cur.mailbox()
    cur.sp()
    items = _status_items(cur)
    cur.end()
    return c.Status(tag, name, items)


def _parse_fetch(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    seqset = cur.seqset()
    cur.sp()
    items = _fetch_items(cur)
    changed_since, vanished = None, False
    if cur.maybe(b" "):  # RFC 7162 §3.1.4, §3.2.6: (CHANGEDSINCE n [VANISHED])
        cur.open()
        while True:
            if cur.maybe_upper(b"CHANGEDSINCE "):
                changed_since = cur.number("a mod-sequence")
            elif cur.maybe_upper(b"VANISHED"):
                vanished = True
            else:
                raise cur.error("FETCH modifiers are CHANGEDSINCE n and VANISHED")
            if not cur.maybe(b" "):
                break
        cur.close()
        if vanished and (not uid or changed_since is None):
            raise cur.error("VANISHED is a modifier of UID FETCH with CHANGEDSINCE")
    cur.end()
    if uid and c.FetchAttr("UID") not in items:
        items = (*items, c.FetchAttr("UID"))  # RFC 3501 §6.4.8: UID FETCH always returns UID
    if changed_since is not None and c.FetchAttr("MODSEQ") not in items:
        items = (*items, c.FetchAttr("MODSEQ"))  # RFC 7162 §3.1.4.1: CHANGEDSINCE implies MODSEQ
    return c.Fetch(tag, seqset, items, uid, changed_since, vanished)


def _parse_select(cls: type[c.Select] | type[c.Examine]) -> Callable[[_Cursor, str], c.Command]:
    """SELECT / EXAMINE mailbox [(CONDSTORE)] [(QRESYNC (uidvalidity modseq [known-uids [(seqs uids)]]))]."""

    def parse(cur: _Cursor, tag: str) -> c.Command:
        cur.sp()
        name = cur.mailbox()
        condstore, qresync = False, None
        if cur.maybe(b" "):
            cur.open()
            while True:
                if cur.maybe_upper(b"CONDSTORE"):
                    condstore = True
                elif cur.maybe_upper(b"QRESYNC "):
                    qresync = _qresync(cur)
                else:
                    raise cur.error(f"{cls.name} parameters are CONDSTORE and QRESYNC (...)")
                if not cur.maybe(b" "):
                    break
            cur.close()
        cur.end()
        return cls(tag, name, condstore, qresync)

    return parse


def _qresync(cur: _Cursor) -> c.Qresync:
    cur.open()
    uidvalidity = cur.nz_number("a UIDVALIDITY")
    cur.sp()
    modseq = cur.number("a mod-sequence")
    known = match = None
    if cur.maybe(b" "):
        if cur.peek() != 0x28:
            known = cur.seqset()
            cur.maybe(b" ")
        if cur.peek() == 0x28:
            cur.open()
            seqs = cur.seqset()
            cur.sp()
            uids = cur.seqset()
            cur.close()
            match = (seqs, uids)
    cur.close()
    if isinstance(known, c.SavedResult) or (match is not None and any(isinstance(x, c.SavedResult) for x in match)):
        raise cur.error("QRESYNC parameters take numbers, not $")
    return c.Qresync(uidvalidity, modseq, known, match)


def _parse_copy_move(cls: type[c.Copy] | type[c.Move]) -> Callable[[_Cursor, str, bool], c.Command]:
    def parse(cur: _Cursor, tag: str, uid: bool) -> c.Command:
        cur.sp()
        seqset = cur.seqset()
        cur.sp()
        name = cur.mailbox()
        cur.end()
        return cls(tag, name, seqset, uid)

    return parse


def _parse_uid_expunge(cur: _Cursor, tag: str, uid: bool) -> c.Command:
    cur.sp()
    uids = cur.seqset()
    cur.end()
    return c.Expunge(tag, uids)


def _parse_expunge(cur: _Cursor, tag: str) -> c.Command:
    cur.end()
    return c.Expunge(tag, None)


def _parse_notify(cur: _Cursor, tag: str) -> c.Command:
    """RFC 5465 §8: ``NOTIFY NONE`` / ``NOTIFY SET [STATUS] event-group *(SP event-group)``."""
    cur.sp()
    word = cur.atom("SET or NONE").upper()
    if word == "NONE":
        cur.end()
        return c.Notify(tag)
    if word != "SET":
        raise cur.error("NOTIFY takes SET or NONE")
    cur.sp()
    status = cur.peek() != 0x28 and cur.atom("STATUS or an event group").upper() == "STATUS"
    if not status and cur.peek() != 0x28:
        raise cur.error("Expected STATUS or an event group")
    if status:
        cur.sp()
    groups = [_notify_group(cur)]
    while cur.maybe(b" "):
        groups.append(_notify_group(cur))
    cur.end()
    return c.Notify(tag, tuple(groups), status)


def _notify_group(cur: _Cursor) -> c.NotifyGroup:
    """``(filter-mailboxes SP events)``; events are ``NONE`` or a list, MessageNew with its fetch-att."""
    cur.open()
    kind = cur.atom("a mailbox filter").upper()
    boxes: list[str] = []
    if kind in ("SUBTREE", "MAILBOXES"):
        cur.sp()
        if cur.peek() == 0x28:
            cur.open()
            boxes.append(cur.mailbox())
            while cur.maybe(b" "):
                boxes.append(cur.mailbox())
            cur.close()
        else:
            boxes.append(cur.mailbox())
    elif kind not in c.NOTIFY_FILTERS:
        raise cur.error(f"Unknown mailbox filter {kind[:40]}")
    cur.sp()
    events: list[str] = []
    fetch: tuple[c.FetchItem, ...] = ()
    if cur.peek() == 0x28:
        cur.open()
        while True:
            event = cur.atom("an event").upper()
            events.append(event)
            if event == "MESSAGENEW" and cur.text[cur.pos : cur.pos + 2] == b" (":
                cur.sp()
                fetch = _fetch_items(cur)
            if not cur.maybe(b" "):
                break
        cur.close()
    else:  # NONE; a lone event without parentheses as in the RFC's own example (§3)
        event = cur.atom("NONE or a list of events").upper()
        events += [] if event == "NONE" else [event]
    cur.close()
    return c.NotifyGroup(kind, tuple(boxes), tuple(dict.fromkeys(events)), fetch)


def _parse_getquota(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    root = cur.text_of(cur.astring("a quota root"), "The quota root")
    cur.end()
    return c.GetQuota(tag, root)


def _parse_setquota(cur: _Cursor, tag: str) -> c.Command:
    """SETQUOTA quota-root (resource limit ...) (RFC 9208 §4.1.3, §8)."""
    cur.sp()
    root = cur.text_of(cur.astring("a quota root"), "The quota root")
    cur.sp()
    cur.open()
    limits: list[tuple[str, int]] = []
    while cur.peek() != 0x29:
        if limits:
            cur.sp()
        resource = cur.atom("a resource name").upper()
        cur.sp()
        limits.append((resource, cur.number("a limit")))
    cur.close()
    cur.end()
    return c.SetQuota(tag, root, tuple(limits))


def _parse_cancelupdate(cur: _Cursor, tag: str) -> c.Command:
    """CANCELUPDATE 1*(SP quoted): the tags of searches whose updates stop (RFC 5267 §4.3.5)."""
    tags: list[str] = []
    while cur.maybe(b" "):
        if cur.peek() != 0x22:
            raise cur.error("CANCELUPDATE takes the tags of searches as quoted strings")
        tags.append(cur.quoted().decode("ascii", "replace"))
    if not tags:
        raise cur.error("CANCELUPDATE takes the tags of searches as quoted strings")
    cur.end()
    return c.CancelUpdate(tag, tuple(tags))


def _parse_compress(cur: _Cursor, tag: str) -> c.Command:
    cur.sp()
    mechanism = cur.atom("a compression mechanism").upper()
    cur.end()
    return c.Compress(tag, mechanism)


_PLAIN: dict[str, Callable[[_Cursor, str], c.Command]] = {
    "CAPABILITY": _simple(c.Capability),
    "NOOP": _simple(c.Noop),
    "LOGOUT": _simple(c.Logout),
    "STARTTLS": _simple(c.StartTLS),
    "NAMESPACE": _simple(c.Namespace),
    "CHECK": _simple(c.Check),
    "CLOSE": _simple(c.Close),
    "UNSELECT": _simple(c.Unselect),
    "IDLE": _simple(c.Idle),
    "EXPUNGE": _parse_expunge,
    "LOGIN": _parse_login,
    "AUTHENTICATE": _parse_authenticate,
    "ENABLE": _parse_enable,
    "ID": _parse_id,
    "SELECT": _parse_select(c.Select),
    "EXAMINE": _parse_select(c.Examine),
    "CREATE": _parse_create,
    "DELETE": _one_mailbox(c.Delete),
    "SUBSCRIBE": _one_mailbox(c.Subscribe),
    "UNSUBSCRIBE": _one_mailbox(c.Unsubscribe),
    "RENAME": _parse_rename,
    "LIST": lambda cur, tag: _parse_list(cur, tag),
    "LSUB": _parse_lsub,
    "STATUS": _parse_status,
    "APPEND": _parse_append,
    "SEARCH": lambda cur, tag: _parse_search(cur, tag, False),
    "SORT": lambda cur, tag: _parse_sort(cur, tag, False),
    "THREAD": lambda cur, tag: _parse_thread(cur, tag, False),
    "FETCH": lambda cur, tag: _parse_fetch(cur, tag, False),
    "STORE": lambda cur, tag: _parse_store(cur, tag, False),
    "COPY": lambda cur, tag: _parse_copy_move(c.Copy)(cur, tag, False),
    "MOVE": lambda cur, tag: _parse_copy_move(c.Move)(cur, tag, False),
    "GETQUOTA": _parse_getquota,
    "GETQUOTAROOT": _one_mailbox(c.GetQuotaRoot),
    "SETQUOTA": _parse_setquota,
    "COMPRESS": _parse_compress,
    "CANCELUPDATE": _parse_cancelupdate,
    "NOTIFY": _parse_notify,
}
_UID: dict[str, Callable[[_Cursor, str, bool], c.Command]] = {
    "SEARCH": _parse_search,
    "SORT": _parse_sort,
    "THREAD": _parse_thread,
    "FETCH": _parse_fetch,
    "STORE": _parse_store,
    "COPY": _parse_copy_move(c.Copy),
    "MOVE": _parse_copy_move(c.Move),
    "EXPUNGE": _parse_uid_expunge,
}


def parse_command(parts: list[bytes], *, max_depth: int = 32, utf8: bool = False) -> c.Command:
    """One complete command (its lines and literals) to a Command, or ImapParseError; ``utf8``: mailbox
    names in UTF-8 (``ImapReceiver.utf8``)."""
    cur = _Cursor(parts, max_depth, utf8)
    if cur.peek() is None and len(parts) == 1:
        raise cur.error("Empty command line")
    tag_bytes = cur.chars(c.TAG_CHARS, "a tag")
    cur.tag = tag_bytes.decode("ascii")
    cur.sp()
    name = cur.chars(_FETCH_NAME, "a command name").decode().upper()
    try:
        if name == "UID":
            cur.sp()
            sub = cur.chars(_FETCH_NAME, "a UID command").decode().upper()
            if sub not in _UID:
                raise cur.error(f"Unknown UID command {sub}")
            command = _UID[sub](cur, cur.tag, True)
        elif name not in _PLAIN:
            raise cur.error(f"Unknown command {name[:40]}")
        else:
            command = _PLAIN[name](cur, cur.tag)
    except ValueError as exc:  # a constructor refused the values
        raise cur.error(_sentence(str(exc)) or "Malformed command") from None
    if cur.bad_name is not None:
        if isinstance(command, c.List | c.Lsub):  # a reference, not a mailbox: a syntax error
            raise cur.error(cur.bad_name)
        raise InvalidMailboxName(
            cur.bad_name, tag=command.tag, command=type(command), uid=bool(getattr(command, "uid", False))
        )
    return command


def parse(data: bytes, **limits: int) -> list[c.Command]:
    """Every complete command in ``data`` (synchronising literals taken as already accepted): tests, tools."""
    receiver = ImapReceiver(**limits)
    receiver.feed(data)
    out: list[c.Command] = []
    while True:
        event = receiver.next()
        if isinstance(event, NeedData):
            return out
        if isinstance(event, c.Command):
            out.append(event)
