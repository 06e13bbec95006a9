"""ESORT (RFC 5267 §3) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

SORT RETURN answers one ESEARCH in sort order: MIN and MAX are the first and the last sorted, ALL keeps
the order; RETURN (SAVE) keeps the result for ``$`` (RFC 5182).
"""

from __future__ import annotations

import imaplib

import pytest

from mailserver.imap.esort import ordered_set
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, raw_command


def mail(sender: str, rcpt: str, size: int) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: s\r\n\r\n{'x' * size}\r\n".encode()


def esort(m: imaplib.IMAP4_SSL, command: str) -> bytes:
    lines = raw_command(m, command)
    tag = lines[-1].split()[0]
    assert lines[-1].endswith(b"OK SORT completed") and len(lines) == 2, lines
    prefix = b'* ESEARCH (TAG "' + tag + b'")'
    assert lines[0].startswith(prefix), lines
    return lines[0][len(prefix) :].strip()


def test_esort(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"ESORT" in raw_command(m, "CAPABILITY")[0].split()
    for size in (40, 10, 30, 20):
        srv.deliver(user, mail("a@b.test", "c@d.test", size))
    m.select("INBOX")
    # by size the order is 2 4 3 1
    assert esort(m, "SORT RETURN (MIN MAX COUNT) (SIZE) UTF-8 ALL") == b"MIN 2 MAX 1 COUNT 4"
    assert esort(m, "SORT RETURN (ALL) (SIZE) UTF-8 ALL") == b"ALL 2,4,3,1"
    assert esort(m, "SORT RETURN () (REVERSE ARRIVAL) UTF-8 ALL") == b"ALL 4,3,2,1"
    assert esort(m, "SORT RETURN (ALL) (ARRIVAL) UTF-8 2:4") == b"ALL 2:4"
    uids = [int(x) for x in m.uid("SEARCH", "ALL")[1][0].split()]
    assert esort(m, "UID SORT RETURN (MIN COUNT) (SIZE) UTF-8 ALL") == f"UID MIN {uids[1]} COUNT 4".encode()
    assert esort(m, "SORT RETURN (COUNT ALL) (SIZE) UTF-8 LARGER 1000") == b"COUNT 0"
    # SAVE: alone no ESEARCH; with MIN alone only the first sorted is kept
    assert raw_command(m, "SORT RETURN (SAVE) (SIZE) UTF-8 OR 1 3")[0].endswith(b"OK SORT completed")
    assert raw_command(m, "SEARCH $")[0] == b"* SEARCH 1 3"
    assert esort(m, "SORT RETURN (SAVE MIN) (REVERSE SIZE) UTF-8 ALL") == b"MIN 1"
    assert raw_command(m, "SEARCH $")[0] == b"* SEARCH 1"
    assert b" BAD " in raw_command(m, "SORT RETURN (PARTIAL 1:2 ALL) (SIZE) UTF-8 ALL")[-1]  # RFC 5267 §4.4


def test_ordered_set_and_parse() -> None:
    assert ordered_set([2, 3, 4, 9, 1, 5, 6]) == "2:4,9,1,5:6"
    assert ordered_set([]) == ""
    (s,) = parse(b"a UID SORT RETURN (MIN ALL) (DISPLAYFROM REVERSE DISPLAYTO) UTF-8 ALL\r\n")
    assert isinstance(s, c.Sort) and s.returns == ("MIN", "ALL") and s.criteria[1] == (True, "DISPLAYTO")
    assert parse(c.to_wire(s)) == [s]
    with pytest.raises(ImapParseError):
        parse(b"b SORT RETURN (MIN) UTF-8 ALL\r\n")
