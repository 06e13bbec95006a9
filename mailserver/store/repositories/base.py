from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

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


async def insert_many(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys, in the same order) with one driver-level ``executemany``.

    Imports write hundreds of thousands of rows; compiling parameters row by row would cost more than
    the database's own work. Column types still convert the values: their bind processors run here."""
    if not rows:
        return
    conn = await session.connection()
    dialect = conn.dialect
    names = list(rows[0])
    quote = dialect.identifier_preparer.quote
    if dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in names)
    elif dialect.paramstyle == "numeric_dollar":
        marks = ", ".join(f"${i}" for i in range(1, len(names) + 1))
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
