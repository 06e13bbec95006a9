"""ESEARCH (RFC 4731): SEARCH RETURN (MIN MAX COUNT ALL) through real sockets and TLS with imaplib.

The answer is one ``* ESEARCH (TAG "tag") [UID] ...`` line naming the command it answers;
``RETURN ()`` means ALL; with nothing found only COUNT 0 is said.
"""

from __future__ import annotations

import imaplib

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command


def esearch(m: imaplib.IMAP4_SSL, command: str) -> tuple[bytes, bytes]:
    """(the ESEARCH line with its TAG part removed, the tagged line), after checking the tag it names."""
    lines = raw_command(m, command)
    tag = lines[-1].split()[0]
    assert lines[-1].endswith(b"OK SEARCH completed") and len(lines) == 2, lines
    prefix = b'* ESEARCH (TAG "' + tag + b'")'
    assert lines[0].startswith(prefix), lines
    return lines[0][len(prefix) :].strip(), lines[-1]


def test_esearch_min_max_count_all(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"ESEARCH" in raw_command(m, "CAPABILITY")[0].split()
    uids = [srv.deliver(user, message("a@b.test", user.address, f"msg {i}", "x")) for i in range(6)]
    m.select("INBOX")
    m.store("2:4,6", "+FLAGS", "(\\Flagged)")
    assert esearch(m, "SEARCH RETURN (MIN MAX COUNT) FLAGGED")[0] == b"MIN 2 MAX 6 COUNT 4"
    assert esearch(m, "SEARCH RETURN (ALL) FLAGGED")[0] == b"ALL 2:4,6"
    assert esearch(m, "SEARCH RETURN () FLAGGED")[0] == b"ALL 2:4,6"  # () is ALL
    got = esearch(m, "UID SEARCH RETURN (COUNT ALL) CHARSET UTF-8 UNFLAGGED")[0]
    assert got == f"UID COUNT 2 ALL {uids[0]},{uids[4]}".encode()
    assert esearch(m, "SEARCH RETURN (MIN MAX ALL COUNT) DELETED")[0] == b"COUNT 0"
    assert esearch(m, "SEARCH RETURN (MIN) DELETED")[0] == b""
    # with a MODSEQ key the highest mod-sequence comes last (RFC 7162 §3.1.5)
    assert esearch(m, "SEARCH RETURN (COUNT) MODSEQ 1")[0].startswith(b"COUNT 6 MODSEQ ")
    # an option nobody defined is a syntax error (SAVE is SEARCHRES's: tests/imap/test_searchres.py)
    assert b" BAD " in raw_command(m, "SEARCH RETURN (KEEP) ALL")[-1]
    # a plain SEARCH still answers SEARCH
    assert raw_command(m, "SEARCH FLAGGED")[0] == b"* SEARCH 2 3 4 6"


def test_parse_search_return() -> None:
    (s,) = parse(b"a UID SEARCH RETURN (MIN COUNT) CHARSET UTF-8 ALL\r\n")
    assert isinstance(s, c.Search) and s.returns == ("MIN", "COUNT") and s.charset == "UTF-8" and s.uid
    assert parse(c.to_wire(s)) == [s]
    with pytest.raises(ImapParseError):
        parse(b"b SEARCH RETURN (PARTIAL 0:10) ALL\r\n")  # positions start at 1 (RFC 5267 §4.4)
