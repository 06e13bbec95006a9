"""THREAD (RFC 5256 §2.1, §2.2, §4): ORDEREDSUBJECT and REFERENCES over the messages a search found.

Invariants:
- Pure: a list of ``Item`` in, a forest of ``Node`` out; the handler reads the messages
  (``handlers.do_thread``), nothing here touches the store.
- The "sent date" is the Date field's instant, the internal date when the field is
  missing or unreadable (``sort.sent_date``, as SORT DATE); ties end in sequence order.
- Base subjects are SORT's (``sort.base_subject``, RFC 5256 §2.1).
- ORDEREDSUBJECT: one thread per base subject, its earliest message the parent of
  all the others (siblings by sent date); threads ordered by their first message.
- REFERENCES follows RFC 5256 §2.2 step by step (JWZ): links from References (else
  the first id of In-Reply-To) never make a loop, a duplicate or missing Message-ID
  counts as unique, empty containers are pruned, roots of one base subject are
  merged, and siblings are sorted by sent date (a dummy by its first child's).
- ``render`` writes ``thread-list``s as RFC 5256 §4 spells them: ``(1 2 (3)(4 5))``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from mailserver.imap.messages import Candidate
from mailserver.imap.sort import base_subject, sent_date

ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
_MSG_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True, slots=True)
class Item:
    """One message as threading sees it; ``number`` is what the answer shows (sequence number or UID)."""

    number: int
    seq: int
    sent: dt.datetime
    subject: str
    message_id: str | None = None
    parents: tuple[str, ...] = ()  # References, else the first id of In-Reply-To; oldest first

    @property
    def base(self) -> str:
        return base_subject(self.subject)

    @property
    def is_reply(self) -> bool:
        """Re:, Fwd:, a [blob]... was taken off the subject (RFC 5256 §2.2 step 5.C)."""
        return self.base != " ".join(self.subject.split()).casefold()


@dataclass(eq=False)
class Node:
    """A container: a message, or a dummy (``item`` None) standing for a message referred to but not found."""

    item: Item | None = None
    children: list[Node] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    def add(self, child: Node) -> None:
        if child.parent is not None:
            child.parent.children.remove(child)
        child.parent = self
        self.children.append(child)

    def reaches(self, other: Node) -> bool:
        """``other`` is this node or one of its descendants."""
        return other is self or any(ch.reaches(other) for ch in self.children)

    def first(self) -> Item | None:
        """The message that dates and names this node: its own, else its first child's."""
        if self.item is not None:
            return self.item
        return self.children[0].first() if self.children else None


def item_of(cand: Candidate, *, uid: bool, references: bool) -> Item:
    """What threading needs of a message read with its metadata (and, for REFERENCES, its header)."""
    d = cand.data
    meta = d.meta if d is not None else None
    subject = (meta.search.get("subject") or meta.envelope.subject or "") if meta is not None else ""
    number = cand.uid if uid else cand.seq
    if not references or d is None:
        return Item(number, cand.seq, sent_date(cand), subject)
    ids = _MSG_ID.findall(meta.envelope.message_id or "") if meta is not None else []
    if d.raw is not None:
        ids = ids or _MSG_ID.findall(d.parsed.get("message-id") or "")
        parents = tuple(_MSG_ID.findall(" ".join(d.parsed.values("references"))))
        if not parents:
            parents = tuple(_MSG_ID.findall(" ".join(d.parsed.values("in-reply-to"))))[:1]
    else:
        parents = ()
    return Item(number, cand.seq, sent_date(cand), subject, ids[0] if ids else None, parents)


def _key(node: Node) -> tuple[dt.datetime, int]:
    item = node.first()
    return (item.sent, item.seq) if item is not None else (dt.datetime.min.replace(tzinfo=dt.UTC), 0)


def _sort(nodes: list[Node]) -> list[Node]:
    for n in nodes:
        n.children = _sort(n.children)
    return sorted(nodes, key=_key)


