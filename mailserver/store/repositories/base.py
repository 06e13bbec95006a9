from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable

from mailserver.store import direct
from mailserver.store.errors import Conflict


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @contextlib.asynccontextmanager
    async def _conflict_as(self, message: str) -> AsyncIterator[None]:
        """Flush inside a savepoint and turn a uniqueness violation into ``Conflict(message)``."""
        try:
            async with self.session.begin_nested():
                yield
                await self.session.flush()
        except IntegrityError:
            raise Conflict(message) from None

    async def flush(self) -> None:
        """Write the changes made to objects read through this unit of work now, so that a broken rule
        raises here rather than at commit."""
        await self.session.flush()


def is_postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def rows_of(session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None) -> Sequence[Any]:
    """The rows of a hot statement (tuples by position): on PostgreSQL straight from asyncpg (``store.direct``),
    on SQLite through the session (its group commit already runs them without a round trip)."""
    if is_postgresql(session):
        return await direct.fetch(session, stmt, params)
    return (await session.execute(cast(Any, stmt), params)).all()


async def execute(session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None) -> None:
    """``rows_of`` for a hot statement that returns nothing (an UPDATE without RETURNING, a lock)."""
    if is_postgresql(session):
        await direct.fetch(session, stmt, params)
    else:
        await session.execute(cast(Any, stmt), params)


#: PostgreSQL: the INSERT of ``insert_many`` for a table and its columns, built once
_INSERTS: dict[tuple[Table, tuple[str, ...]], Executable] = {}


async def insert_many(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys, in the same order) with one driver-level ``executemany``.

    Imports write hundreds of thousands of rows; compiling parameters row by row would cost more than
    the database's own work. Column types still convert the values: their bind processors run here.
    On PostgreSQL the statement goes straight to asyncpg (``store.direct``)."""
    if not rows:
        return
    names = tuple(rows[0])
    if is_postgresql(session):
        stmt = _INSERTS.get((table, names))
        if stmt is None:
            stmt = _INSERTS[(table, names)] = insert(table).values(
                {n: bindparam(n, type_=table.c[n].type) for n in names}
            )
        await direct.execute_many(session, stmt, rows)
        return
    conn = await session.connection()
    dialect = conn.dialect
    quote = dialect.identifier_preparer.quote
    if dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in names)
    else:  # a driver this project does not use: let SQLAlchemy compile it
        await session.execute(insert(table), list(rows))
        return
    # identifiers come from the model, quoted by the dialect; values are bound parameters
    sql = f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) VALUES ({marks})"  # noqa: S608
    procs = [(i, p) for i, n in enumerate(names) if (p := table.c[n].type.bind_processor(dialect)) is not None]
    memo: list[dict[Any, Any]] = [{} for _ in procs]  # a batch repeats values (its timestamp): convert once
    params: list[tuple[Any, ...]] = []
    for r in rows:
        values = list(r.values())
        for (i, proc), seen in zip(procs, memo, strict=True):
            v = values[i]
            if isinstance(v, (bytes, bytearray, memoryview)):  # a sealed body: unique, maybe large, never hashed
                values[i] = proc(v)
                continue
            if v not in seen:
                seen[v] = proc(v)
            values[i] = seen[v]
        params.append(tuple(values))
    await conn.exec_driver_sql(sql, params)
