"""The process's shared view of selected mailboxes (``mailserver.imap.mailboxcache``) never hides a change for long.

- A change no notification tells this process of (another process on SQLite, no
  IDLE session to make the poller look) is seen once ``REVALIDATE_AFTER`` has
  passed on the server's clock: the next look reads the mailbox row again.
- A mailbox deleted by another session: the selected session's next command
  still ends it with BYE, as before the cache.
- The cache alone: concurrent looks at a changed mailbox share one read; a
  notification that comes during a read makes the look read again; a writer's
  own change is applied without a read (and PostgreSQL's echo of it spent), not
  when the cache missed another change first; an entry is looked at again after
  ``REVALIDATE_AFTER`` and dropped when its mailbox is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import ssl
import sys

import pytest
from sqlalchemy import select, update

from mailserver.context import Context
from mailserver.flags import FlagCodec
from mailserver.imap.mailboxcache import REVALIDATE_AFTER, DeltaRow, MailboxCache
from mailserver.notify import ChangeNotifier
from mailserver.store.db import null_pool_engine
from mailserver.store.models import Account, Mailbox, Message
from mailserver.store.repositories.mail import MailboxRow
from tests import support
from tests.imap.conftest import ServerThread, imaps, message


def _deliver_from_another_process(srv: ServerThread, user: Account) -> bytes:
    async def run() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.imap.deliver_process",
            srv.config.database.url,
            srv.ctx.keyring.current.to_text().strip(),
            user.address,
            "behind the cache",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=support.audit_env(srv.config),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        return out.strip()

    return asyncio.run(run())


def test_a_change_no_notification_announced_is_seen_after_the_revalidation_delay(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    srv.deliver(user, message("lab@lab.test", user.address, "one"))
    a = imaps(srv, tls_client, user)
    try:
        assert a.select("INBOX") == ("OK", [b"1"])
        a.noop()  # the mailbox is in the cache, current
        assert _deliver_from_another_process(srv, user) == b"2"
        srv.advance(REVALIDATE_AFTER)
        a.noop()
        assert a.untagged_responses.pop("EXISTS", [None])[-1] == b"2", a.untagged_responses
        typ, data = a.uid("FETCH", "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"behind the cache" in data[0][1]
    finally:
        a.logout()


def test_a_selected_mailbox_deleted_by_another_session_ends_the_session(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    try:
        assert a.create("Projets")[0] == "OK"
        srv.deliver(user, message("lab@lab.test", user.address, "filed"), mailbox="Projets")
        assert a.select("Projets")[0] == "OK"
        a.noop()
        assert b.delete("Projets")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.abort, match="deleted by another session"):
            a.noop()
    finally:
        a.shutdown()
        b.logout()


# --- the cache alone: its reads, its notifications ------------------------------------------------------------


def _row(modseq: int, uidnext: int = 3) -> MailboxRow:
    return MailboxRow(7, 1, "INBOX", None, 42, uidnext, modseq, 1, True)


class Store:
    """What the cache reads: the mailbox at ``row`` and the changes it holds, counting the reads."""

    def __init__(self) -> None:
        self.row: MailboxRow | None = _row(5)
        self.delta: list[DeltaRow] = []
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def read(self, mailbox_id: int, known: int) -> tuple[MailboxRow | None, list[DeltaRow]]:
        self.reads += 1
        self.reading.set()
        if self.gate is not None:
            await self.gate.wait()
        row = self.row
        return row, [d for d in self.delta if row is not None and known < d[2] <= row.highestmodseq]


def _cache() -> tuple[ChangeNotifier, MailboxCache, Store]:
    notifier = ChangeNotifier()
    cache = MailboxCache(notifier)
    cache.install(_row(5), [(1, "", 2), (2, "\\Seen", 5)], now=0.0)
    return notifier, cache, Store()


async def test_sessions_looking_at_a_changed_mailbox_share_one_read() -> None:
    notifier, cache, store = _cache()
    assert await cache.current(7, 0.1, store.read) is cache.peek(7, 0.1) is not None
    assert store.reads == 0
    store.row, store.delta = _row(6, uidnext=4), [(3, "", 6, False), (1, "", 6, True)]
    notifier.publish([7])
    assert cache.peek(7, 0.2) is None
    store.gate = asyncio.Event()
    looks = [asyncio.ensure_future(cache.current(7, 0.2, store.read)) for _ in range(5)]
    await store.reading.wait()
    store.gate.set()
    entries = await asyncio.gather(*looks)
    assert store.reads == 1
    entry = entries[0]
    assert entry is not None and all(e is entry for e in entries)
    assert entry.changed_after(5) == [(3, "", 6)] and entry.expunged_after(5) == [1]
    assert sorted(entry.messages) == [2, 3] and entry.row.uidnext == 4


async def test_a_notification_during_a_read_makes_the_look_read_again() -> None:
    notifier, cache, store = _cache()
    notifier.publish([7])
    store.gate = asyncio.Event()
    look = asyncio.ensure_future(cache.current(7, 0.1, store.read))
    await store.reading.wait()
    notifier.publish([7])  # committed after the read looked
    store.row, store.delta = _row(6), [(2, "", 6, False)]
    store.gate.set()
    entry = await look
    assert store.reads == 2 and entry is not None and entry.messages[2] == ("", 6)


async def test_an_own_write_is_applied_and_its_echo_spent_but_not_another_change() -> None:
    notifier, cache, store = _cache()
    notifier.echoing = True
    generation = cache.generation(7)
    notifier.publish([7])  # the writer's own commit
    cache.applied(7, 6, generation, flags={1: "\\Flagged"})
    entry = cache.peek(7, 0.1)
    assert entry is not None and entry.messages[1] == ("\\Flagged", 6) and entry.highestmodseq == 6
    notifier.publish([7], remote=True)  # PostgreSQL sends that commit back
    assert cache.peek(7, 0.1) is entry
    notifier.publish([7], remote=True)  # another process's commit
    assert cache.peek(7, 0.1) is None


async def test_a_write_the_cache_was_not_current_for_is_not_applied() -> None:
    notifier, cache, store = _cache()
    generation = cache.generation(7)
    notifier.publish([7])  # someone else's commit (modseq 6) the cache has not read
    notifier.publish([7])  # then the writer's own (modseq 7)
    cache.applied(7, 7, generation, flags={1: "\\Flagged"})
    assert cache.peek(7, 0.1) is None
    store.row, store.delta = _row(7), [(2, "", 6, False), (1, "\\Flagged", 7, False)]
    entry = await cache.current(7, 0.1, store.read)
    assert entry is not None and entry.messages == {1: ("\\Flagged", 7), 2: ("", 6)}


async def test_an_entry_is_read_again_after_the_revalidation_delay_and_dropped_with_its_mailbox() -> None:
    _, cache, store = _cache()
    assert cache.peek(7, REVALIDATE_AFTER - 0.01) is not None
    assert cache.peek(7, REVALIDATE_AFTER) is None
    assert await cache.current(7, REVALIDATE_AFTER, store.read) is not None and store.reads == 1
    store.row = None
    assert await cache.current(7, 2 * REVALIDATE_AFTER, store.read) is None
    assert len(cache) == 0


def test_select_takes_the_messages_from_the_cache_only_when_it_holds_the_store_s_modseq(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    """A SELECT answered from the cache (the mailbox row read, the messages not) still sees a message another
    process delivered without this one being told: the row's HIGHESTMODSEQ moved, so the messages are read."""
    srv.deliver(user, message("lab@lab.test", user.address, "one"))
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    try:
        assert a.select("INBOX") == ("OK", [b"1"])  # in the cache now
        assert b.select("INBOX") == ("OK", [b"1"])  # from it
        a.logout()
        b.logout()
        _deliver_from_another_process(srv, user)
        c = imaps(srv, tls_client, user)
        assert c.select("INBOX") == ("OK", [b"2"])
        typ, data = c.fetch("1:*", "(FLAGS)")
        assert typ == "OK" and len(data) == 2, data
        c.logout()
    finally:
        for x in (a, b):
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                x.logout()


