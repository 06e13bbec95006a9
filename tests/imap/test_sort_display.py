"""SORT=DISPLAY (RFC 5957) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

DISPLAYFROM and DISPLAYTO sort by the first address's display name (encoded words decoded,
case-folded), by its address when it has none; FROM and TO keep sorting by the local part.
"""

from __future__ import annotations

import imaplib

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, raw_command


def mail(sender: str, rcpt: str) -> bytes:
    return f"From: {sender}\r\nTo: {rcpt}\r\nSubject: s\r\n\r\nx\r\n".encode()


def test_sort_display(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"SORT=DISPLAY" in raw_command(m, "CAPABILITY")[0].split()
    srv.deliver(user, mail('"Zoé Martin" <alice@a.test>', "Yves <bob@x.test>"))  # 1
    srv.deliver(user, mail("carl@c.test", '"André" <zed@x.test>'))  # 2: no display name: its address
    srv.deliver(user, mail("=?utf-8?q?B=C3=A9atrice?= <zz@b.test>", "anne@x.test"))  # 3
    srv.deliver(user, mail("Dan <dan@d.test>", "undisclosed: ;, Marc <marc@x.test>"))  # 4: a group first
    m.select("INBOX")
    # DISPLAYFROM: béatrice, carl@c.test, dan, zoé martin (FROM says alice, carl, dan, zz)
    assert raw_command(m, "SORT (DISPLAYFROM) UTF-8 ALL")[0] == b"* SORT 3 2 4 1"
    assert raw_command(m, "SORT (FROM) UTF-8 ALL")[0] == b"* SORT 1 2 4 3"
    # DISPLAYTO reversed: yves, marc (past the empty group), anne@x.test, andré
    assert raw_command(m, "SORT (REVERSE DISPLAYTO) UTF-8 ALL")[0] == b"* SORT 1 4 3 2"
    assert raw_command(m, "UID SORT (DISPLAYTO) UTF-8 3:4")[0].startswith(b"* SORT ")


def test_parse_display_keys() -> None:
    (s,) = parse(b"a SORT (DISPLAYFROM REVERSE DISPLAYTO) UTF-8 ALL\r\n")
    assert isinstance(s, c.Sort) and s.criteria == ((False, "DISPLAYFROM"), (True, "DISPLAYTO"))
    assert parse(c.to_wire(s)) == [s]
