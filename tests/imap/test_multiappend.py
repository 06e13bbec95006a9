"""MULTIAPPEND (RFC 3502) through real sockets and TLS, with imapclient and raw lines.

Several messages in one APPEND: all stored or none, consecutive UIDs, one ``APPENDUID uidvalidity uid-set``.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import ssl

import imapclient

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import parse
from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, imaps, message, raw_command


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def test_multiappend_stores_every_message_with_one_appenduid(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    when = dt.datetime(2026, 11, 2, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    msgs = [
        message("a@b.test", user.address, "first", "one\n"),
        {"msg": message("a@b.test", user.address, "second", "two\n"), "flags": [r"\Seen", "$Label1"]},
        {"msg": message("a@b.test", user.address, "third", "three\n"), "date": when},
    ]
    with imapclient.IMAPClient(HOST, port=srv.port("imaps"), ssl=True, ssl_context=tls_client, timeout=TIMEOUT) as m:
        m.login(user.address, support.PASSWORD)
        assert m.has_capability("MULTIAPPEND")
        reply = m.multiappend("Drafts", msgs)
        info = m.select_folder("Drafts")
        assert reply == ("OK", [f"[APPENDUID {info[b'UIDVALIDITY']} 1:3] APPEND completed".encode()])
        got = m.fetch([1, 2, 3], ["FLAGS", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
    assert [got[u][b"BODY[HEADER.FIELDS (SUBJECT)]"].strip() for u in (1, 2, 3)] == [
        b"Subject: first",
        b"Subject: second",
        b"Subject: third",
    ]
    assert set(got[2][b"FLAGS"]) - {rb"\Recent"} == {rb"\Seen", b"$Label1"}
    assert got[3][b"INTERNALDATE"].replace(tzinfo=None) == when.astimezone().replace(tzinfo=None)


def test_multiappend_is_all_or_nothing(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    patient = srv.make_patient(support.PATIENT_INS)
    m = imaps(srv, tls_client, patient)
    try:
        good = message(patient.address, patient.address, "good", "fine\n")
        # the second message claims to come from someone else: refused, and the first is not stored either
        bad = message("dr.other@b.test", patient.address, "bad", "x\n")
        lines = raw_command(m, b"APPEND INBOX " + literal(good) + b" (\\Seen) " + literal(bad))
        assert b" NO " in lines[-1], lines
        m.select("INBOX")
        assert m.search(None, "ALL")[1] == [b""]
        # an empty second message is an error of the whole command
        assert b" BAD " in raw_command(m, b"APPEND INBOX " + literal(good) + b" " + literal(b""))[-1]
        assert m.search(None, "ALL")[1] == [b""]
        # then both, UIDs following on
        lines = raw_command(m, b"APPEND INBOX " + literal(good) + b" " + literal(good))
        assert lines[-1].split(b"] ")[0].endswith(b" 1:2"), lines
    finally:
        m.logout()


def test_multiappend_into_a_missing_mailbox_is_trycreate(m: imaplib.IMAP4_SSL, user: Account) -> None:
    one = message("a@b.test", user.address, "one", "y\n")
    assert b"NO [TRYCREATE]" in raw_command(m, b"APPEND Nowhere " + literal(one) + b" " + literal(one))[-1]


def test_parse_multiappend_round_trip() -> None:
    (cmd,) = parse(b'a APPEND INBOX (\\Seen) {1+}\r\nx "02-Nov-2026 08:30:00 +0100" {2+}\r\nyz {1+}\r\nw\r\n')
    assert isinstance(cmd, c.Append) and [i.message for i in cmd.items] == [b"x", b"yz", b"w"]
    assert cmd.items[0].flags == ("\\Seen",) and cmd.items[1].date is not None and cmd.items[2].flags == ()
    assert parse(c.to_wire(cmd)) == [cmd]
