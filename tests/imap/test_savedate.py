"""SAVEDATE (RFC 8514) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

The save date is when the message entered the mailbox it is in, not its internal date: an APPEND
with an old date is saved today, and a COPY is saved anew in its destination while the original
keeps its own. SEARCH SAVEDBEFORE/SAVEDON/SAVEDSINCE compare days; SAVEDATESUPPORTED matches all.
"""

from __future__ import annotations

import datetime as dt
import imaplib
import re

import pytest
from sqlalchemy import update

from mailserver.context import Context
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account, Mailbox, Message
from tests.imap.conftest import ServerThread, message, raw_command

_SAVED = re.compile(rb'SAVEDATE "([^"]+)"')


def saved_days(m: imaplib.IMAP4_SSL, seqs: str) -> list[dt.date]:
    lines = raw_command(m, f"FETCH {seqs} (SAVEDATE)")
    assert lines[-1].endswith(b"OK FETCH completed"), lines
    return [
        dt.datetime.strptime(x.decode(), "%d-%b-%Y %H:%M:%S %z").date() for line in lines for x in _SAVED.findall(line)
    ]


def search(m: imaplib.IMAP4_SSL, keys: str) -> bytes:
    lines = raw_command(m, "SEARCH " + keys)
    assert lines[-1].endswith(b"OK SEARCH completed"), lines
    return lines[0]


def test_savedate(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"SAVEDATE" in raw_command(m, "CAPABILITY")[0].split()
    today = dt.datetime.now(dt.UTC).date()
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    srv.deliver(user, message("a@b.test", user.address, "neuf", "x"))
    m.append("INBOX", None, imaplib.Time2Internaldate(long_ago.timestamp()), message("a@b.test", "c@d.test", "x"))
    m.create("Garde")
    m.select("INBOX")
    assert saved_days(m, "1:2") == [today, today]  # the appended one too, whatever its internal date
    assert search(m, "BEFORE " + c.format_date(today)) == b"* SEARCH 2"
    on, before, since = (f"SAVED{op} {c.format_date(today)}" for op in ("ON", "BEFORE", "SINCE"))
    assert search(m, on) == b"* SEARCH 1 2"
    assert search(m, before) == b"* SEARCH"
    assert search(m, since) == b"* SEARCH 1 2"
    assert search(m, "SAVEDATESUPPORTED") == b"* SEARCH 1 2"

    # message 1 was saved long ago (as a row from before this revision would be): a copy is saved today
    async def age(ctx: Context) -> None:
        async with ctx.uow() as uow:
            inbox = await uow.mailboxes.get(user.id, "INBOX")
            assert isinstance(inbox, Mailbox)
            stmt = update(Message).where(Message.mailbox_id == inbox.id, Message.uid == 1).values(saved_at=long_ago)
            await uow.session.execute(stmt)
            await uow.commit()

    srv.call(age)
    assert saved_days(m, "1") == [long_ago.date()]
    assert search(m, "SAVEDBEFORE " + c.format_date(today)) == b"* SEARCH 1"
    m.copy("1", "Garde")
    m.select("Garde")
    assert saved_days(m, "1") == [today]
    assert search(m, "SAVEDSINCE " + c.format_date(today)) == b"* SEARCH 1"


def test_parse_savedate() -> None:
    (s,) = parse(b'a SEARCH SAVEDBEFORE 1-Dec-2026 SAVEDON "2-Dec-2026" OR SAVEDSINCE 3-Dec-2026 SAVEDATESUPPORTED\r\n')
    assert isinstance(s, c.Search) and isinstance(s.key, c.SearchAnd)
    assert s.key.keys[0] == c.SearchSaveDate("BEFORE", dt.date(2026, 12, 1))
    assert parse(c.to_wire(s)) == [s]
    (f,) = parse(b"b FETCH 1 SAVEDATE\r\n")
    assert isinstance(f, c.Fetch) and f.items == (c.FetchAttr("SAVEDATE"),)
    with pytest.raises(ImapParseError):
        parse(b"c SEARCH SAVEDON yesterday\r\n")
