"""SORT (RFC 5256) through real sockets and TLS with imaplib, on SQLite and PostgreSQL; the base subject rules.

Ties end in sequence order; REVERSE turns one criterion round; the search keys choose the messages as
SEARCH does; FROM/TO/CC sort by the first address's local part, DATE by the Date field's instant.
"""

from __future__ import annotations

import datetime as dt
import imaplib

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.imap.sort import base_subject
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, raw_command


def mail(sender: str, rcpt: str, cc: str, subject: str, date: str, body: str) -> bytes:
    return (
        f"From: {sender}\r\nTo: {rcpt}\r\nCc: {cc}\r\nSubject: {subject}\r\nDate: {date}\r\n"
        f"Message-ID: <{abs(hash((subject, date)))}@t.test>\r\n\r\n{body}\r\n"
    ).encode()


def sort(m: imaplib.IMAP4_SSL, command: str) -> list[int]:
    lines = raw_command(m, command)
    assert lines[-1].endswith(b"OK SORT completed") and lines[0].startswith(b"* SORT"), lines
    return [int(x) for x in lines[0].split()[2:]]


def test_sort_criteria(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"SORT" in raw_command(m, "CAPABILITY")[0].split()
    # seq 1..4; Date order: 3, 1, 2, 4 (time zones honoured); sizes grow with the body
    srv.deliver(
        user,
        mail(
            '"Zoé" <bob@b.test>', "yann@x.test", "carl@x.test", "Re: Bilan", "Mon, 23 Nov 2026 10:00:00 +0100", "x" * 30
        ),
    )
    srv.deliver(
        user, mail("alice@a.test", "bea@x.test", "zed@x.test", "[liste] Agenda", "Mon, 23 Nov 2026 12:00:00 +0000", "x")
    )
    srv.deliver(
        user,
        mail(
            "Carole <CAROLE@c.test>", "abel@x.test", "mia@x.test", "bilan", "Mon, 23 Nov 2026 08:00:00 +0000", "x" * 90
        ),
    )
    srv.deliver(
        user,
        mail(
            "dan@d.test", "zoe@x.test", "abe@x.test", "Fwd: Courrier (fwd)", "Mon, 23 Nov 2026 07:30:00 -0500", "x" * 10
        ),
    )
    m.select("INBOX")
    assert sort(m, "SORT (ARRIVAL) UTF-8 ALL") == [1, 2, 3, 4]
    assert sort(m, "SORT (REVERSE ARRIVAL) UTF-8 ALL") == [4, 3, 2, 1]
    assert sort(m, "SORT (DATE) UTF-8 ALL") == [3, 1, 2, 4]  # 4 is 12:30Z: last, though 07:30 local
    assert sort(m, "SORT (FROM) UTF-8 ALL") == [2, 1, 3, 4]  # alice, bob, carole (case-folded), dan
    assert sort(m, "SORT (TO) UTF-8 ALL") == [3, 2, 1, 4]  # abel, bea, yann, zoe
    assert sort(m, "SORT (CC) UTF-8 ALL") == [4, 1, 3, 2]  # abe, carl, mia, zed
    assert sort(m, "SORT (SIZE) UTF-8 ALL") == [2, 4, 1, 3]
    # base subjects: agenda, bilan, bilan, courrier; the two "bilan" keep sequence order, or go REVERSE ARRIVAL
    assert sort(m, "SORT (SUBJECT) UTF-8 ALL") == [2, 1, 3, 4]
    assert sort(m, "SORT (SUBJECT REVERSE ARRIVAL) UTF-8 ALL") == [2, 3, 1, 4]
    assert sort(m, "SORT (REVERSE SUBJECT) UTF-8 ALL") == [4, 1, 3, 2]
    # the search keys pick the messages; UID SORT answers UIDs
    assert sort(m, "SORT (DATE) UTF-8 SUBJECT bilan") == [3, 1]
    m.store("2", "+FLAGS", "(\\Deleted)")
    typ, data = m.uid("SEARCH", "ALL")
    uids = [int(x) for x in data[0].split()]
    assert sort(m, "UID SORT (REVERSE SIZE) US-ASCII UNDELETED") == [uids[2], uids[0], uids[3]]
    # errors: an unknown criterion is BAD, another charset NO [BADCHARSET]
    assert b" BAD " in raw_command(m, "SORT (COLOR) UTF-8 ALL")[-1]
    assert b"NO [BADCHARSET" in raw_command(m, "SORT (DATE) ISO-8859-1 ALL")[-1]


def test_sort_empty_mailbox_and_not_selected(m: imaplib.IMAP4_SSL) -> None:
    assert b"Must select a mailbox first" in raw_command(m, "SORT (DATE) UTF-8 ALL")[-1]
    m.select("INBOX")
    assert raw_command(m, "SORT (DATE) UTF-8 ALL")[0] == b"* SORT"


def test_base_subject() -> None:
    assert base_subject("Re: Fwd: [liste] RE: Bilan  annuel (fwd)") == "bilan annuel"
    assert base_subject("[Fwd: Re: Compte-rendu]") == "compte-rendu"
    assert base_subject("[seul]") == "[seul]"  # a blob that is the whole subject stays
    assert base_subject("Re [2]: Question") == "question"
    assert base_subject("") == ""


def test_parse_sort() -> None:
    (s,) = parse(b"a UID SORT (REVERSE DATE SUBJECT) UTF-8 UNSEEN SINCE 1-Nov-2026\r\n")
    assert isinstance(s, c.Sort) and s.criteria == ((True, "DATE"), (False, "SUBJECT")) and s.uid
    assert s.key == c.SearchAnd((c.SearchFlag("\\Seen", False), c.SearchDate(False, "SINCE", dt.date(2026, 11, 1))))
    assert parse(c.to_wire(s)) == [s]
    with pytest.raises(ImapParseError):
        parse(b"b SORT DATE UTF-8 ALL\r\n")  # criteria are parenthesised
