"""PostgreSQL: writers no longer queue on the audit chain's head; one sealer chains their entries afterwards.

Entries are still written in the transaction they describe (``audit_pending``),
and when ``commit()`` returns they are in the chain; ``audit verify`` sees the
same log as before. SQLite keeps chaining inside its single writer's transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from mailserver.context import Context
from mailserver.store.models import AuditEntry


@pytest.fixture
def pg(ctx: Context) -> Context:
    if not ctx.db.is_postgresql:
        pytest.skip("SQLite chains in its one writer's transaction: there is no head lock to avoid")
    return ctx


async def report(ctx: Context) -> tuple[int, object, int]:
    async with ctx.uow(readonly=True) as uow:
        r = await uow.audit_log.report()
    return r.checked, r.broken, r.pending


async def test_a_writer_in_its_commit_does_not_hold_back_another(pg: Context) -> None:
    gate, paused, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_writer() -> None:
        async with pg.uow() as uow:
            uow.audit("a@hopital.test", "login", "account:1", "ok")
            real_commit = uow.session.commit

            async def commit_when_told() -> None:  # everything commit() does, then a pause before COMMIT
                paused.set()
                await gate.wait()
                await real_commit()

            uow.session.commit = commit_when_told  # type: ignore[method-assign]
            await uow.commit()
        a_done.set()

    a = asyncio.create_task(slow_writer())
    try:
        await asyncio.wait_for(paused.wait(), 10)  # A holds its transaction open, its entry written
        async with pg.uow() as uow:
            uow.audit("b@hopital.test", "login", "account:2", "ok")
            # before: A held the head row's lock from its append until its COMMIT, and this waited for it
            await asyncio.wait_for(uow.commit(), 10)
        assert await report(pg) == (1, None, 0)
    finally:
        gate.set()
        await a
    assert a_done.is_set()
    async with pg.uow(readonly=True) as uow:
        tail = await uow.audit_log.tail(2)
    assert [e.actor for e in tail] == ["b@hopital.test", "a@hopital.test"]
    assert await report(pg) == (2, None, 0)


async def test_entries_left_pending_by_a_crash_are_chained_by_the_next_commit(pg: Context) -> None:
    async with pg.uow() as uow:  # committed, and the process died before sealing
        await uow.session.execute(
            text(
                "INSERT INTO audit_pending (at, actor, action, object_id, outcome) "
                "VALUES (:at, 'x@hopital.test', 'login', 'account:1', 'ok')"
            ),
            {"at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC)},
        )
        await uow.session.commit()
    assert await report(pg) == (0, None, 1)
    async with pg.uow() as uow:
        uow.audit("y@hopital.test", "login", "account:2", "ok")
        await uow.commit()
    assert await report(pg) == (2, None, 0)


async def test_concurrent_writers_share_sealing_runs_and_the_chain_holds(pg: Context) -> None:
    runs = 0
    from mailserver.store.uow import sealer_of

    sealer = sealer_of(pg.db)
    real_run = sealer.run

    async def counted() -> int:
        nonlocal runs
        runs += 1
        return await real_run()

    sealer.run = counted  # type: ignore[method-assign]

    async def writer(i: int) -> None:
        async with pg.uow() as uow:
            uow.audit(f"user{i}@hopital.test", "login", f"account:{i}", "ok")
            await uow.commit()

    await asyncio.gather(*(writer(i) for i in range(20)))
    assert await report(pg) == (20, None, 0)
    assert 1 <= runs < 20


async def test_verify_reads_one_snapshot_while_the_sealer_goes_on(pg: Context) -> None:
    """``audit verify`` on a running server: entries chained after it read the head are not read either (the
    crash campaign saw 'the log ends at entry 93 but its head records entry 90' from two snapshots)."""
    for i in range(3):
        async with pg.uow() as uow:
            uow.audit("a@hopital.test", "login", f"account:{i}", "ok")
            await uow.commit()
    before, _, _ = await report(pg)
    async with pg.uow(readonly=True) as uow:
        walk = uow.audit_log._rows

        async def racing(batch: int = 1000) -> AsyncIterator[AuditEntry]:
            first = True
            async for entry in walk(batch=1):
                yield entry
                if first:  # the head is read, the walk has begun: another writer's entry is chained now
                    first = False
                    async with pg.uow() as other:
                        other.audit("b@hopital.test", "login", "account:9", "ok")
                        await other.commit()

        uow.audit_log._rows = racing  # type: ignore[method-assign]
        r = await uow.audit_log.report()
    assert (r.checked, r.broken) == (before, None)
    assert (await report(pg))[:2] == (before + 1, None)
