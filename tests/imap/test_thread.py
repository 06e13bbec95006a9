"""THREAD (RFC 5256) through real sockets and TLS with imaplib, on SQLite and PostgreSQL; the two algorithms.

ORDEREDSUBJECT groups by base subject under the earliest message; REFERENCES links by References
(else In-Reply-To), keeps a dummy for a missing parent of several roots, gathers replies of one base
subject, and sorts siblings by sent date. UID THREAD answers UIDs; the search keys choose as SEARCH does.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap import thread as threads
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, raw_command

#: (subject, Message-ID, References, In-Reply-To, hour of the Date field)
MAILS = (
    ("Bilan", "a", "", "", "10:00"),
    ("Re: Bilan", "b", "<a@t>", "<a@t>", "11:00"),
    ("Agenda", "c", "", "", "09:00"),
    ("Re: Bilan", "d", "<a@t> <b@t>", "", "12:00"),
    ("RE: Bilan", "e", "", "<a@t> <x@t>", "10:30"),  # In-Reply-To only: its first id is the parent
    ("Re: Perdu", "f", "<zz@t>", "", "08:00"),  # the parent <zz@t> never arrived
    ("Re: Perdu", "g", "<zz@t>", "", "08:30"),
    ("Fwd: Agenda", "h", "", "", "13:00"),  # no references: gathered under "Agenda" by its base subject
)


def mail(subject: str, mid: str, refs: str, irt: str, hour: str) -> bytes:
    extra = (f"References: {refs}\r\n" if refs else "") + (f"In-Reply-To: {irt}\r\n" if irt else "")
    return (
        f"From: a@b.test\r\nTo: c@d.test\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 {hour}:00 +0000\r\n"
        f"Message-ID: <{mid}@t>\r\n{extra}\r\nTexte.\r\n"
    ).encode()


def thread(m: imaplib.IMAP4_SSL, command: str) -> bytes:
    lines = raw_command(m, command)
    assert lines[-1].endswith(b"OK THREAD completed") and lines[0].startswith(b"* THREAD"), lines
    return lines[0][len(b"* THREAD") :].strip()


def test_thread(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    caps = raw_command(m, "CAPABILITY")[0].split()
    assert b"THREAD=REFERENCES" in caps and b"THREAD=ORDEREDSUBJECT" in caps
    srv.deliver(user, mail("Vieux", "old", "", "", "07:00"))  # expunged below: UIDs are then seq + 1
    for spec in MAILS:
        srv.deliver(user, mail(*spec))
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Deleted)")
    m.expunge()
    assert thread(m, "THREAD REFERENCES UTF-8 ALL") == b"((6)(7))(3 8)(1 (5)(2 4))"
    assert thread(m, "THREAD ORDEREDSUBJECT UTF-8 ALL") == b"(6 7)(3 8)(1 (5)(2)(4))"
    assert thread(m, "UID THREAD REFERENCES US-ASCII ALL") == b"((7)(8))(4 9)(2 (6)(3 5))"
    # the search keys choose the messages: without 1, its dummy has one child (2) and gives way to it
    assert thread(m, "THREAD REFERENCES UTF-8 2:4") == b"(3)(2 4)"
    assert thread(m, "THREAD REFERENCES UTF-8 SUBJECT bilan NOT SUBJECT Bilan") == b""
    assert thread(m, "THREAD ORDEREDSUBJECT UTF-8 SUBJECT perdu") == b"(6 7)"
    # errors: an unknown algorithm is BAD, another charset NO [BADCHARSET]
    assert b" BAD " in raw_command(m, "THREAD COLOR UTF-8 ALL")[-1]
    assert b"NO [BADCHARSET" in raw_command(m, "THREAD REFERENCES ISO-8859-1 ALL")[-1]


def test_thread_empty_mailbox_and_not_selected(m: imaplib.IMAP4_SSL) -> None:
    assert b"Must select a mailbox first" in raw_command(m, "THREAD REFERENCES UTF-8 ALL")[-1]
    m.select("INBOX")
    assert raw_command(m, "THREAD ORDEREDSUBJECT UTF-8 ALL")[0] == b"* THREAD"


def _item(n: int, subject: str, mid: str | None, parents: tuple[str, ...] = (), minute: int = 0) -> threads.Item:
    when = dt.datetime(2026, 11, 23, 10, minute, tzinfo=dt.UTC)
    return threads.Item(n, n, when, subject, mid, parents)


def test_references_loops_duplicates_and_dummies() -> None:
    # 1 names <b> (2) its parent; 2 naming 1 its parent would be a loop; a duplicate <a> is another message
    items = [
        _item(1, "x", "<a>", ("<b>",), 1),
        _item(2, "y", "<b>", ("<a>",), 2),
        _item(3, "z", "<a>", (), 3),
    ]
    assert threads.render(threads.references(items)) == "(2 1)(3)"
    # two roots of one base subject, neither a reply: siblings under a dummy
    items = [_item(1, "Bilan", "<a>", (), 1), _item(2, "bilan", "<b>", (), 2)]
    assert threads.render(threads.references(items)) == "((1)(2))"
    # a dummy with one child is replaced by it
    assert threads.render(threads.references([_item(1, "x", "<a>", ("<gone>",))])) == "(1)"


def test_parse_thread() -> None:
    (t,) = parse(b"a UID THREAD references UTF-8 UNSEEN SINCE 1-Nov-2026\r\n")
    assert isinstance(t, c.Thread) and t.algorithm == "REFERENCES" and t.uid
    assert parse(c.to_wire(t)) == [t]
    with pytest.raises(ImapParseError):
        parse(b"b THREAD REFERENCES\r\n")


_IDS = st.sampled_from(["<a>", "<b>", "<c>", "<d>", "<e>"])
_ITEMS = st.lists(
    st.tuples(
        st.sampled_from(["Bilan", "Re: Bilan", "Fwd: bilan", "Agenda", "", "[x] Re: Agenda"]),
        st.none() | _IDS,
        st.lists(_IDS, max_size=4).map(tuple),
        st.integers(0, 59),
    ),
    max_size=12,
)


@given(_ITEMS, st.sampled_from(threads.ALGORITHMS))
def test_every_message_once_whatever_the_headers(
    specs: list[tuple[str, str | None, tuple[str, ...], int]], algo: str
) -> None:
    """Loops, duplicate and missing ids, shared subjects: each message is in the answer exactly once."""
    items = [_item(n, subject, mid, parents, minute) for n, (subject, mid, parents, minute) in enumerate(specs, 1)]
    rendered = threads.render(threads.thread(algo, items))
    numbers = [int(x) for x in re.findall(r"[0-9]+", rendered)]
    assert sorted(numbers) == list(range(1, len(items) + 1))
    assert "()" not in rendered