def test_an_append_into_the_selected_mailbox_is_recent_for_the_appending_session_alone(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    """The APPEND claims \\Recent in its own unit of work: its session is told first (RFC 3501 §2.3.2); another
    session with the mailbox selected sees the message, not as recent."""
    srv.deliver(user, message("lab@lab.test", user.address, "one"))
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    try:
        a.select("INBOX")
        b.select("INBOX")
        typ, data = a.append("INBOX", "", None, message(user.address, "x@y.test", "appended"))
        assert typ == "OK" and b"APPENDUID" in data[0]
        a.noop()
        assert a.untagged_responses.pop("EXISTS")[-1] == b"2"
        assert a.untagged_responses.pop("RECENT")[-1] == b"2"  # the delivered one, claimed by its SELECT, too
        typ, data = a.fetch("2", "(FLAGS)")
        assert typ == "OK" and b"\\Recent" in data[0], data
        b.noop()
        assert b.untagged_responses.pop("EXISTS")[-1] == b"2"
        assert b.untagged_responses.pop("RECENT", [b"0"])[-1] == b"0"
        typ, data = b.fetch("2", "(FLAGS)")
        assert typ == "OK" and b"\\Recent" not in data[0], data
    finally:
        for x in (a, b):
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                x.logout()


def test_a_store_the_cache_thinks_changes_nothing_still_changes_what_it_missed(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    """A STORE the process's view says is a no-op is answered without the writer only once the mailbox row
    confirms the view is at the store's modseq: a flag set behind the view's back (another process, no
    notification) is still removed by ``-FLAGS``."""
    srv.deliver(user, message("lab@lab.test", user.address, "one"))
    a = imaps(srv, tls_client, user)
    try:
        a.select("INBOX")
        a.noop()  # the mailbox is in the cache, current

        async def flag_behind_the_cache(ctx: Context) -> None:
            engine = null_pool_engine(ctx.db.url)
            try:
                async with engine.begin() as conn:
                    box = (await conn.execute(select(Mailbox.id).where(Mailbox.account_id == user.id))).scalars()
                    mid = next(iter(box))
                    ms = (
                        await conn.execute(
                            update(Mailbox)
                            .where(Mailbox.id == mid)
                            .values(highestmodseq=Mailbox.highestmodseq + 1)
                            .returning(Mailbox.highestmodseq)
                        )
                    ).scalar_one()
                    flags = FlagCodec(lambda: ctx.db.metadata_key, user.id).encode({"\\Flagged"})
                    first = (Message.mailbox_id == mid) & (Message.uid == 1)
                    await conn.execute(update(Message).where(first).values(flags=flags, modseq=ms))
            finally:
                await engine.dispose()

        srv.call(flag_behind_the_cache)
        typ, _ = a.uid("STORE", "1", "-FLAGS.SILENT", "(\\Flagged)")  # the view still says: not flagged
        assert typ == "OK"
        b = imaps(srv, tls_client, user)
        try:
            b.select("INBOX")
            typ, data = b.fetch("1", "(FLAGS)")
            assert typ == "OK" and b"\\Flagged" not in data[0], data
        finally:
            b.logout()
    finally:
        a.logout()
