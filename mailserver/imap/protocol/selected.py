"""The selected mailbox as one session shows it, and the untagged news it owes the client (pymap ``selected.py``).

Implementation notes (invariants):
- A ``Selected`` is this session's snapshot: the UIDs it has announced, in
  order (a message's sequence number is its position, RFC 3501 §2.3.1.2),
  their flags, the \\Recent ones, the keywords announced in FLAGS and the
  modseq the snapshot reflects. Only this module changes it.
- ``apply(changes, allow_expunge=...)`` diffs the store's news after that modseq
  against the snapshot into ``* n EXPUNGE`` (highest first, so that each number
  is right when it is read), ``* n FETCH (UID u FLAGS (...))`` and ``* n EXISTS``
  / ``* n RECENT`` (RFC 3501 §5.2, §7.3.1, §7.4.1).
- EXPUNGE hold-back: while answering FETCH, STORE or SEARCH (not their UID
  forms) no EXPUNGE is sent (RFC 3501 §7.4.1, RFC 9051 §7.5.1); the UIDs wait
  in ``pending_expunge`` and their numbers stay valid until a later command.
  A message pending expunge gets no flag update and is not copied or stored.
- Keywords are announced: before any FETCH response whose FLAGS carry a
  keyword the client was not told of, ``announce`` puts an untagged ``FLAGS``
  and ``OK [PERMANENTFLAGS ...]`` listing it (RFC 3501 §7.2.6, RFC 9051 §7.3.5).
- A sequence set names messages of the snapshot: a number beyond it is BAD;
  ``1:*`` on an empty mailbox matches nothing (RFC 9051 asks for OK), ``*``
  alone on an empty one is BAD (RFC 9051 §9, seq-number).
- RFC 7162: ``modseqs`` holds each known message's mod-sequence (from SELECT's
  snapshot, then from every change applied or made by this session). With
  ``condstore`` every FETCH of flags carries ``MODSEQ (n)``, and a new
  mod-sequence alone is news; with ``qresync`` removals are one
  ``* VANISHED uid-set`` instead of EXPUNGE responses (same hold-back).
  SELECT always says ``HIGHESTMODSEQ`` (at least 1).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r

#: RFC 3501 §2.3.2: a client may create keywords (``\\*``)
PERMANENT_FLAGS = (*c.SYSTEM_FLAGS, "\\*")


class SequenceError(ValueError):
    """A sequence set that names a message the session does not know: answered BAD."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ChangeSet(Protocol):
    """What changed in the mailbox after the session's modseq (``mailstore.Changes`` has this shape)."""

    @property
    def changed(self) -> Sequence[tuple[int, frozenset[str]]]: ...  # (uid, flags), new messages included
    @property
    def expunged(self) -> Sequence[int]: ...
    @property
    def modseq(self) -> int: ...
    @property
    def uidnext(self) -> int: ...
    @property
    def recent(self) -> frozenset[int]: ...
    @property
    def modseqs(self) -> Mapping[int, int]: ...  # uid -> mod-sequence of the changed messages


def flag_atoms(flags: frozenset[str], recent: bool) -> tuple[r.Atom, ...]:
    """A FLAGS list: system flags first, then keywords; ``\\Recent`` when the session holds it."""
    shown = flags | {c.RECENT} if recent else flags
    return tuple(r.Atom(f) for f in sorted(shown, key=lambda f: (not f.startswith("\\"), f)))


def expunge_allowed(command: c.Command) -> bool:
    """RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH; their UID forms are exempt."""
    if isinstance(command, c.Fetch | c.Store | c.Search | c.Sort | c.Thread):
        return command.uid
    return True


def _keywords(flags: Iterable[str]) -> set[str]:
    return {f for f in flags if not f.startswith("\\")}