def ordered_subject(items: Iterable[Item]) -> list[Node]:
    """RFC 5256 §2.1 ORDEREDSUBJECT."""
    groups: dict[str, list[Item]] = {}
    for it in sorted(items, key=lambda i: (i.sent, i.seq)):
        groups.setdefault(it.base, []).append(it)
    roots = []
    for members in groups.values():
        root = Node(members[0])
        for it in members[1:]:
            root.add(Node(it))
        roots.append(root)
    return sorted(roots, key=_key)


def references(items: Iterable[Item]) -> list[Node]:
    """RFC 5256 §2.2 REFERENCES."""
    table: dict[str, Node] = {}
    nodes: list[Node] = []
    for it in sorted(items, key=lambda i: i.seq):
        # step 1.A: the references, each the parent of the next, unless already linked or a loop
        prev: Node | None = None
        for ref in it.parents:
            node = table.setdefault(ref, Node())
            if prev is not None and node.parent is None and not node.reaches(prev):
                prev.add(node)
            prev = node
        # step 1.B: the message itself (a duplicate or missing Message-ID counts as unique), under the last one
        own = table.get(it.message_id) if it.message_id is not None else None
        if own is None or own.item is not None:
            own = Node()
            if it.message_id is not None and it.message_id not in table:
                table[it.message_id] = own
        own.item = it
        nodes.append(own)
        if own.parent is not None:
            own.parent.children.remove(own)
            own.parent = None
        if prev is not None and not own.reaches(prev):
            prev.add(own)
    seen: set[int] = set()
    roots = []
    for n in [*table.values(), *nodes]:  # step 2: the root set
        if n.parent is None and id(n) not in seen:
            seen.add(id(n))
            roots.append(n)
    return _sort(_merge_subjects(_prune(roots, at_root=True)))


def _prune(nodes: list[Node], *, at_root: bool) -> list[Node]:
    """Step 4: dummies without children go; a dummy's children take its place, except for several at the root."""
    out: list[Node] = []
    for n in nodes:
        n.children = _prune(n.children, at_root=False)
        for ch in n.children:
            ch.parent = n
        if n.item is not None or (at_root and len(n.children) > 1):
            out.append(n)
        else:
            for ch in n.children:
                ch.parent = None
            out.extend(n.children)
    return out


def _subject_of(node: Node) -> tuple[str, bool]:
    item = node.first()
    return (item.base, item.is_reply) if item is not None else ("", False)


def _merge_subjects(roots: list[Node]) -> list[Node]:
    """Step 5: roots that share a base subject are gathered under one."""
    table: dict[str, Node] = {}
    for n in roots:
        subject, reply = _subject_of(n)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (old.item is not None and n.item is None)
            or (old.item is not None and n.item is not None and old.item.is_reply and not reply)
        ):
            table[subject] = n
    out: list[Node] = []
    gone: set[int] = set()
    for n in roots:
        subject, reply = _subject_of(n)
        kept = table.get(subject) if subject else None
        if kept is None or kept is n:
            out.append(n)
            continue
        if kept.item is None and n.item is None:
            for ch in list(n.children):
                kept.add(ch)
            gone.add(id(n))
        elif kept.item is None:
            kept.add(n)
        elif n.item is not None and reply and not kept.item.is_reply:
            kept.add(n)
        else:  # two messages, neither a reply of the other: both under a new dummy (siblings are sorted later)
            dummy = Node()
            dummy.add(kept)
            dummy.add(n)
            table[subject] = dummy
            gone.add(id(kept))
            out.append(dummy)
    return [n for n in out if id(n) not in gone]


def thread(algorithm: str, items: Iterable[Item]) -> list[Node]:
    return ordered_subject(items) if algorithm == "ORDEREDSUBJECT" else references(items)


def _members(node: Node) -> str:
    parts: list[str] = []
    n = node
    while True:
        if n.item is not None:
            parts.append(str(n.item.number))
        if len(n.children) == 1:
            n = n.children[0]
            continue
        if n.children:
            parts.append("".join(f"({_members(ch)})" for ch in n.children))
        return " ".join(parts)


def render(roots: Iterable[Node]) -> str:
    """The thread lists of an answer, run together: ``(2)(3 6 (4 23)(44 7 96))`` (RFC 5256 §4)."""
    return "".join(f"({_members(n)})" for n in roots)
