"""Group commit: concurrent writing units of work share one transaction and one fsync on SQLite.

A first unit holds the writer while the others queue behind it; when it commits they take their turns in
the same transaction, each in a savepoint of its own, and one COMMIT answers them all. A unit that fails
(a constraint, ``KeyDestroyed``) or leaves without committing is rolled back alone and only its caller sees
its error; the audit chain stays whole; IDLE watchers wake only once the COMMIT is done. On PostgreSQL each
unit keeps its own transaction: the same outcomes hold, one commit each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from prometheus_client import generate_latest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from crypto.envelope import KeyDestroyed
from mailserver import metrics
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.store import groupcommit
from mailserver.store.errors import StoreBusy
from mailserver.store.models import AuditEntry, Domain, DomainKind, Message
from mailserver.store.uow import UnitOfWork
from tests import support

Work = Callable[[UnitOfWork], Awaitable[None]]


@pytest.fixture(autouse=True)
def no_time_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches are bounded by their size here, not by the clock of a loaded test machine."""
    monkeypatch.setattr(groupcommit, "MAX_SECONDS", 3600.0)


@pytest.fixture
def commits(ctx: Context) -> Iterator[list[int]]:
    """Every COMMIT of a root transaction on the database, as it happens (savepoint releases are not)."""
    seen: list[int] = []

    def on_commit(_conn: object) -> None:
        seen.append(1)

    event.listen(ctx.db.engine.sync_engine, "commit", on_commit)
    yield seen
    event.remove(ctx.db.engine.sync_engine, "commit", on_commit)


def batch_sample(ctx: Context, suffix: str) -> float:
    backend = "sqlite" if ctx.db.is_sqlite else "postgresql"
    value = metrics.REGISTRY.get_sample_value(f"masante_store_group_commit_units_{suffix}", {"backend": backend})
    return value or 0.0


async def queued(ctx: Context, n: int) -> None:
    """Until ``n`` units wait for SQLite's writer (PostgreSQL writers do not wait for each other)."""
    if ctx.db.is_sqlite:
        group = groupcommit.group_of(ctx.db)
        for _ in range(10_000):
            if group.waiting >= n:
                return
            await asyncio.sleep(0)  # a turn of the loop: the units start and queue
        raise AssertionError(f"{group.waiting} units queued, {n} expected")


async def in_one_batch(ctx: Context, *works: Work) -> list[BaseException | None]:
    """Run each of ``works`` in a unit of work of its own, all queued behind a first unit that holds the
    writer, then let that one commit: what each unit's caller got (None: its commit returned)."""
    holding, go = asyncio.Event(), asyncio.Event()

    async def first(uow: UnitOfWork) -> None:
        holding.set()
        await go.wait()
        uow.audit("test", "batch.first", "batch:0", "ok")
        await uow.commit()

    async def unit(work: Work) -> None:
        async with ctx.uow() as uow:
            await work(uow)

    opener = asyncio.create_task(unit(first))
    await holding.wait()
    tasks = [asyncio.create_task(unit(w)) for w in works]
    await queued(ctx, len(works))
    go.set()
    outcomes = await asyncio.gather(opener, *tasks, return_exceptions=True)
    assert outcomes[0] is None, outcomes[0]
    return [o if isinstance(o, BaseException) else None for o in outcomes[1:]]


def add_domain(name: str, *, commit: bool = True) -> Work:
    async def work(uow: UnitOfWork) -> None:
        uow.session.add(Domain(name=name, kind=DomainKind.PROFESSIONAL))
        await uow.session.flush()
        uow.audit("test", "unit.add", f"unit:{name}", "ok")
        if commit:
            await uow.commit()

    return work


async def domains(ctx: Context) -> set[str]:
    async with ctx.uow(readonly=True) as uow:
        return set((await uow.session.execute(select(Domain.name))).scalars().all())


async def audited(ctx: Context) -> list[str]:
    async with ctx.uow(readonly=True) as uow:
        await uow.audit_log.caught_up()  # PostgreSQL: its sealer chains in the background
        rows = await uow.session.execute(select(AuditEntry.object_id).order_by(AuditEntry.seq))
        return list(rows.scalars().all())


async def test_concurrent_units_commit_in_one_transaction(ctx: Context, commits: list[int]) -> None:
    count, units = batch_sample(ctx, "count"), batch_sample(ctx, "sum")
    names = [f"unit{i}.test" for i in range(5)]
    commits.clear()

    outcomes = await in_one_batch(ctx, *(add_domain(n) for n in names))

    assert outcomes == [None] * len(names)
    assert set(names) <= await domains(ctx)
    assert batch_sample(ctx, "sum") - units == len(names) + 1
    if ctx.db.is_sqlite:
        assert len(commits) == 1, "the six units share one COMMIT"
        assert batch_sample(ctx, "count") - count == 1
    else:
        assert batch_sample(ctx, "count") - count == len(names) + 1  # a transaction each: batches of one
    assert "masante_store_group_commit_units_bucket" in generate_latest(metrics.REGISTRY).decode()


