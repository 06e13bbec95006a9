"""LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819) and CREATE-SPECIAL-USE (RFC 6154 §3) with imaplib.

Real sockets and TLS, SQLite and PostgreSQL. LIST ... RETURN (STATUS (...)) puts each selectable
mailbox's STATUS right after its LIST line; SUBSCRIBED RECURSIVEMATCH names the unsubscribed parent
of a subscribed child with CHILDINFO; CREATE (USE (\\Archive)) makes an Archive mailbox.
"""

from __future__ import annotations

import imaplib
import re

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command


def test_capabilities_advertised(m: imaplib.IMAP4_SSL) -> None:
    caps = raw_command(m, "CAPABILITY")[0].split()
    assert {b"LIST-EXTENDED", b"LIST-STATUS", b"CREATE-SPECIAL-USE"} <= set(caps)


def test_list_status_follows_each_mailbox(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, message("a@b.test", user.address, "one", "x"))
    srv.deliver(user, message("a@b.test", user.address, "two", "y"), flags=("\\Seen",))
    assert m.create("Projets/2026")[0] == "OK"
    srv.deliver(user, message("a@b.test", user.address, "three", "z"), mailbox="Projets/2026")
    lines = raw_command(m, 'LIST "" "*" RETURN (CHILDREN STATUS (MESSAGES UNSEEN UIDNEXT))')
    assert lines[-1].endswith(b"OK LIST completed"), lines
    body = lines[:-1]
    listed = [x for x in body if x.startswith(b"* LIST ")]
    statuses = [x for x in body if x.startswith(b"* STATUS ")]
    assert len(listed) == len(statuses) and len(body) == 2 * len(listed), body
    for i in range(0, len(body), 2):  # each STATUS names the mailbox of the LIST line before it
        name = body[i].rsplit(b' "/" ', 1)[1]
        assert body[i + 1].startswith(b"* STATUS " + name + b" ("), body[i : i + 2]
    assert b'* STATUS "INBOX" (MESSAGES 2 UNSEEN 1 UIDNEXT 3)' in body
    assert b'* STATUS "Projets/2026" (MESSAGES 1 UNSEEN 1 UIDNEXT 2)' in body
    # HIGHESTMODSEQ is a status item too; a pattern matching nothing answers just OK
    hm = raw_command(m, 'LIST "" "INBOX" RETURN (STATUS (HIGHESTMODSEQ))')
    assert re.fullmatch(rb'\* STATUS "INBOX" \(HIGHESTMODSEQ \d+\)', hm[1]), hm
    assert len(raw_command(m, 'LIST "" "Nothing*" RETURN (STATUS (MESSAGES))')) == 1
    bad = raw_command(m, 'LIST "" "*" RETURN (STATUS (BOGUS))')
    assert b" BAD " in bad[-1], bad


def test_list_extended_subscribed_recursivematch(m: imaplib.IMAP4_SSL) -> None:
    assert m.create("Projets/2026")[0] == "OK"
    assert m.create("Vieux")[0] == "OK"
    assert m.unsubscribe("Projets")[0] == "OK"
    assert m.unsubscribe("Vieux")[0] == "OK"
    out = raw_command(m, 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert b'* LIST (\\HasChildren) "/" "Projets" ("CHILDINFO" ("SUBSCRIBED"))' in out, out
    assert not [x for x in out if b'"Vieux"' in x], out
    assert any(x.startswith(b"* LIST (\\HasNoChildren \\Subscribed)") and b'"INBOX"' in x for x in out), out
    # without RECURSIVEMATCH the unsubscribed parent is not listed; its subscribed child is, with "*"
    plain = raw_command(m, 'LIST (SUBSCRIBED) "" "*"')
    assert not [x for x in plain if x.endswith(b'"Projets"')] and any(b'"Projets/2026"' in x for x in plain)
    ret = raw_command(m, 'LIST "" "*" RETURN (SUBSCRIBED CHILDREN)')
    assert any(x.startswith(b"* LIST (\\HasNoChildren)") and x.endswith(b'"Vieux"') for x in ret), ret
    assert b" BAD " in raw_command(m, 'LIST (RECURSIVEMATCH) "" "*"')[-1]  # RFC 5258 §3: not alone


def test_create_special_use(m: imaplib.IMAP4_SSL) -> None:
    assert raw_command(m, "CREATE Archives (USE (\\Archive))")[-1].endswith(b"] CREATE completed")
    listed = raw_command(m, 'LIST "" "Archives"')
    assert listed[0] == b'* LIST (\\HasNoChildren \\Archive) "/" "Archives"', listed
    assert any(x.endswith(b'"Archives"') for x in raw_command(m, 'LIST (SPECIAL-USE) "" "*"'))
    again = raw_command(m, "CREATE Classement (USE (\\Archive))")
    assert re.search(rb"NO \[USEATTR\] Another mailbox already is the \\Archive mailbox", again[-1]), again
    for use in ("\\Flagged", "\\Nonsense"):
        refused = raw_command(m, f"CREATE Virtuel (USE ({use}))")
        assert re.search(rb"NO \[USEATTR\] .* cannot be given to a mailbox here", refused[-1]), refused
    assert not [x for x in raw_command(m, 'LIST "" "*"') if b"Classement" in x or b"Virtuel" in x]
    assert b" BAD " in raw_command(m, "CREATE Autre (COLOR (red))")[-1]


def test_parse_list_return_status_and_create_use() -> None:
    (lst,) = parse(b'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("%" "INBOX") RETURN (CHILDREN STATUS (MESSAGES))\r\n')
    assert isinstance(lst, c.List) and lst.status_items == ("MESSAGES",) and "STATUS" in lst.return_options
    (cr,) = parse(b"b CREATE Archives (USE (\\Archive))\r\n")
    assert isinstance(cr, c.Create) and cr.special_use == ("\\Archive",)
    for cmd in (lst, cr):
        assert parse(c.to_wire(cmd)) == [cmd]
    with pytest.raises(ImapParseError):
        parse(b'c LIST "" "*" RETURN (STATUS)\r\n')


def test_appendlimit_advertised_and_in_status(srv: ServerThread, m: imaplib.IMAP4_SSL) -> None:
    """RFC 7889: APPENDLIMIT=n is the largest APPEND taken; STATUS and LIST-STATUS say it per mailbox."""
    cfg = srv.ctx.config
    limit = min(cfg.limits.max_message_size, cfg.imap.max_literal)
    assert f"APPENDLIMIT={limit}".encode() in raw_command(m, "CAPABILITY")[0].split()
    assert raw_command(m, "STATUS INBOX (APPENDLIMIT)")[0] == f'* STATUS "INBOX" (APPENDLIMIT {limit})'.encode()
    listed = raw_command(m, 'LIST "" "INBOX" RETURN (STATUS (APPENDLIMIT))')
    assert listed[1] == f'* STATUS "INBOX" (APPENDLIMIT {limit})'.encode(), listed
