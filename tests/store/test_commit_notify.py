"""PostgreSQL: a unit's audit entries and its change notification go in one statement at commit, and both happen
only if it commits (``UnitOfWork.commit``, ``AuditRepository.stage``)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import func, select

from mailserver.context import Context
from mailserver.notify import CHANNEL
from mailserver.store.models import AuditEntry
from tests import support
from tests.harness.statements import listening


@pytest.fixture
def db_url(pg_database: str) -> str:
    """PostgreSQL only (this module overrides the two-database ``db_url``)."""
    asyncio.run(support.pg_reset(pg_database))
    return support.sqlalchemy_pg_url(pg_database)


async def _audited(ctx: Context, action: str) -> int:
    async with ctx.uow(readonly=True) as uow:
        await uow.audit_log.caught_up()
        stmt = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return int((await uow.session.execute(stmt)).scalar_one())


async def test_entries_and_notification_in_one_statement_and_only_when_committed(
    ctx: Context, pg_database: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    other = await asyncpg.connect(pg_database)  # another process's listener, as the server's
    await other.add_listener(CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        async with ctx.uow() as uow:  # rolled back: neither
            uow.audit("test", "test.rolled-back", "mailbox:7", "ok")
            uow.touch(7)
        with listening(ctx.db.engine) as counter, counter.counting() as seen:
            async with ctx.uow() as uow:
                uow.audit("test", "test.one", "mailbox:7", "ok")
                uow.audit("test", "test.two", "mailbox:8", "ok")
                uow.touch(8)
                uow.touch(7)
                await uow.commit()
        async with ctx.uow() as uow:  # a change that audits nothing is still told
            uow.touch(9)
            await uow.commit()
        assert await asyncio.wait_for(heard.get(), 10) == "7,8"
        assert await asyncio.wait_for(heard.get(), 10) == "9"
        assert heard.empty()
    finally:
        await other.close()
    staging = [s for s in seen if "audit_pending" in s and "INSERT" in s]
    assert len(staging) == 1 and "pg_notify" in staging[0], seen
    assert [await _audited(ctx, a) for a in ("test.one", "test.two", "test.rolled-back")] == [1, 1, 0]