async def test_a_constraint_violation_fails_its_own_unit_only(ctx: Context, commits: list[int]) -> None:
    await support.add_domains(ctx)
    commits.clear()

    outcomes = await in_one_batch(ctx, add_domain("b.test"), add_domain(support.PRO_DOMAIN), add_domain("d.test"))

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], IntegrityError)
    assert {"b.test", "d.test"} <= await domains(ctx)
    entries = await audited(ctx)
    assert "unit:b.test" in entries and "unit:d.test" in entries
    assert f"unit:{support.PRO_DOMAIN}" not in entries, "a failed unit leaves no audit entry"
    if ctx.db.is_sqlite:
        assert len(commits) == 1


async def test_a_destroyed_key_fails_its_own_unit_only(ctx: Context, commits: list[int]) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    patient = await support.make_patient(ctx)
    async with ctx.uow() as uow:
        await uow.session.execute(text("UPDATE accounts SET wrapped_key = NULL WHERE id = :id"), {"id": patient.id})
        await uow.commit()

    def deliver_to(account_id: int, subject: str) -> Work:
        async def work(uow: UnitOfWork) -> None:
            account = await uow.accounts.get(account_id)
            assert account is not None
            raw = support.make_message("lab@lab.test", account.address, subject, "results").replace(b"\n", b"\r\n")
            await deliver(uow, ctx.keyring, raw, [account])
            await uow.commit()

        return work

    commits.clear()
    outcomes = await in_one_batch(
        ctx, deliver_to(pro.id, "one"), deliver_to(patient.id, "shredded"), deliver_to(pro.id, "two")
    )

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], KeyDestroyed)
    async with ctx.uow(readonly=True) as uow:
        inbox = await uow.mailboxes.get(pro.id, "INBOX")
        assert inbox is not None
        assert len(await uow.messages.list(inbox.id)) == 2
        held = await uow.session.execute(select(func.count()).select_from(Message))
        assert held.scalar_one() == 2, "nothing of the shredded account's delivery stays"
    if ctx.db.is_sqlite:
        assert len(commits) == 1


async def test_a_unit_left_without_commit_is_rolled_back_alone(ctx: Context, commits: list[int]) -> None:
    commits.clear()

    outcomes = await in_one_batch(ctx, add_domain("b.test"), add_domain("c.test", commit=False), add_domain("d.test"))

    assert outcomes == [None, None, None]
    names = await domains(ctx)
    assert {"b.test", "d.test"} <= names
    assert "c.test" not in names
    assert "unit:c.test" not in await audited(ctx)
    if ctx.db.is_sqlite:
        assert len(commits) == 1


async def test_a_unit_committed_then_used_again_takes_a_new_turn(ctx: Context) -> None:
    async def twice(uow: UnitOfWork) -> None:
        await add_domain("first.test")(uow)
        await add_domain("second.test")(uow)  # after its commit: a new savepoint, in a batch open then
        uow.session.add(Domain(name="dropped.test", kind=DomainKind.PROFESSIONAL))
        await uow.session.flush()  # after the second commit, never committed: rolled back at the exit

    outcomes = await in_one_batch(ctx, twice, add_domain("other.test"))

    assert outcomes == [None, None]
    names = await domains(ctx)
    assert {"first.test", "second.test", "other.test"} <= names
    assert "dropped.test" not in names


