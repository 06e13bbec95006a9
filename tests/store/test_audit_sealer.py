"""PostgreSQL: writers no longer queue on the audit chain's head; one sealer chains their entries afterwards.

Entries are still written in the transaction they describe (``audit_pending``); the process's sealer chains
them in the background after the commit, which does not wait for it. A reader of the chain (``audit verify``,
``audit tail``, the reports) has what is committed chained first, so it sees the same log as before; entries a
crash left staged are chained by the next run of any process, and closing the database lets the running one
finish. SQLite keeps chaining inside its single writer's transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from mailserver.context import Context
from mailserver.store import uow as uow_module
from mailserver.store.models import AuditEntry
from mailserver.store.repositories.audit import SEALER_LOCK
from mailserver.store.uow import sealer_of
from tests import support


@pytest.fixture
def pg(ctx: Context) -> Context:
    if not ctx.db.is_postgresql:
        pytest.skip("SQLite chains in its one writer's transaction: there is no head lock to avoid")
    return ctx


async def report(ctx: Context) -> tuple[int, object, int]:
    async with ctx.uow(readonly=True) as uow:
        r = await uow.audit_log.report()
    return r.checked, r.broken, r.pending


async def pending(ctx: Context) -> int:
    """Entries committed and not chained yet (read without catching up)."""
    async with ctx.uow(readonly=True) as uow:
        return await uow.audit_log.pending_count()


async def audited_login(ctx: Context, i: int) -> None:
    async with ctx.uow() as uow:
        uow.audit(f"user{i}@hopital.test", "login", f"account:{i}", "ok")
        await uow.commit()


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


async def test_entries_left_pending_by_a_crash_are_chained_by_the_next_run(pg: Context) -> None:
    async with pg.uow() as uow:  # committed, and the process died before sealing
        await uow.session.execute(
            text(
                "INSERT INTO audit_pending (at, actor, action, object_id, outcome) "
                "VALUES (:at, 'x@hopital.test', 'login', 'account:1', 'ok')"
            ),
            {"at": dt.datetime(2026, 12, 1, tzinfo=dt.UTC)},
        )
        await uow.session.commit()
    assert await pending(pg) == 1
    await audited_login(pg, 2)
    assert await report(pg) == (2, None, 0)
    async with pg.uow(readonly=True) as uow:
        assert [e.actor for e in await uow.audit_log.tail(2)] == ["x@hopital.test", "user2@hopital.test"]


async def test_a_commit_does_not_wait_for_the_sealer(pg: Context) -> None:
    """The sealer held up (here: its lock held by another connection, as by another process's long run): a unit
    of work's commit returns all the same, its entry staged; it is chained once the sealer can run."""
    async with pg.db.engine.connect() as other:
        await other.execute(text("SELECT pg_advisory_lock(:k)"), {"k": SEALER_LOCK})
        try:
            # before: commit() awaited a sealer run, which waited for the lock
            await asyncio.wait_for(audited_login(pg, 1), 10)
            assert await pending(pg) == 1
        finally:
            await other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SEALER_LOCK})
            await other.commit()
    assert await report(pg) == (1, None, 0)


async def test_closing_the_database_lets_the_background_run_finish(
    config: support.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing does not wait out the sealer's linger (an hour here): its run starts at once, and chains all."""
    monkeypatch.setattr(uow_module, "SEAL_LINGER", 3600.0)
    ctx = Context.open(config)
    if not ctx.db.is_postgresql:
        await ctx.close()
        pytest.skip("SQLite chains in its one writer's transaction: there is no sealer in the background")
    try:
        for i in range(5):
            await audited_login(ctx, i)
        assert await pending(ctx) == 5  # lingering
    finally:
        await asyncio.wait_for(ctx.close(), 30)  # the sealer's task has a run to finish, started at once
    again = Context.open(config)
    try:
        assert await pending(again) == 0
        async with again.uow(readonly=True) as uow:
            assert await uow.audit_log.count() == 5
    finally:
        await again.close()


async def test_a_failed_background_run_leaves_the_entries_for_the_next(
    pg: Context, caplog: pytest.LogCaptureFixture
) -> None:
    sealer = sealer_of(pg.db)
    real_run = sealer.run
    failed = asyncio.Event()

    async def once_down() -> int:
        sealer.run = real_run  # type: ignore[method-assign]
        failed.set()
        raise ConnectionResetError("the database went away")

    sealer.run = once_down  # type: ignore[method-assign]
    await audited_login(pg, 1)  # committed: the failure is the sealer's, not the writer's
    await asyncio.wait_for(failed.wait(), 10)
    await sealer.close()  # the background task has ended on its failure
    assert await pending(pg) == 1
    assert "audit sealing failed, entries stay pending: ConnectionResetError" in caplog.text
    assert "the database went away" not in caplog.text  # the type only: a driver's message may hold values
    assert await report(pg) == (1, None, 0)


async def test_concurrent_writers_share_sealing_runs_and_the_chain_holds(pg: Context) -> None:
    runs = 0
    sealer = sealer_of(pg.db)
    real_run = sealer.run

    async def counted() -> int:
        nonlocal runs
        runs += 1
        return await real_run()

    sealer.run = counted  # type: ignore[method-assign]

    await asyncio.gather(*(audited_login(pg, i) for i in range(20)))
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
