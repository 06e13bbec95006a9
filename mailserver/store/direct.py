"""Hot statements sent straight to asyncpg, in the transaction of the session they are given (PostgreSQL).

SQLAlchemy spends about 100-150 us of CPU on each statement it executes (the ORM's execution state, the
compiled cache's key, the execution context, the cursor adapter, a greenlet switch), about as much as
asyncpg and PostgreSQL together spend on a small prepared statement. An SMTP delivery is a dozen of them:
on a 2-core machine that was a third of the server's CPU. The statements of the hot path (a delivery's
reads, locks and inserts, the audit staging, the notification) go through ``fetch`` and ``execute_many``
here instead.

Invariants:
- A statement is a Core statement of this project, compiled once for the asyncpg dialect and kept:
  its bound parameters numbered ``$1``, ``$2``... in order of appearance, an ``IN`` of an expanding
  parameter turned into ``= ANY($n)`` (``NOT IN``: ``<> ALL($n)``), one array parameter whatever the
  number of values: asyncpg prepares one statement for every call. Values bound in the statement itself
  are its defaults; column types that convert values (bind and result processors) still do.
- It runs on the session's own connection, in the session's transaction (begun here if no statement
  began it yet, as SQLAlchemy's adapter begins it): what it writes commits or rolls back with the unit of
  work, and the session sees it (no ORM object is involved: the rows are the caller's).
- An error is SQLAlchemy's, as if the session had run the statement (``IntegrityError``,
  ``OperationalError``... with the driver's error as ``orig`` and its SQLSTATE): ``store.retry`` and the
  callers catch what they caught before.
- Listeners of the engine's ``before_execute`` and ``before_cursor_execute`` hear each statement: a read-only
  unit of work refuses an INSERT, UPDATE or DELETE here as it does there (``db._refuse_writes_in_reads``), and
  the tests that pin what a command costs count them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable

#: compiled as the server's engine compiles, but with named placeholders this module numbers itself
_DIALECT = PGDialect_asyncpg(paramstyle="pyformat")  # type: ignore[no-untyped-call]
_PLACEHOLDER = re.compile(r"(NOT IN|IN) \(__\[POSTCOMPILE_(\w+)\]\)|%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str
    names: tuple[str, ...]  # the parameter of $1, $2...
    expanding: frozenset[str]
    defaults: Mapping[str, Any]
    bind: Mapping[str, Any]  # name -> bind processor (only those that convert)
    result: tuple[Any, ...] | None  # a result processor per column, None when no column needs one


_COMPILED: dict[Executable, Compiled] = {}


def compiled(stmt: Executable) -> Compiled:
    """``stmt`` for the driver, compiled once."""
    done = _COMPILED.get(stmt)
    if done is not None:
        return done
    c: Any = cast(Any, stmt).compile(dialect=_DIALECT)
    names: list[str] = []
    expanding: set[str] = set()

    def number(m: re.Match[str]) -> str:
        name = m.group(2) or m.group(3)
        if name not in names:
            names.append(name)
        n = names.index(name) + 1
        if m.group(2) is None:
            return f"${n}"
        expanding.add(name)
        return f"= ANY(${n})" if m.group(1) == "IN" else f"<> ALL(${n})"

    sql = _PLACEHOLDER.sub(number, c.string).replace("%%", "%")
    binds = {name: b for b, name in c.bind_names.items()}  # anonymous binds by the name compiled for them
    defaults = {n: binds[n].value for n in names if n in binds and binds[n].value is not None}
    bind = {n: p for n in names if n in binds and (p := binds[n].type._cached_bind_processor(_DIALECT)) is not None}
    procs = tuple(col.type._cached_result_processor(_DIALECT, None) for col in getattr(c, "_result_columns", ()))
    done = _COMPILED[stmt] = Compiled(
        sql, tuple(names), frozenset(expanding), defaults, bind, procs if any(procs) else None
    )
    return done


def _args(c: Compiled, params: Mapping[str, Any]) -> list[Any]:
    out = []
    for name in c.names:
        v = params[name] if name in params else c.defaults[name]
        proc = c.bind.get(name)
        if proc is not None:
            v = [proc(x) for x in v] if name in c.expanding else proc(v)
        elif name in c.expanding and not isinstance(v, list):
            v = list(v)
        out.append(v)
    return out


async def _heard(session: AsyncSession, stmt: Executable, c: Compiled, args: Any, many: bool) -> tuple[Any, Any]:
    """The session's connection and its adapter, once the engine's listeners have heard the statement."""
    conn: Any = (await session.connection()).sync_connection  # the session's transaction begun by SQLAlchemy's rules
    dispatch = conn.dispatch
    if dispatch.before_execute:
        dispatch.before_execute(conn, stmt, (), {}, {})
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(conn, None, c.sql, args, None, many)
    return conn, conn.connection.dbapi_connection


async def fetch(session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None) -> list[Any]:
    """Run ``stmt`` in ``session``'s transaction; its rows (asyncpg records: by index or by name)."""
    c = compiled(stmt)
    args = _args(c, params or {})
    _conn, adapted = await _heard(session, stmt, c, args, False)
    async with adapted._execute_mutex:
        if adapted._transaction is None:
            await adapted._start_transaction()
        try:
            rows = await adapted._connection.fetch(c.sql, *args)
        except Exception as error:
            _raise(adapted, c.sql, args, error)
    if c.result is None:
        return cast(list[Any], rows)
    procs = c.result
    return [tuple(v if p is None else p(v) for p, v in zip(procs, r, strict=True)) for r in rows]


async def execute_many(session: AsyncSession, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``stmt`` once per mapping of ``rows`` (asyncpg's pipelined ``executemany``: one round trip)."""
    if not rows:
        return
    c = compiled(stmt)
    args = [_args(c, r) for r in rows]
    _conn, adapted = await _heard(session, stmt, c, args, True)
    async with adapted._execute_mutex:
        if adapted._transaction is None:
            await adapted._start_transaction()
        try:
            if len(args) == 1:  # asyncpg's executemany sets up a pipeline: for one row, a plain execute is cheaper
                await adapted._connection.execute(c.sql, *args[0])
            else:
                await adapted._connection.executemany(c.sql, args)
        except Exception as error:
            _raise(adapted, c.sql, args, error)


def _raise(adapted: Any, sql: str, args: Any, error: Exception) -> None:
    """``error`` as SQLAlchemy would have raised it (the adapter translates, ``DBAPIError.instance`` wraps)."""
    try:
        adapted._handle_exception(error)
    except adapted.dbapi.Error as translated:
        raise sa_exc.DBAPIError.instance(sql, args, translated, adapted.dbapi.Error) from error
    raise error  # pragma: no cover - _handle_exception always raises
