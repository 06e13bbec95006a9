from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

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
    """The rows of a hot statement (tuples by position), straight from the driver (``store.direct``)."""
    return await direct.fetch(session, stmt, params)


async def execute(session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None) -> None:
    """``rows_of`` for a hot statement that returns nothing (an UPDATE without RETURNING, a lock)."""
    await direct.fetch(session, stmt, params)


#: the INSERT of ``insert_many`` for a table and its columns, built once
_INSERTS: dict[tuple[Table, tuple[str, ...]], Executable] = {}


async def insert_many(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (dicts with the same keys, in the same order) with one driver-level ``executemany``
    (``store.direct``). Imports write hundreds of thousands of rows; compiling parameters row by row would cost
    more than the database's own work. Column types still convert the values (a repeated one once)."""
    if not rows:
        return
    names = tuple(rows[0])
    stmt = _INSERTS.get((table, names))
    if stmt is None:
        stmt = _INSERTS[(table, names)] = insert(table).values({n: bindparam(n, type_=table.c[n].type) for n in names})
    await direct.execute_many(session, stmt, rows)
