"""SQLite's driver (``store.sqlite_driver``): one round trip to aiosqlite's thread per statement, a transaction's
BEGIN sent with its first statement, and the same results, snapshots, locks and errors as before.

The round trips are counted at ``aiosqlite.Connection._execute``, the one door to aiosqlite's thread (the private
call the driver relies on: if aiosqlite renames it, these tests fail first).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from mailserver.store import groupcommit, sqlite_driver
from mailserver.store.db import Database

pytestmark = pytest.mark.filterwarnings("error::ResourceWarning")

META = MetaData()
NOTES = Table("notes", META, Column("id", Integer, primary_key=True), Column("body", String, unique=True))
BLOBS = Table("blobs", META, Column("id", Integer, primary_key=True), Column("body", String))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'driver.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(META.create_all)
    yield database
    await database.dispose()


@pytest.fixture
def trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The name of every call sent to aiosqlite's thread, in order."""
    seen: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    yield seen


async def test_a_select_in_a_transaction_is_one_round_trip_and_its_commit_another(
    db: Database, trips: list[str]
) -> None:
    async with db.engine.connect():  # a pooled connection, already open
        pass
    trips.clear()
    async with db.engine.begin() as conn:
        assert (await conn.execute(select(func.count()).select_from(NOTES))).scalar_one() == 0
        assert len(trips) == 1  # BEGIN IMMEDIATE and the SELECT, with its rows, in one call
    # the COMMIT; the pool's reset finds no transaction open and sends nothing
    assert len(trips) == 2, trips


async def test_a_read_runs_on_the_event_loop_but_where_it_reads_bodies(db: Database, trips: list[str]) -> None:
    async with db.reader() as session:  # a pooled connection, already open
        await session.execute(select(1))
    trips.clear()
    async with db.reader() as session:
        assert (await session.execute(select(func.count()).select_from(NOTES))).scalar_one() == 0
    # BEGIN, the SELECT and the ROLLBACK that ends the read (it only lets go of the snapshot) on the event loop's
    # thread, and the pool's reset after it finds nothing open: no round trip
    assert trips == [], trips
    async with db.reader() as session:
        await session.execute(select(func.count()).select_from(NOTES))
        await session.execute(select(BLOBS.c.body))  # a body may be megabytes: on aiosqlite's thread
    assert len(trips) == 1, trips
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert not raw.driver_connection._conn.in_transaction  # type: ignore[union-attr]  # the read did end


async def test_a_transaction_that_runs_nothing_costs_no_round_trip(db: Database, trips: list[str]) -> None:
    async with db.engine.connect():
        pass
    trips.clear()
    async with db.engine.begin():
        pass
    async with db.reader() as session:
        await session.connection()  # begun, nothing run
    assert trips == []


async def test_results_are_those_of_sqlite3(db: Database) -> None:
    async with db.engine.begin() as conn:
        first = await conn.execute(insert(NOTES).values(body="a"))
        assert first.inserted_primary_key == (1,)  # lastrowid
        many = await conn.execute(insert(NOTES), [{"body": "b"}, {"body": "c"}, {"body": "d"}])
        assert many.rowcount == 3
        changed = await conn.execute(update(NOTES).where(NOTES.c.body.in_(["b", "c"])).values(body=NOTES.c.body + "!"))
        assert changed.rowcount == 2
        returned = await conn.execute(insert(NOTES).values(body="e").returning(NOTES.c.id, NOTES.c.body))
        assert returned.all() == [(5, "e")]
        rows = await conn.execute(select(NOTES.c.id, NOTES.c.body).order_by(NOTES.c.id))
        assert list(rows.keys()) == ["id", "body"]
        assert rows.all() == [(1, "a"), (2, "b!"), (3, "c!"), (4, "d"), (5, "e")]
        gone = await conn.execute(text("DELETE FROM notes WHERE id > :n"), {"n": 3})
        assert gone.rowcount == 2
        empty = await conn.execute(select(NOTES.c.id).where(NOTES.c.id > 100))
        assert empty.first() is None


async def test_a_read_transaction_still_reads_one_snapshot(db: Database, tmp_path: Path) -> None:
    async with db.reader() as session:
        count = select(func.count()).select_from(NOTES)
        assert (await session.execute(count)).scalar_one() == 0  # the BEGIN ran before this
        other = sqlite3.connect(tmp_path / "driver.db", isolation_level=None)
        try:
            other.execute("INSERT INTO notes (body) VALUES ('meanwhile')")
        finally:
            other.close()
        assert (await session.execute(count)).scalar_one() == 0  # same snapshot
    async with db.reader() as session:
        assert (await session.execute(count)).scalar_one() == 1


async def test_a_writer_holds_the_write_lock_from_its_first_statement(db: Database, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / "driver.db", isolation_level=None, timeout=0)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(select(1))  # a read, but the transaction is BEGIN IMMEDIATE
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free once it committed
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_an_error_is_sqlalchemys_and_the_transaction_rolls_back(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(insert(NOTES).values(body="once"))
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(NOTES).values(body="twice"))
            await conn.execute(insert(NOTES).values(body="once"))
    async with db.engine.connect() as conn:
        bodies = (await conn.execute(select(NOTES.c.body))).scalars().all()
        assert bodies == ["once"]  # "twice" rolled back with its transaction


async def test_a_failing_first_statement_takes_the_begin_with_it(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO notes (id, body) VALUES (NULL, NULL), (1, 'x'), (1, 'y')"))
    async with db.engine.begin() as conn:  # the connection came back clean: a new transaction begins
        await conn.execute(insert(NOTES).values(body="after"))
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(NOTES.c.body))).scalars().all() == ["after"]


async def test_a_group_commit_batch_runs_its_statements_on_the_event_loop_between_begin_and_commit(
    db: Database, trips: list[str]
) -> None:
    """Twenty writers in one batch: BEGIN IMMEDIATE and COMMIT on aiosqlite's thread, every savepoint and statement
    in between on the event loop's own thread (no round trip), a failing writer rolled back to its savepoint alone."""
    from mailserver.store.uow import UnitOfWork

    loop_thread = threading.get_ident()
    ran_on: set[int] = set()
    real = sqlite_driver._run

    def watched(*args: Any) -> Any:
        ran_on.add(threading.get_ident())
        return real(*args)

    async def write(i: int) -> None:
        async with UnitOfWork(db) as uow:
            await uow.session.execute(insert(NOTES).values(body=f"note {i}"))
            await uow.session.execute(update(NOTES).where(NOTES.c.body == f"note {i}").values(body=f"note {i}."))
            if i == 7:
                await uow.session.execute(insert(NOTES).values(body="note 3."))  # taken by writer 3: unique
            await uow.commit()

    async with db.engine.connect():
        pass
    trips.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite_driver, "_run", watched)
        patch.setattr(groupcommit, "MAX_SECONDS", 3600.0)  # one batch, whatever the test machine's load
        results = await asyncio.gather(*(write(i) for i in range(20)), return_exceptions=True)
    assert [i for i, r in enumerate(results) if r is not None] == [7]
    assert isinstance(results[7], IntegrityError)
    assert ran_on == {loop_thread}  # every statement of the batch, the savepoints too
    # BEGIN IMMEDIATE, then the COMMIT (the pool's reset after it finds nothing open): the 20 units' 60 statements,
    # savepoints and releases made no round trip
    assert trips == ["execute", "commit"], trips
    async with db.reader() as session:
        bodies = (await session.execute(select(NOTES.c.body))).scalars().all()
    assert sorted(bodies) == sorted(f"note {i}." for i in range(20) if i != 7)
