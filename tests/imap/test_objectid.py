"""OBJECTID (RFC 8474) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

MAILBOXID is said by CREATE, SELECT, STATUS and LIST-STATUS, the same in every session, kept by RENAME
and new for a mailbox deleted and created again; EMAILID follows a message through COPY and MOVE and
is found by SEARCH EMAILID; THREADID is shared by a reply and its thread's first message. Ids are
digests of stored values.
"""

from __future__ import annotations

import imaplib
import re
import ssl

import pytest

from mailserver.context import Context
from mailserver.imap import objectid
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, imaps, message, raw_command

_ID = re.compile(rb"(MAILBOXID|EMAILID|THREADID) \(([A-Za-z0-9_-]+)\)")


def ids(lines: list[bytes], kind: bytes = b"MAILBOXID") -> list[str]:
    return [m.group(2).decode() for line in lines for m in _ID.finditer(line) if m.group(1) == kind]


def mailbox_id(m: imaplib.IMAP4_SSL, name: str) -> str:
    (found,) = ids(raw_command(m, f"STATUS {name} (MAILBOXID)"))
    return found


def test_mailbox_ids(srv: ServerThread, m: imaplib.IMAP4_SSL, tls_client: ssl.SSLContext, user: Account) -> None:
    assert b"OBJECTID" in raw_command(m, "CAPABILITY")[0].split()
    (made,) = ids(raw_command(m, "CREATE Dossiers"))
    assert re.fullmatch(r"M[a-z2-7]{24}", made)
    assert ids(raw_command(m, "SELECT Dossiers")) == [made]
    assert ids(raw_command(m, "EXAMINE Dossiers")) == [made]
    assert mailbox_id(m, "Dossiers") == made
    listed = raw_command(m, 'LIST "" "*" RETURN (STATUS (MAILBOXID MESSAGES))')
    assert [line for line in listed if b"MAILBOXID (" + made.encode() + b")" in line]
    inbox = mailbox_id(m, "INBOX")
    assert inbox != made
    # the same in another session, and derived from stored values only (so the same after a restart)
    other = imaps(srv, tls_client, user)
    assert mailbox_id(other, "Dossiers") == made
    other.logout()

    async def stored(ctx: Context) -> str:
        async with ctx.uow(readonly=True) as uow:
            row = await uow.mailboxes.get(user.id, "Dossiers")
            assert row is not None
            return objectid.mailbox_id(row.id, row.uidvalidity)

    assert srv.call(stored) == made
    # RENAME keeps it; a mailbox deleted and created again under the same name gets another
    m.select("INBOX")
    m.rename("Dossiers", "Archives")
    assert mailbox_id(m, "Archives") == made
    m.delete("Archives")
    (again,) = ids(raw_command(m, "CREATE Archives"))
    assert again != made and mailbox_id(m, "Archives") == again
    # another account's INBOX has its own
    someone = srv.make_pro()
    client = imaps(srv, tls_client, someone)
    assert mailbox_id(client, "INBOX") != inbox
    client.logout()


def test_email_and_thread_ids(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, message("a@b.test", user.address, "msg 0", "x", message_id="<racine@t>"))
    srv.deliver(user, message("a@b.test", user.address, "msg 1", "x"))
    srv.deliver(user, message("c@d.test", user.address, "Re: msg 0", "y", References="<racine@t>"))
    m.create("Dossiers")
    m.select("INBOX")
    first, second, reply = ids(raw_command(m, "FETCH 1:3 (EMAILID)"), b"EMAILID")
    assert len({first, second, reply}) == 3 and re.fullmatch(r"E[a-z2-7]{24}", first)
    assert ids(raw_command(m, "UID FETCH 1:* (EMAILID)"), b"EMAILID") == [first, second, reply]
    assert raw_command(m, f"SEARCH EMAILID {second}")[0] == b"* SEARCH 2"
    assert b" BAD " in raw_command(m, "SEARCH EMAILID a.b")[-1]
    # THREADID: the reply shares its thread's; the other message has its own
    t1, t2, t3 = ids(raw_command(m, "FETCH 1:3 (THREADID)"), b"THREADID")
    assert t1 == t3 != t2 and re.fullmatch(r"T[a-z2-7]{24}", t1)
    assert raw_command(m, f"SEARCH THREADID {t1}")[0] == b"* SEARCH 1 3"
    assert raw_command(m, "SEARCH THREADID T1")[0] == b"* SEARCH"
    assert raw_command(m, "SEARCH SEEN")[0] == b"* SEARCH"  # reading the header for it marks nothing seen
    # a copy and a moved message keep their EMAILID and THREADID
    m.copy("1", "Dossiers")
    m._simple_command("MOVE", "2", "Dossiers")  # type: ignore[attr-defined]
    m.select("Dossiers")
    assert ids(raw_command(m, "FETCH 1:* (EMAILID)"), b"EMAILID") == [first, second]
    assert ids(raw_command(m, "FETCH 1:* (THREADID)"), b"THREADID") == [t1, t2]
    assert raw_command(m, f"UID SEARCH EMAILID {first}")[0].startswith(b"* SEARCH ")


def test_parse_object_ids() -> None:
    (s,) = parse(b"a SEARCH EMAILID E12_ab-C NOT THREADID T9\r\n")
    assert isinstance(s, c.Search)
    assert s.key == c.SearchAnd(
        (c.SearchObjectId("EMAILID", "E12_ab-C"), c.SearchNot(c.SearchObjectId("THREADID", "T9")))
    )
    assert parse(c.to_wire(s)) == [s]
    (f,) = parse(b"b FETCH 1 (EMAILID THREADID)\r\n")
    assert isinstance(f, c.Fetch) and f.items == (c.FetchAttr("EMAILID"), c.FetchAttr("THREADID"))
    (st,) = parse(b"c STATUS INBOX (MAILBOXID)\r\n")
    assert isinstance(st, c.Status) and st.items == ("MAILBOXID",)
    with pytest.raises(ImapParseError):
        parse(b"d SEARCH EMAILID\r\n")
