"""PostgreSQL's pool checks a connection only when it rested (``store.db.PG_PING_AFTER_IDLE``), and keeps every
connection it opened (``store.db.PG_POOL_SIZE``): a burst past the pool waits for one, it does not open more.

A connection taken again a moment after it worked is not checked (``pool_pre_ping`` cost three round trips per
unit of work); one that rested past the threshold is, and if its backend is gone (a restart, a failover, an
administrator's ``pg_terminate_backend``) the pool replaces it before the unit of work sees it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from mailserver.context import Context
from mailserver.store import db as store_db
from tests import support
from tests.conftest import PG_ADMIN_DSN


@pytest.fixture
def db_url(pg_database: str) -> str:
    """PostgreSQL only (this module overrides the two-database ``db_url``)."""
    asyncio.run(support.pg_reset(pg_database))
    return support.sqlalchemy_pg_url(pg_database)


@pytest.fixture
def pings(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Every liveness check the pool makes."""
    seen: list[int] = []
    dialect = ctx.db.engine.sync_engine.dialect
    real = dialect.do_ping

    def counted(dbapi_connection: object) -> bool:
        seen.append(1)
        return real(dbapi_connection)

    monkeypatch.setattr(dialect, "do_ping", counted)
    yield seen


async def backend_pid(ctx: Context) -> int:
    async with ctx.uow(readonly=True) as uow:
        return int((await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate(ctx: Context, pid: int) -> None:
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


async def test_a_connection_that_works_all_the_time_is_not_checked(ctx: Context, pings: list[int]) -> None:
    for _ in range(10):
        await backend_pid(ctx)
    assert pings == []


async def test_a_rested_connection_whose_backend_died_is_replaced_unseen(
    ctx: Context, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await backend_pid(ctx)
    await terminate(ctx, first)  # the pool still holds the connection of that backend
    monkeypatch.setattr(store_db, "PG_PING_AFTER_IDLE", 0.0)  # as if it rested: checked when taken
    second = await backend_pid(ctx)  # no error reaches the unit of work
    assert second != first
    assert pings  # it was checked, found dead, and replaced


async def test_without_the_check_a_dead_connection_fails_one_unit_and_the_pool_recovers(
    ctx: Context, pings: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the threshold trades: a connection that died while it was in steady use fails the unit that takes it;
    SQLAlchemy then drops every connection of the pool as old, and the next unit gets a new one."""
    first = await backend_pid(ctx)
    await terminate(ctx, first)
    monkeypatch.setattr(store_db, "PG_PING_AFTER_IDLE", 3600.0)
    # asyncpg's error depends on when it reads the backend's goodbye (InterfaceError: the connection is closed;
    # InternalClientError: another operation in progress): either way the unit fails, and only that one
    with pytest.raises(DBAPIError):
        await backend_pid(ctx)
    assert await backend_pid(ctx) != first
    assert pings == []


async def test_a_burst_past_the_pool_waits_for_a_connection_and_the_next_burst_opens_none(ctx: Context) -> None:
    """Forty logins at once from one address (a hospital at 8 am): with 20 connections kept and 10 more opened
    for the burst and closed after it, every burst opened those 10 again (a backend forked, the startup, asyncpg's
    type introspection): 8 a round, p50 213 ms against 30 ms on SQLite."""
    opened: list[int] = []
    event.listen(ctx.db.engine.sync_engine, "connect", lambda *_: opened.append(1))
    busy = 0
    most = 0
    full = asyncio.Event()  # the pool's every connection held: the burst's others are asking meanwhile

    async def unit() -> None:
        nonlocal busy, most
        async with ctx.uow(readonly=True) as uow:
            await uow.session.execute(text("SELECT 1"))
            busy += 1
            most = max(most, busy)
            if busy == store_db.PG_POOL_SIZE:
                full.set()
            await full.wait()  # held until the pool is full: the burst outgrows it
            busy -= 1

    burst = 2 * store_db.PG_POOL_SIZE
    await asyncio.wait_for(asyncio.gather(*(unit() for _ in range(burst))), 60)
    full.clear()
    assert most == len(opened) == store_db.PG_POOL_SIZE  # the pool's size at most, the rest waited
    await asyncio.wait_for(asyncio.gather(*(unit() for _ in range(burst))), 60)
    assert len(opened) == store_db.PG_POOL_SIZE  # all kept: the second burst opened none
