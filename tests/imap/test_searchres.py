"""SEARCHRES (RFC 5182): SEARCH RETURN (SAVE) and ``$`` through real sockets and TLS with imaplib, both databases.

The saved result is UIDs: an expunge shifts the sequence numbers ``$`` stands for, never the messages;
SAVE alone answers no ESEARCH; with MIN/MAX alone only those are kept; SELECT empties it, and so
does a SEARCH SAVE answered NO; an empty ``$`` is an empty set that commands answer OK.
"""

from __future__ import annotations

import imaplib

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command


def ok(m: imaplib.IMAP4_SSL, command: str) -> list[bytes]:
    """The untagged lines of a command answered OK."""
    lines = raw_command(m, command)
    assert lines[-1].split()[1] == b"OK", lines
    return lines[:-1]


def fetched(m: imaplib.IMAP4_SSL, command: str) -> list[int]:
    """The sequence numbers a FETCH answered for."""
    return [int(x.split()[1]) for x in ok(m, command) if b" FETCH " in x]


def test_save_and_use(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"SEARCHRES" in raw_command(m, "CAPABILITY")[0].split()
    uids = [srv.deliver(user, message("a@b.test", user.address, f"msg {i}", "x")) for i in range(6)]
    m.create("Garde")
    m.select("INBOX")
    m.store("2,4,6", "+FLAGS", "(\\Flagged)")
    assert ok(m, "SEARCH RETURN (SAVE) FLAGGED") == []  # SAVE alone: no ESEARCH
    assert fetched(m, "FETCH $ (FLAGS)") == [2, 4, 6]
    assert ok(m, "SEARCH $") == [b"* SEARCH 2 4 6"]
    assert ok(m, "SEARCH NOT $") == [b"* SEARCH 1 3 5"]
    assert ok(m, "UID SEARCH UID $") == [f"* SEARCH {uids[1]} {uids[3]} {uids[5]}".encode()]
    assert ok(m, "SORT (REVERSE ARRIVAL) UTF-8 $") == [b"* SORT 6 4 2"]
    got = ok(m, "UID FETCH $ (FLAGS)")
    assert [int(x.split(b"UID ")[1].split()[0].rstrip(b")")) for x in got] == [uids[1], uids[3], uids[5]]
    # an expunge takes its message out; the others keep their place in $ under new numbers
    m.store("4", "+FLAGS", "(\\Deleted)")
    m.expunge()
    assert fetched(m, "FETCH $ (FLAGS)") == [2, 5]
    ok(m, "STORE $ +FLAGS.SILENT (\\Seen)")
    assert ok(m, "SEARCH SEEN") == [b"* SEARCH 2 5"]
    assert b"COPYUID" in raw_command(m, "COPY $ Garde")[-1]
    # with MIN and/or MAX alone, only those are kept; with COUNT or ALL, everything found
    tag_line = ok(m, "UID SEARCH RETURN (SAVE MIN) FLAGGED")
    assert tag_line[0].endswith(f"UID MIN {uids[1]}".encode())
    assert fetched(m, "FETCH $ (FLAGS)") == [2]
    ok(m, "SEARCH RETURN (MAX SAVE MIN) FLAGGED")
    assert fetched(m, "FETCH $ (FLAGS)") == [2, 5]
    ok(m, "SEARCH RETURN (SAVE COUNT MIN) ALL")
    assert fetched(m, "FETCH $ (FLAGS)") == [1, 2, 3, 4, 5]
    # a BAD SEARCH keeps the saved result; one answered NO empties it
    assert b" BAD " in raw_command(m, "SEARCH RETURN (SAVE) NOSUCHKEY")[-1]
    assert fetched(m, "FETCH $ (FLAGS)") == [1, 2, 3, 4, 5]
    assert b"NO [BADCHARSET" in raw_command(m, "SEARCH RETURN (SAVE) CHARSET ISO-8859-2 ALL")[-1]
    assert fetched(m, "FETCH $ (FLAGS)") == []


def test_empty_and_reset_by_select(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    for i in range(3):
        srv.deliver(user, message("a@b.test", user.address, f"msg {i}", "x"))
    m.select("INBOX")
    # nothing saved yet in this selection: $ is empty, and every command on it is OK with nothing done
    assert fetched(m, "FETCH $ (FLAGS)") == []
    assert ok(m, "SEARCH $") == [b"* SEARCH"]
    ok(m, "SEARCH RETURN (SAVE) ALL")
    assert fetched(m, "FETCH $ (FLAGS)") == [1, 2, 3]
    m.select("INBOX")  # RFC 5182 §2.1: SELECT starts it empty
    assert fetched(m, "FETCH $ (FLAGS)") == []
    ok(m, "SEARCH RETURN (SAVE) DELETED")
    ok(m, "STORE $ +FLAGS (\\Deleted)")
    ok(m, "UID EXPUNGE $")
    ok(m, "COPY $ INBOX")
    assert ok(m, "SEARCH DELETED") == [b"* SEARCH"]
    # $ stands alone: it is not a number of a set
    assert b" BAD " in raw_command(m, "FETCH $:3 (FLAGS)")[-1]
    assert b" BAD " in raw_command(m, "FETCH 1,$ (FLAGS)")[-1]


def test_parse_saved_result() -> None:
    (f,) = parse(b"a UID FETCH $ (FLAGS)\r\n")
    assert isinstance(f, c.Fetch) and f.seqset == c.SAVED
    (s,) = parse(b"b SEARCH RETURN (SAVE MIN) UID $ NOT $\r\n")
    assert isinstance(s, c.Search) and s.returns == ("SAVE", "MIN")
    for cmd in (f, s):
        assert parse(c.to_wire(cmd)) == [cmd]
    with pytest.raises(ImapParseError):
        parse(b"c SELECT INBOX (QRESYNC (1 2 $))\r\n")
