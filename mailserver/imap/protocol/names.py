"""Mailbox names and the patterns that match them: LIST and LSUB (RFC 3501 §5.1, §6.3.8, §6.3.9; RFC 5258).

Invariants:
- One hierarchy delimiter, ``DELIMITER`` (the store's ``mailboxes.DELIMITER``; a
  test holds them equal). ``INBOX`` is case-insensitive, alone or as a
  superior name; every other name is compared as given.
- In a pattern ``*`` matches anything and ``%`` anything but the delimiter.
- LSUB lists subscribed names that match; with ``%``, a superior name of a
  subscribed one that is not itself subscribed is listed with ``\\Noselect``
  when the pattern stops at its level (RFC 3501 §6.3.9); a name neither
  subscribed nor superior to a subscribed one is never listed.
- ``hierarchy_refusal`` refuses names a person's folder never has and a
  filesystem-minded client might abuse: empty levels, ``.`` or ``..`` levels,
  a leading ``~`` (home directory) or ``#`` (a namespace prefix, RFC 2342).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r

DELIMITER = "/"
INBOX = "INBOX"


class Listable(Protocol):
    """A mailbox as LIST sees it (``mailstore.MailboxInfo`` has this shape)."""

    @property
    def name(self) -> str: ...
    @property
    def subscribed(self) -> bool: ...
    @property
    def special_use(self) -> str | None: ...


def canonical_pattern(p: str) -> str:
    """INBOX in any case becomes INBOX, alone or as the first level."""
    if p.upper() == INBOX or p.upper().startswith(INBOX + DELIMITER):
        return INBOX + p[len(INBOX) :]
    return p


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the hierarchy delimiter."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def matcher(reference: str, pattern: str) -> re.Pattern[str]:
    """The names that ``LIST reference pattern`` asks for (the reference is prefixed, RFC 3501 §6.3.8)."""
    return pattern_regex(canonical_pattern(reference + pattern))


def superiors(name: str) -> list[str]:
    """a/b/c -> [a, a/b]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def hierarchy_refusal(name: str) -> str | None:
    """Why ``name`` cannot be created (for NO [CANNOT]), or None."""
    if name.startswith(("~", "#")):
        return f"A mailbox name cannot start with {name[0]!r}"
    levels = name.rstrip(DELIMITER).split(DELIMITER)
    if any(level in (".", "..") for level in levels):
        return "A mailbox name cannot hold a '.' or '..' level"
    return None


def _entry(kind: str, attrs: Iterable[str], name: str, utf8: bool = False) -> r.Data:
    return r.Data((r.Atom(kind), tuple(r.Atom(a) for a in attrs), DELIMITER, mutf7.wire(name, utf8)))


def root(kind: str) -> r.Data:
    """RFC 3501 §6.3.8: ``LIST "" ""`` answers the delimiter and the root, \\Noselect."""
    return r.Data((r.Atom(kind), (r.Atom("\\Noselect"),), DELIMITER, ""))


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One mailbox LIST answers: its name, attributes and whether a subscribed child stands behind it."""

    name: str
    attrs: tuple[str, ...]
    childinfo: bool = False  # RFC 5258 §3.5: listed for RECURSIVEMATCH, ("CHILDINFO" ("SUBSCRIBED"))

    @property
    def selectable(self) -> bool:
        return "\\Noselect" not in self.attrs and "\\NonExistent" not in self.attrs

    def response(self, utf8: bool = False) -> r.Data:
        out = _entry("LIST", self.attrs, self.name, utf8)
        if self.childinfo:
            return r.Data((*out.values, ("CHILDINFO", ("SUBSCRIBED",))))
        return out


def list_entries(boxes: Sequence[Listable], command: c.List) -> list[ListEntry]:
    """What LIST lists (RFC 3501 §6.3.8, RFC 5258 LIST-EXTENDED, RFC 6154 SPECIAL-USE, RFC 3348 CHILDREN).

    Every mailbox exists here (a subscription is a mailbox's column, superiors are created with it), so
    \\NonExistent is never said; with SUBSCRIBED RECURSIVEMATCH a matching mailbox that is not
    subscribed but has a subscribed descendant is listed with CHILDINFO.
    """
    names = {b.name for b in boxes}
    regexes = [matcher(command.reference, p) for p in command.patterns]
    only_subscribed = "SUBSCRIBED" in command.select_options
    only_special = "SPECIAL-USE" in command.select_options
    recursive = "RECURSIVEMATCH" in command.select_options
    subscribed = {b.name for b in boxes if b.subscribed}
    out: list[ListEntry] = []
    for b in sorted(boxes, key=lambda b: (b.name != INBOX, b.name)):
        if not any(rx.fullmatch(b.name) for rx in regexes):
            continue
        childinfo = False
        if (only_subscribed and not b.subscribed) or (only_special and not b.special_use):
            prefix = b.name + DELIMITER
            childinfo = recursive and only_subscribed and any(n.startswith(prefix) for n in subscribed)
            if not childinfo or (only_special and not b.special_use):
                continue
        children = any(n.startswith(b.name + DELIMITER) for n in names)
        attrs = ["\\HasChildren" if children else "\\HasNoChildren"]
        if b.special_use:
            attrs.append(b.special_use)
        if b.subscribed and (only_subscribed or "SUBSCRIBED" in command.return_options):
            attrs.append("\\Subscribed")
        out.append(ListEntry(b.name, tuple(attrs), childinfo))
    return out


def list_responses(boxes: Sequence[Listable], command: c.List, *, utf8: bool = False) -> list[r.Response]:
    """The untagged LIST responses (``list_entries``; ``LIST "" ""`` answers the root); names in UTF-8 with
    ``utf8`` (``mutf7.wire``)."""
    if command.patterns == ("",) and not command.select_options:
        return [root("LIST")]
    return [e.response(utf8) for e in list_entries(boxes, command)]


def lsub_responses(boxes: Sequence[Listable], command: c.Lsub, *, utf8: bool = False) -> list[r.Response]:
    """The untagged LSUB responses (RFC 3501 §6.3.9)."""
    if command.pattern == "":
        return [root("LSUB")]
    rx = matcher(command.reference, command.pattern)
    subscribed = {b.name for b in boxes if b.subscribed}
    listed: dict[str, bool] = {}  # name -> \Noselect
    for name in sorted(subscribed):
        if rx.fullmatch(name):
            listed[name] = False
            continue
        # "%" stopped above it: its unsubscribed superiors that match stand for it, \Noselect
        for sup in superiors(name):
            if sup not in subscribed and sup not in listed and rx.fullmatch(sup):
                listed[sup] = True
    order = sorted(listed, key=lambda n: (n != INBOX, n))
    return [_entry("LSUB", ("\\Noselect",) if listed[n] else (), n, utf8) for n in order]
