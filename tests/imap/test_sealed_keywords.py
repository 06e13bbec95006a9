"""IMAP keywords at rest: a message labelled after a diagnosis does not say so without the credential key.

Set by a real client (STORE, APPEND), followed through COPY and MOVE, searched, fetched and announced,
then looked for in the bytes the database holds (the SQLite file, its WAL and shared memory; ``pg_dump``
of PostgreSQL). System flags and the registered keywords stay plain, in SQL as before.
"""

from __future__ import annotations

import imaplib

from sqlalchemy import text

from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command
from tests.store.test_sealed_grants import database_bytes, readable

KEYWORD = "Diabete-insulinodependant"
OTHER = "$Label1"


def _stored_flags(srv: ServerThread, account: Account) -> list[str]:
    async def go() -> list[str]:
        async with srv.ctx.db.engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT m.flags FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.account_id = :a"),
                {"a": account.id},
            )
            return [r[0] for r in rows]

    return srv.call(go)


def test_a_keyword_is_sealed_at_rest_and_works_as_before(
    m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account
) -> None:
    for i in range(3):
        srv.deliver(user, message("a@b.test", user.address, f"s{i}", "x"))
    assert m.create("Suivi")[0] == "OK"
    m.select("INBOX")
    typ, data = m.store("1:2", "+FLAGS", f"(\\Flagged {KEYWORD} {OTHER} $Forwarded)")
    assert typ == "OK", data
    assert data[0] == f"1 (FLAGS (\\Flagged \\Recent $Forwarded {OTHER} {KEYWORD}))".encode()
    assert m.store("2", "-FLAGS", f"({OTHER})")[1] == [f"2 (FLAGS (\\Flagged \\Recent $Forwarded {KEYWORD}))".encode()]
    typ, data = m.append("INBOX", f"(\\Seen {KEYWORD})", None, message("c@d.test", user.address, "s3", "y"))
    assert typ == "OK", data
    assert m.search(None, "KEYWORD", KEYWORD)[1] == [b"1 2 4"]
    assert m.search(None, "UNKEYWORD", KEYWORD)[1] == [b"3"]
    assert m.search(None, "KEYWORD", OTHER)[1] == [b"1"]
    assert m.search(None, "KEYWORD", "Diabete")[1] == [b""]  # a token is no substring of anything
    assert m.uid("COPY", "1", "Suivi")[0] == "OK"
    assert m.uid("MOVE", "4", "Suivi")[0] == "OK"
    lines = raw_command(m, "SELECT Suivi")
    assert f"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Forwarded {OTHER} {KEYWORD})".encode() in lines
    typ, data = m.fetch("1:2", "(FLAGS)")
    assert data == [
        f"1 (FLAGS (\\Flagged \\Recent $Forwarded {OTHER} {KEYWORD}))".encode(),
        f"2 (FLAGS (\\Recent \\Seen {KEYWORD}))".encode(),
    ]
    assert m.search(None, "KEYWORD", KEYWORD)[1] == [b"1 2"]
    stored = _stored_flags(srv, user)
    assert any("\\Flagged" in f and "$Forwarded" in f for f in stored)  # plain, as SQL reads them
    assert any("\\Seen" in f for f in stored)
    assert readable(database_bytes(srv.ctx.config.database_url), KEYWORD, "Diabete", "insulino", OTHER) == []


def test_two_accounts_seal_one_keyword_apart(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    other = srv.make_pro()
    srv.deliver(user, message("a@b.test", user.address, "s", "x"), flags=(KEYWORD,))
    srv.deliver(other, message("a@b.test", other.address, "s", "x"), flags=(KEYWORD,))
    [mine], [theirs] = _stored_flags(srv, user), _stored_flags(srv, other)
    assert mine.startswith("%") and theirs.startswith("%") and mine != theirs
    m.select("INBOX")
    assert m.fetch("1", "(FLAGS)")[1] == [f"1 (FLAGS (\\Recent {KEYWORD}))".encode()]
