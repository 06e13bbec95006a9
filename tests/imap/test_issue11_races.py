"""Issue 11: a STORE racing an EXPUNGE answers for what is left; a deadlock PostgreSQL breaks is retried.

The races are made deterministic: the row vanishes at a chosen point between a session's read and its
write (through the store), the deadlock is provoked by a second PostgreSQL connection of the test that
takes the locks in the opposite order. Wire behaviour goes through real sockets with imaplib.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Sequence
from typing import TypeVar

import pytest
from sqlalchemy import text

from mailserver.admission import Admission
from mailserver.delivery import deliver
from mailserver.imap.mailstore import MailStore
from mailserver.store import retry
from mailserver.store.errors import TransactionAborted
from mailserver.store.models import Account, Message
from mailserver.store.repositories.mail import MessageRepository
from tests import support
from tests.imap.conftest import ServerThread, crlf, imaps, message

T = TypeVar("T")

#: how many backends wait for a lock this connection holds
_WAITING_ON_ME = text(
    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
)


async def _account_with_messages(ctx: support.Context, n: int) -> tuple[Account, int]:
    await support.add_domains(ctx)
    account = await support.make_pro(ctx, "race")
    raw = crlf(message("a@example.org", account.address, "race"))
    async with ctx.uow() as uow:
        acct = await uow.accounts.get(account.id)
        assert acct is not None
        for _ in range(n):
            await deliver(uow, ctx.keyring, raw, [acct])
        inbox = await uow.mailboxes.get(account.id, "INBOX")
        assert inbox is not None
        await uow.commit()
    return account, inbox.id


async def test_store_skips_a_message_expunged_between_its_read_and_its_write(
    ctx: support.Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, inbox = await _account_with_messages(ctx, 3)
    store = MailStore(ctx, account, Admission(ctx))
    assert await store.store(inbox, [2], "+", ["\\Deleted"]) == {2: frozenset({"\\Deleted"})}

    read = MessageRepository.by_uids
    armed = True

    async def by_uids_then_vanish(self: MessageRepository, mailbox_id: int, uids: Sequence[int]) -> Sequence[Message]:
        nonlocal armed
        rows = await read(self, mailbox_id, uids)
        if armed:  # the STORE has read the rows: message 2 goes now, before it writes
            armed = False
            await self.session.execute(
                text("DELETE FROM messages WHERE mailbox_id = :m AND uid = 2"), {"m": mailbox_id}
            )
        return rows

    monkeypatch.setattr(MessageRepository, "by_uids", by_uids_then_vanish)
    result = await store.store(inbox, [1, 2, 3], "+", ["\\Flagged"])
    monkeypatch.undo()
    assert result == {1: frozenset({"\\Flagged"}), 3: frozenset({"\\Flagged"})}
    flags = {uid: f for uid, f in (await store.select("INBOX", readonly=True)).messages}
    assert flags == {1: frozenset({"\\Flagged"}), 3: frozenset({"\\Flagged"})}


async def test_store_then_expunge_through_two_stores_answers_for_what_is_left(ctx: support.Context) -> None:
    account, inbox = await _account_with_messages(ctx, 2)
    a, b = MailStore(ctx, account, Admission(ctx)), MailStore(ctx, account, Admission(ctx))
    await b.store(inbox, [1], "+", ["\\Deleted"])
    assert await b.expunge(inbox, [1, 2]) == [1]
    assert await a.store(inbox, [1, 2], "+", ["\\Seen"]) == {2: frozenset({"\\Seen"})}


def test_uid_store_of_a_message_another_session_expunged_is_ok(
    srv: ServerThread, user: Account, tls_client: ssl.SSLContext
) -> None:
    srv.deliver(user, message("a@example.org", user.address, "one"))
    srv.deliver(user, message("a@example.org", user.address, "two"))
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    try:
        a.select("INBOX")
        b.select("INBOX")
        assert b.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert b.expunge()[0] == "OK"
        typ, data = a.uid("STORE", "1:2", "+FLAGS", "(\\Flagged)")
        assert typ == "OK", data
        assert any(b"UID 2" in d and b"\\Flagged" in d for d in data if isinstance(d, bytes))
        assert not any(b"UID 1 " in d for d in data if isinstance(d, bytes))
        assert a.noop()[0] == "OK"
    finally:
        a.logout()
        b.logout()


async def _deadlock(ctx: support.Context, mailbox_id: int, work: Awaitable[T]) -> T:
    """Run ``work`` (it locks the mailbox row, then a message row) into a deadlock with a connection of the
    test that holds the message row and then asks for the mailbox row; ``work``'s result once it is over."""
    other = ctx.db.writer()  # the test's own connection, taking the locks in the opposite order
    try:
        await other.execute(text("SET LOCAL deadlock_timeout = '30s'"))  # the store's backend detects it
        await other.execute(text("UPDATE messages SET flags = flags WHERE mailbox_id = :m"), {"m": mailbox_id})
        task = asyncio.ensure_future(work)
        for _ in range(3000):  # until the store waits on the message row this connection holds
            if task.done():
                break
            waiting = await other.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                )
            )
            if waiting.scalar_one():
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the store never waited on the message row")
        # the store holds the mailbox row: locking it now closes the cycle, PostgreSQL aborts the store
        await other.execute(text("UPDATE mailboxes SET highestmodseq = highestmodseq WHERE id = :m"), {"m": mailbox_id})
        await other.commit()
        return await asyncio.wait_for(task, 30)
    finally:
        await other.close()


async def test_a_deadlock_postgresql_breaks_is_retried(ctx: support.Context) -> None:
    if not ctx.db.is_postgresql:
        pytest.skip("SQLite has one writer at a time: no deadlock, no serialization failure to retry")
    account, inbox = await _account_with_messages(ctx, 1)
    store = MailStore(ctx, account, Admission(ctx))
    before = retry.retried
    assert await _deadlock(ctx, inbox, store.store(inbox, [1], "+", ["\\Flagged"])) == {1: frozenset({"\\Flagged"})}
    assert retry.retried == before + 1
    assert (await store.select("INBOX", readonly=True)).messages == [(1, frozenset({"\\Flagged"}))]


async def test_a_transaction_aborted_on_every_attempt_is_a_typed_error(ctx: support.Context) -> None:
    if not ctx.db.is_postgresql:
        pytest.skip("SQLite has one writer at a time: no deadlock, no serialization failure to retry")
    account, inbox = await _account_with_messages(ctx, 1)

    async def flag() -> None:
        async with ctx.uow() as uow:
            await uow.mailboxes.lock(inbox)
            await uow.messages.update_flags(inbox, {1: "\\Flagged"}, await uow.mailboxes.bump_modseq(inbox))
            await uow.commit()

    with pytest.raises(TransactionAborted, match="40P01"):
        await _deadlock(ctx, inbox, retry.retrying(flag, attempts=1))