async def test_watchers_wake_only_after_the_commit(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    async with ctx.uow(readonly=True) as uow:
        inbox = await uow.mailboxes.get(pro.id, "INBOX")
        assert inbox is not None
    holding, go = asyncio.Event(), asyncio.Event()

    async def touch(uow: UnitOfWork) -> None:
        await add_domain("touched.test", commit=False)(uow)
        uow.touch(inbox.id)
        await uow.commit()

    async def hold(uow: UnitOfWork) -> None:
        holding.set()
        await go.wait()
        await add_domain("held.test")(uow)

    with ctx.db.notifier.subscribe([inbox.id]) as sub:
        woken = asyncio.create_task(sub.wait())
        batch = asyncio.create_task(in_one_batch(ctx, touch, hold))
        await holding.wait()  # the toucher committed its savepoint and handed the writer on
        if ctx.db.is_sqlite:
            await asyncio.sleep(0)
            assert not woken.done(), "no watcher is woken before the batch's COMMIT"
            assert "touched.test" not in await domains(ctx)
        go.set()
        assert await woken
        assert "touched.test" in await domains(ctx), "a woken watcher reads what woke it"
        assert await batch == [None, None]


async def test_the_audit_chain_verifies_after_a_batch(ctx: Context) -> None:
    await support.add_domains(ctx)
    works = [add_domain(f"audit{i}.test") for i in range(4)]
    works.insert(2, add_domain(support.PRO_DOMAIN))  # fails: its entry never exists

    outcomes = await in_one_batch(ctx, *works)

    assert [o is None for o in outcomes] == [True, True, False, True, True]
    async with ctx.uow(readonly=True) as uow:
        report = await uow.audit_log.report()
    assert report.intact, report.sentence()
    entries = await audited(ctx)
    assert report.checked == len(entries)
    ours = [e for e in entries if e.startswith("unit:audit")]
    if ctx.db.is_postgresql:
        ours.sort()  # concurrent transactions: sealed in the order they committed
    assert ours == [f"unit:audit{i}.test" for i in range(4)], "chained in the order the units committed"


async def test_a_batch_reads_and_writes_the_audit_head_row_once(ctx: Context) -> None:
    if not ctx.db.is_sqlite:
        pytest.skip("PostgreSQL units stage their entries; one sealer chains them (test_audit_sealer.py)")
    await support.add_domains(ctx)
    seen: list[str] = []
    inserts: list[str] = []

    def on_statement(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "audit_head" in statement:
            seen.append(statement.split()[0].upper())
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG"):
            inserts.append(statement)

    works = [add_domain(f"head{i}.test") for i in range(4)]
    works.insert(1, add_domain(support.PRO_DOMAIN))  # fails after the first: the head moves on without it
    event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", on_statement)
    try:
        outcomes = await in_one_batch(ctx, *works)
    finally:
        event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", on_statement)

    assert [o is None for o in outcomes] == [True, False, True, True, True]
    assert seen == ["SELECT", "UPDATE"], "six audited units, one batch: the head row read once, written once"
    assert len(inserts) == 1, "the entries of the batch's committed units written together, before its COMMIT"
    async with ctx.uow(readonly=True) as uow:
        report = await uow.audit_log.report()
    assert report.intact, report.sentence()
    assert report.checked == len(await audited(ctx))
    entries = await audited(ctx)
    assert [e for e in entries if e.startswith("unit:head")] == [f"unit:head{i}.test" for i in range(4)]
    assert f"unit:{support.PRO_DOMAIN}" not in entries, "the failed unit's entry is not written with the others"


async def test_a_failed_commit_is_every_unit_of_the_batch(ctx: Context) -> None:
    if not ctx.db.is_sqlite:
        pytest.skip("PostgreSQL commits each unit alone: a failed COMMIT is its own unit's")

    async def poison(uow: UnitOfWork) -> None:
        # a foreign key checked at COMMIT only: the whole transaction cannot commit
        await uow.session.execute(text("PRAGMA defer_foreign_keys = ON"))
        await uow.session.execute(text("INSERT INTO account_activity (account_id) VALUES (999999)"))
        await uow.commit()

    holding, go = asyncio.Event(), asyncio.Event()

    async def first(uow: UnitOfWork) -> None:
        holding.set()
        await go.wait()
        await add_domain("a.test")(uow)

    async def unit(work: Work) -> None:
        async with ctx.uow() as uow:
            await work(uow)

    opener = asyncio.create_task(unit(first))
    await holding.wait()
    tasks = [asyncio.create_task(unit(w)) for w in (add_domain("b.test"), poison)]
    await queued(ctx, 2)
    go.set()
    outcomes = await asyncio.gather(opener, *tasks, return_exceptions=True)

    assert all(isinstance(o, IntegrityError) for o in outcomes), outcomes
    assert not {"a.test", "b.test"} & await domains(ctx)
    async with ctx.uow() as uow:
        await add_domain("after.test")(uow)
    assert "after.test" in await domains(ctx), "the next batch commits"


async def test_a_nested_writer_fails_instead_of_hanging(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> None:
    if not ctx.db.is_sqlite:
        pytest.skip("PostgreSQL writers do not wait for one another in this process")
    monkeypatch.setattr(groupcommit, "SQLITE_BUSY_TIMEOUT_MS", 50)
    async with ctx.uow() as outer:
        with pytest.raises(StoreBusy):
            async with ctx.uow():
                pass
        await add_domain("outer.test")(outer)
    assert "outer.test" in await domains(ctx)