class Selected:
    """This session's view of its selected mailbox."""

    def __init__(
        self,
        *,
        mailbox_id: int,
        name: str,
        uidvalidity: int,
        uidnext: int,
        messages: Iterable[tuple[int, frozenset[str]]],
        recent: Iterable[int],
        modseq: int,
        readonly: bool,
        modseqs: Mapping[int, int] | None = None,
    ) -> None:
        self.id = mailbox_id
        self.name = name
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.readonly = readonly
        self.flags: dict[int, frozenset[str]] = dict(messages)
        self.uids: list[int] = sorted(self.flags)
        self.recent: set[int] = set(recent) & set(self.flags)
        self.modseq = modseq
        self.pending_expunge: set[int] = set()
        self.announced: set[str] = set()  # keywords the client was told of in FLAGS
        self.modseqs: dict[int, int] = dict(modseqs or {})  # uid -> mod-sequence (RFC 7162)
        self.condstore = False  # CONDSTORE enabled: unsolicited FETCH carry MODSEQ
        self.qresync = False  # QRESYNC enabled: VANISHED instead of EXPUNGE
        self.rev2 = False  # IMAP4rev2 enabled: no \\Recent, no RECENT, no UNSEEN code, a LIST in SELECT

    # --- numbers -------------------------------------------------------------------------------------------

    def seq(self, uid: int) -> int:
        """The sequence number of ``uid``, 0 if the session does not know it."""
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def resolve(self, seqset: c.SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of the set, in order. Raises SequenceError for sequence numbers out of range."""
        if uid:
            if not self.uids:
                return []
            chosen = seqset.select(self.uids, self.uids[-1])
            return [(self.seq(u), u) for u in chosen]
        n = len(self.uids)
        for lo, hi in seqset.ranges:
            if n == 0 and lo == hi == c.STAR:
                raise SequenceError("The mailbox is empty: there is no message for *")
            ranged = c.STAR in (lo, hi) and lo != hi
            for x in (lo, hi):
                # RFC 9051: 1:* matches nothing in an empty mailbox; a number past the end is an error
                if x != c.STAR and x > n and not (ranged and x == 1):
                    raise SequenceError(f"No message with sequence number {x} (the mailbox has {n})")
        if n == 0:
            return []
        return [(s, self.uids[s - 1]) for s in seqset.select(range(1, n + 1), n)]

    def live(self, pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
        """uid -> seq of those of ``pairs`` not waiting to be expunged."""
        return {u: s for s, u in pairs if u not in self.pending_expunge}

    def deleted(self) -> list[int]:
        """UIDs carrying \\Deleted (what EXPUNGE and CLOSE remove), pending expunges left out."""
        return [u for u in self.uids if "\\Deleted" in self.flags[u] and u not in self.pending_expunge]

    def first_unseen(self) -> int | None:
        return next((i + 1 for i, u in enumerate(self.uids) if "\\Seen" not in self.flags[u]), None)

    def keywords(self) -> list[str]:
        kws: set[str] = set()
        for fs in set(self.flags.values()):
            kws |= _keywords(fs)
        return sorted(kws)

    # --- SELECT ---------------------------------------------------------------------------------------------

    def flags_responses(self) -> list[r.Response]:
        """``* FLAGS`` and ``* OK [PERMANENTFLAGS]`` listing every keyword announced (RFC 3501 §7.2.6)."""
        flags = (*c.SYSTEM_FLAGS, *sorted(self.announced))
        permanent = "" if self.readonly else " ".join((*c.SYSTEM_FLAGS, *sorted(self.announced), "\\*"))
        return [
            r.Data((r.Atom("FLAGS"), r.flag_list(flags))),
            r.Untagged(
                "OK",
                "Flags permitted" if not self.readonly else "No permanent flags in a read-only mailbox",
                f"PERMANENTFLAGS ({permanent})",
            ),
        ]

    def select_responses(self, tag: str, command_name: str, *, utf8: bool = False) -> list[r.Response]:
        """What SELECT / EXAMINE answer (RFC 3501 §6.3.1, with errata 3032 for UNSEEN; RFC 9051 §6.3.2 under
        IMAP4rev2: a LIST with the mailbox's name as the server spells it, no RECENT, no UNSEEN)."""
        self.announced = set(self.keywords())
        if self.rev2:
            self.recent.clear()
            listed = r.Data((r.Atom("LIST"), (), "/", mutf7.wire(self.name, utf8)))
            out = [*self.flags_responses(), r.exists(len(self.uids)), listed]
        else:
            out = [*self.flags_responses(), r.exists(len(self.uids)), r.recent(len(self.recent))]
            unseen = self.first_unseen()
            if unseen is not None:
                out.append(r.Untagged("OK", f"Message {unseen} is the first unseen", f"UNSEEN {unseen}"))
        out += [
            r.Untagged("OK", "UIDs valid", f"UIDVALIDITY {self.uidvalidity}"),
            r.Untagged("OK", "Predicted next UID", f"UIDNEXT {self.uidnext}"),
            r.Untagged("OK", "Highest mod-sequence", f"HIGHESTMODSEQ {self.highest_modseq()}"),
            r.Tagged(tag, "OK", f"{command_name} completed", "READ-ONLY" if self.readonly else "READ-WRITE"),
        ]
        return out

    def highest_modseq(self) -> int:
        """HIGHESTMODSEQ as the client is told it (RFC 7162 §3.1.2.1: a mod-sequence is at least 1)."""
        return max(1, self.modseq)

    # --- keeping the view --------------------------------------------------------------------------------

    def remove(self, uids: Iterable[int]) -> list[r.Response]:
        """Forget ``uids`` and say so: EXPUNGE responses, highest first so that each number is right;
        once QRESYNC is enabled one ``VANISHED`` with their UIDs (RFC 7162 §3.2.10)."""
        out: list[r.Response] = []
        gone: list[int] = []
        for uid in sorted(set(uids), reverse=True):
            s = self.seq(uid)
            if s:
                del self.uids[s - 1]
                self.flags.pop(uid, None)
                self.modseqs.pop(uid, None)
                self.recent.discard(uid)
                out.append(r.expunge(s))
                gone.append(uid)
            self.pending_expunge.discard(uid)
        if self.qresync:
            return [vanished(gone)] if gone else []
        return out

    def set_flags(self, uid: int, flags: frozenset[str]) -> None:
        """This session changed (STORE) or saw (FETCH setting \\Seen) the flags of a message it knows."""
        if uid in self.flags:
            self.flags[uid] = flags

    def flag_fetch(self, uid: int, *, with_uid: bool = True) -> r.FetchData:
        """``* n FETCH ([UID u] FLAGS (...))`` for a message of the view."""
        items: list[tuple[str, r.Value]] = [("FLAGS", flag_atoms(self.flags[uid], uid in self.recent))]
        if with_uid:
            items.insert(0, ("UID", uid))
        if self.condstore:  # RFC 7162 §3.1.2: every FETCH of a flag change carries MODSEQ
            items.append(("MODSEQ", (self.modseqs.get(uid, 1),)))
        return r.FetchData(self.seq(uid), tuple(items))

    def apply(self, ch: ChangeSet, *, allow_expunge: bool) -> list[r.Response]:
        """The untagged responses that bring the client from the view's modseq to ``ch.modseq``."""
        out: list[r.Response] = []
        known_max = self.uids[-1] if self.uids else 0
        self.pending_expunge |= {u for u in ch.expunged if u in self.flags}
        if allow_expunge and self.pending_expunge:
            out += self.remove(list(self.pending_expunge))
        new: list[tuple[int, frozenset[str]]] = []
        for uid, flags in ch.changed:
            modseq = ch.modseqs.get(uid)
            if uid > known_max:
                if uid not in self.flags:
                    new.append((uid, flags))
            elif uid in self.flags and uid not in self.pending_expunge:
                # with CONDSTORE a new mod-sequence is news even when the flags came back to what they were
                moved = self.condstore and modseq is not None and modseq != self.modseqs.get(uid)
                if self.flags[uid] != flags or moved:
                    self.flags[uid] = flags
                    if modseq is not None:
                        self.modseqs[uid] = modseq
                    out.append(self.flag_fetch(uid))
            if modseq is not None and uid in self.flags:
                self.modseqs[uid] = modseq
        if new:
            for uid, flags in sorted(new):
                self.uids.append(uid)
                self.flags[uid] = flags
                if uid in ch.modseqs:
                    self.modseqs[uid] = ch.modseqs[uid]
            out.append(r.exists(len(self.uids)))
            if not self.rev2:  # RFC 9051 has no \\Recent
                self.recent |= set(ch.recent) & set(self.flags)
                out.append(r.recent(len(self.recent)))
        self.modseq = max(self.modseq, ch.modseq)
        self.uidnext = max(self.uidnext, ch.uidnext)
        return out

    def announce(self, responses: Sequence[r.Response]) -> list[r.Response]:
        """``responses`` with FLAGS / PERMANENTFLAGS put before the first FETCH carrying a new keyword."""
        out: list[r.Response] = []
        for resp in responses:
            if isinstance(resp, r.FetchData):
                fresh: set[str] = set()
                for name, value in resp.items:
                    if name == "FLAGS" and isinstance(value, tuple):
                        fresh |= {a.text for a in value if isinstance(a, r.Atom) and not a.text.startswith("\\")}
                fresh -= self.announced
                if fresh:
                    self.announced |= fresh
                    out += self.flags_responses()
            out.append(resp)
        return out


def vanished(uids: Iterable[int], *, earlier: bool = False) -> r.Data:
    """``* VANISHED [(EARLIER)] uid-set`` (RFC 7162 §3.2.10)."""
    words: list[r.Value] = [r.Atom("VANISHED")]
    if earlier:
        words.append(r.Atom("(EARLIER)"))
    return r.Data((*words, r.Atom(str(c.SequenceSet.of(sorted(set(uids)))))))
