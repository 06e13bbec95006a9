"""WITHIN (RFC 5032): SEARCH OLDER / YOUNGER through real sockets and TLS with imaplib, on both databases.

The interval is measured on INTERNALDATE from the server's injected clock: advancing the clock (never
sleeping) ages every message; OLDER and YOUNGER are each other's opposite, inside OR and NOT too.
"""

from __future__ import annotations

import datetime as dt
import imaplib

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command


def search(m: imaplib.IMAP4_SSL, keys: str) -> bytes:
    lines = raw_command(m, "SEARCH " + keys)
    assert lines[-1].endswith(b"OK SEARCH completed"), lines
    return lines[0]


def test_older_younger(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"WITHIN" in raw_command(m, "CAPABILITY")[0].split()
    now = srv.clock()
    for days in (3, 1):  # messages 1 and 2: appended with internal dates 3 days and 1 day before the clock's now
        when = now - dt.timedelta(days=days)
        m.append("INBOX", None, imaplib.Time2Internaldate(when.timestamp()), message("a@b.test", "c@d.test", "x"))
    srv.deliver(user, message("a@b.test", user.address, "neuf", "x"))  # 3: now
    m.select("INBOX")
    assert search(m, "YOUNGER 3600") == b"* SEARCH 3"
    assert search(m, "OLDER 3600") == b"* SEARCH 1 2"
    assert search(m, "OLDER 172800") == b"* SEARCH 1"  # older than two days
    assert search(m, "YOUNGER 172800 OLDER 3600") == b"* SEARCH 2"
    assert search(m, "OR YOUNGER 3600 OLDER 172800") == b"* SEARCH 1 3"
    assert search(m, "NOT YOUNGER 3600") == b"* SEARCH 1 2"
    # time passes on the server's clock: two hours later nothing is younger than an hour
    srv.advance(7200)
    assert search(m, "YOUNGER 3600") == b"* SEARCH"
    assert search(m, "YOUNGER 10800") == b"* SEARCH 3"
    assert b" BAD " in raw_command(m, "SEARCH OLDER 0")[-1]
    assert b" BAD " in raw_command(m, "SEARCH YOUNGER soon")[-1]


def test_parse_within() -> None:
    (s,) = parse(b"a UID SEARCH OLDER 60 NOT YOUNGER 3600\r\n")
    assert isinstance(s, c.Search)
    assert s.key == c.SearchAnd((c.SearchWithin(True, 60), c.SearchNot(c.SearchWithin(False, 3600))))
    assert parse(c.to_wire(s)) == [s]
    with pytest.raises(ImapParseError):
        parse(b"b SEARCH OLDER\r\n")
