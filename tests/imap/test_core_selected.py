"""The selected-mailbox view alone (protocol.selected): snapshots and changes in, untagged responses out.

- Sequence sets resolve against the view: ``1:*`` on an empty mailbox matches
  nothing, a number past the end is an error.
- Changes become EXPUNGE (highest first), FETCH FLAGS and EXISTS/RECENT; EXPUNGE
  is held back for FETCH, STORE and SEARCH but not their UID forms.
- A keyword is announced in FLAGS and PERMANENTFLAGS before the first FETCH
  that carries it, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.selected import Selected, SequenceError, expunge_allowed, flag_atoms

SEEN = frozenset({"\\Seen"})
NONE: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Changes:
    changed: list[tuple[int, frozenset[str]]]
    expunged: list[int]
    modseq: int
    uidnext: int
    recent: frozenset[int] = frozenset()
    modseqs: dict[int, int] = field(default_factory=dict)


def view(flags: dict[int, frozenset[str]], *, recent: tuple[int, ...] = (), readonly: bool = False) -> Selected:
    return Selected(
        mailbox_id=7,
        name="INBOX",
        uidvalidity=100,
        uidnext=max(flags, default=0) + 1,
        messages=flags.items(),
        recent=recent,
        modseq=10,
        readonly=readonly,
    )


def wire(responses: list[r.Response]) -> list[bytes]:
    return [x.to_bytes().rstrip(b"\r\n") for x in responses]


def seqset(text: str) -> c.SequenceSet:
    return c.SequenceSet.parse(text)


def test_resolve_sequence_numbers_and_uids() -> None:
    sel = view({3: NONE, 5: SEEN, 9: NONE})
    assert sel.resolve(seqset("1:*"), uid=False) == [(1, 3), (2, 5), (3, 9)]
    assert sel.resolve(seqset("*"), uid=False) == [(3, 9)]
    assert sel.resolve(seqset("5:9"), uid=True) == [(2, 5), (3, 9)]
    assert sel.resolve(seqset("100:*"), uid=True) == [(3, 9)]  # RFC 3501: n:* always holds the last UID
    with pytest.raises(SequenceError, match="No message with sequence number 4 \\(the mailbox has 3\\)"):
        sel.resolve(seqset("2,4"), uid=False)


def test_one_to_star_on_an_empty_mailbox_matches_nothing() -> None:
    sel = view({})
    assert sel.resolve(seqset("1:*"), uid=False) == []
    assert sel.resolve(seqset("*:1"), uid=False) == []
    assert sel.resolve(seqset("1:*"), uid=True) == []
    with pytest.raises(SequenceError, match="no message for \\*"):
        sel.resolve(seqset("*"), uid=False)  # RFC 9051 §9: "*" of an empty mailbox is BAD
    with pytest.raises(SequenceError, match="sequence number 1 "):
        sel.resolve(seqset("1"), uid=False)
    with pytest.raises(SequenceError, match="sequence number 2 "):
        sel.resolve(seqset("2:*"), uid=False)


def test_select_responses() -> None:
    sel = view({1: SEEN, 2: frozenset({"$Label1"}), 4: frozenset({"\\Seen", "urgent"})}, recent=(4,))
    assert wire(sel.select_responses("a1", "SELECT")) == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 urgent)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Label1 urgent \\*)] Flags permitted",
        b"* 3 EXISTS",
        b"* 1 RECENT",
        b"* OK [UNSEEN 2] Message 2 is the first unseen",
        b"* OK [UIDVALIDITY 100] UIDs valid",
        b"* OK [UIDNEXT 5] Predicted next UID",
        b"* OK [HIGHESTMODSEQ 10] Highest mod-sequence",
        b"a1 OK [READ-WRITE] SELECT completed",
    ]
    ro = view({1: SEEN}, readonly=True)
    out = wire(ro.select_responses("a2", "EXAMINE"))
    assert b"* OK [PERMANENTFLAGS ()] No permanent flags in a read-only mailbox" in out
    assert out[-1] == b"a2 OK [READ-ONLY] EXAMINE completed" and not any(b"UNSEEN" in x for x in out)


def test_changes_become_expunge_fetch_and_exists() -> None:
    sel = view({3: NONE, 5: NONE, 9: NONE, 12: NONE})
    ch = Changes(
        changed=[(9, SEEN), (15, NONE), (16, SEEN)], expunged=[3, 12], modseq=20, uidnext=17, recent=frozenset({16})
    )
    assert wire(sel.apply(ch, allow_expunge=True)) == [
        b"* 4 EXPUNGE",  # highest first: each number is right when the client reads it
        b"* 1 EXPUNGE",
        b"* 2 FETCH (UID 9 FLAGS (\\Seen))",
        b"* 4 EXISTS",
        b"* 1 RECENT",
    ]
    assert sel.uids == [5, 9, 15, 16] and sel.modseq == 20 and sel.uidnext == 17
    assert sel.apply(Changes([], [], 20, 17), allow_expunge=True) == []  # nothing new, nothing said


def test_expunge_is_held_back_during_fetch_store_and_search() -> None:
    for command in (
        c.Fetch("a", items=(c.FetchAttr("FLAGS"),)),
        c.Store("a", flags=("\\Seen",), mode="+"),
        c.Search("a"),
    ):
        assert not expunge_allowed(command)
    for command in (
        c.Fetch("a", items=(c.FetchAttr("FLAGS"),), uid=True),
        c.Store("a", flags=("\\Seen",), mode="+", uid=True),
        c.Search("a", uid=True),
        c.Noop("a"),
        c.Expunge("a"),
        c.Copy("a", "Sent"),
    ):
        assert expunge_allowed(command)
    sel = view({3: NONE, 5: NONE})
    ch = Changes(changed=[(5, SEEN)], expunged=[3], modseq=11, uidnext=6)
    assert sel.apply(ch, allow_expunge=False) == [sel.flag_fetch(5)]
    assert sel.uids == [3, 5] and sel.pending_expunge == {3}
    assert sel.resolve(seqset("1"), uid=False) == [(1, 3)]  # numbers stay valid until EXPUNGE is sent
    assert sel.live([(1, 3), (2, 5)]) == {5: 2}  # but the message is not worked on
    assert sel.deleted() == []
    assert wire(sel.apply(Changes([], [], 11, 6), allow_expunge=True)) == [b"* 1 EXPUNGE"]
    assert sel.uids == [5] and sel.pending_expunge == set()


def test_flags_of_a_message_pending_expunge_are_not_reported() -> None:
    sel = view({3: NONE, 5: NONE})
    sel.apply(Changes([], [3], 11, 6), allow_expunge=False)
    assert sel.apply(Changes([(3, SEEN)], [], 12, 6), allow_expunge=False) == []


def test_a_new_keyword_is_announced_before_the_fetch_that_carries_it() -> None:
    sel = view({1: SEEN, 2: frozenset({"old"})})
    sel.select_responses("a", "SELECT")
    sel.set_flags(1, frozenset({"\\Seen", "fresh"}))
    out = wire(sel.announce([sel.flag_fetch(1), sel.flag_fetch(2), r.Tagged("b", "OK", "STORE completed")]))
    assert out == [
        b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft fresh old)",
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft fresh old \\*)] Flags permitted",
        b"* 1 FETCH (UID 1 FLAGS (\\Seen fresh))",
        b"* 2 FETCH (UID 2 FLAGS (old))",
        b"b OK STORE completed",
    ]
    assert wire(sel.announce([sel.flag_fetch(1)])) == [b"* 1 FETCH (UID 1 FLAGS (\\Seen fresh))"]  # once


def test_a_keyword_from_another_session_is_announced_too() -> None:
    sel = view({1: NONE})
    sel.select_responses("a", "SELECT")
    news = sel.apply(Changes([(1, frozenset({"$Done"}))], [], 11, 2), allow_expunge=True)
    out = wire(sel.announce(news))
    assert out[0].startswith(b"* FLAGS (") and b"$Done" in out[0] and b"$Done" in out[1]
    assert out[2] == b"* 1 FETCH (UID 1 FLAGS ($Done))"


def test_flag_atoms_order_and_recent() -> None:
    assert flag_atoms(frozenset({"b", "\\Seen", "a"}), True) == (
        r.Atom("\\Recent"),
        r.Atom("\\Seen"),
        r.Atom("a"),
        r.Atom("b"),
    )


keywords = st.sampled_from(["$Label1", "urgent", "todo", "\\Seen", "\\Deleted", "\\Flagged"])
flagsets = st.frozensets(keywords, max_size=4)


@given(
    start=st.dictionaries(st.integers(1, 40), flagsets, max_size=12),
    rounds=st.lists(
        st.tuples(
            st.dictionaries(st.integers(1, 60), flagsets, max_size=6), st.sets(st.integers(1, 60)), st.booleans()
        ),
        max_size=6,
    ),
)
def test_every_fetch_keyword_was_announced_and_numbers_agree(
    start: dict[int, frozenset[str]], rounds: list[tuple[dict[int, frozenset[str]], set[int], bool]]
) -> None:
    """Whatever the store reports, the client's picture (replayed from the responses) matches the view."""
    sel = view(start)
    told = set(sel.keywords())
    sel.select_responses("a", "SELECT")
    client = list(sel.uids)  # the client's idea of the mailbox, by sequence number
    modseq = 10
    for changed, expunged, allow in rounds:
        modseq += 1
        ch = Changes(sorted(changed.items()), sorted(expunged), modseq, 100)
        for resp in sel.announce(sel.apply(ch, allow_expunge=allow)):
            data = resp.to_bytes()
            if data.startswith(b"* FLAGS "):
                told |= {a.text for a in resp.values[1]}  # type: ignore[attr-defined, union-attr]
            elif isinstance(resp, r.FetchData):
                uid = dict(resp.items)["UID"]
                assert client[resp.seq - 1] == uid
                shown = {a.text for a in dict(resp.items)["FLAGS"]}  # type: ignore[union-attr]
                assert {f for f in shown if not f.startswith("\\")} <= told
            elif data.endswith(b" EXPUNGE\r\n"):
                assert allow
                del client[int(data.split()[1]) - 1]
            elif data.endswith(b" EXISTS\r\n"):
                n = int(data.split()[1])
                client += [u for u in sel.uids if u not in client][: n - len(client)]
                assert len(client) == n
        assert client == sel.uids
