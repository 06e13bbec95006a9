"""Address lists (From, To, Cc...) as RFC 5322 §3.4 writes them, group syntax included.

Invariants:
- ``parse_addresses`` never raises and never loops: a malformed list gives
  what can be read of it, each piece once.
- A group (``name: a@x, b@y;``, or the empty ``undisclosed-recipients:;``)
  gives a ``GroupStart`` , its members, then a ``GroupEnd``: the markers
  RFC 3501 §7.4.2 asks ENVELOPE to carry. A group left open is closed at the end.
- Display names and local parts are kept as written (encoded words
  included); only quoting is removed from display names.

See Also: RFC 5322 §3.4 (address specification), §4.4 (obsolete forms); RFC 3501 §7.4.2.
"""

from __future__ import annotations

from dataclasses import dataclass

_SPECIALS = frozenset("<>,:;@")


@dataclass(frozen=True, slots=True)
class Mailbox:
    name: str | None
    route: str | None  # the obsolete source route (``@a,@b``), RFC 5322 §4.4
    local: str | None
    domain: str | None

    @property
    def address(self) -> str:
        if self.domain is None:
            return self.local or ""
        return f"{self.local or ''}@{self.domain}"


@dataclass(frozen=True, slots=True)
class GroupStart:
    name: str


@dataclass(frozen=True, slots=True)
class GroupEnd:
    pass


Item = Mailbox | GroupStart | GroupEnd


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "word", "quoted", "comment", "literal", or a special character
    text: str
    space: bool  # white space before it


def _tokens(s: str) -> list[_Tok]:
    out: list[_Tok] = []
    i, n = 0, len(s)
    space = False
    while i < n:
        ch = s[i]
        if ch in " \t\r\n":
            space = True
            i += 1
            continue
        if ch == '"':
            j, buf = i + 1, []
            while j < n and s[j] != '"':
                if s[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(s[j])
                j += 1
            out.append(_Tok("quoted", "".join(buf), space))
            i = j + 1
        elif ch == "(":
            j, depth, buf = i, 0, []
            while j < n:
                c = s[j]
                if c == "\\" and j + 1 < n:
                    buf.append(s[j + 1])
                    j += 2
                    continue
                if c == "(":
                    depth += 1
                    if depth > 1:
                        buf.append(c)
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        break
                    buf.append(c)
                else:
                    buf.append(c)
                j += 1
            out.append(_Tok("comment", "".join(buf), space))
            i = j + 1
        elif ch == "[":
            j = s.find("]", i)
            j = n - 1 if j < 0 else j
            out.append(_Tok("literal", s[i : j + 1], space))
            i = j + 1
        elif ch in _SPECIALS:
            out.append(_Tok(ch, ch, space))
            i += 1
        else:
            j = i
            while j < n and s[j] not in _SPECIALS and s[j] not in ' \t\r\n"([':
                j += 1
            out.append(_Tok("word", s[i:j], space))
            i = j
        space = False
    return out


def _phrase(toks: list[_Tok]) -> str | None:
    words: list[str] = []
    for t in toks:
        if t.kind == "comment":
            continue
        if words and t.space:
            words.append(" ")
        words.append(t.text)
    text = "".join(words).strip()
    return text or None


def _spec(toks: list[_Tok]) -> str:
    out: list[str] = []
    for t in toks:
        if t.kind == "comment":
            continue
        if t.kind == "quoted":
            out.append('"' + t.text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(t.text)
    return "".join(out)


def _mailbox(name: str | None, route: str | None, spec: str) -> Mailbox | None:
    if not spec and not name:
        return None
    local, at, domain = spec.rpartition("@")
    if not at:
        return Mailbox(name, route, spec or None, None)
    return Mailbox(name, route, local or None, domain or None)


def _flush(toks: list[_Tok]) -> Mailbox | None:
    """One mailbox from its tokens: ``phrase <route:addr>`` or ``addr (comment)``."""
    if not toks:
        return None
    lt = next((i for i, t in enumerate(toks) if t.kind == "<"), None)
    if lt is None:
        comments = [t.text for t in toks if t.kind == "comment"]
        name = " ".join(comments).strip() or None
        return _mailbox(name, None, _spec(toks))
    gt = next((i for i in range(lt + 1, len(toks)) if toks[i].kind == ">"), len(toks))
    inner = toks[lt + 1 : gt]
    route = None
    colon = next((i for i, t in enumerate(inner) if t.kind == ":"), None)
    if colon is not None:
        route = _spec(inner[:colon]) or None
        inner = inner[colon + 1 :]
    name = _phrase(toks[:lt])
    return _mailbox(name, route, _spec(inner))


def parse_addresses(value: str) -> list[Item]:
    """The items of an address list, in order, group markers included."""
    toks = _tokens(value)
    out: list[Item] = []
    current: list[_Tok] = []
    in_group = False
    in_angle = False

    def flush() -> None:
        m = _flush(current)
        if m is not None:
            out.append(m)
        current.clear()

    for t in toks:
        if in_angle:
            current.append(t)
            if t.kind == ">":
                in_angle = False
            continue
        if t.kind == "<":
            in_angle = True
            current.append(t)
        elif t.kind == ",":
            flush()
        elif t.kind == ":" and not in_group:
            name = _phrase(current) or ""
            current.clear()
            out.append(GroupStart(name))
            in_group = True
        elif t.kind == ";" and in_group:
            flush()
            out.append(GroupEnd())
            in_group = False
        elif t.kind == ";":
            flush()
        else:
            current.append(t)
    flush()
    if in_group:
        out.append(GroupEnd())
    return out


def mailboxes(values: list[str]) -> list[Mailbox]:
    """Every mailbox of the given fields' values (group members included)."""
    return [m for v in values for m in parse_addresses(v) if isinstance(m, Mailbox)]
