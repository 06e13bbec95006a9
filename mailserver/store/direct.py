"""Hot statements sent straight to the driver, in the transaction of the session they are given.

SQLAlchemy spends about 100-150 us of CPU on each statement it executes (the ORM's execution state, the
compiled cache's key, the execution context, the cursor adapter, a greenlet switch), about as much as
asyncpg and PostgreSQL together spend on a small prepared statement, and more than SQLite spends on one. An
SMTP delivery is a dozen of them: on a 2-core machine that was a third of the server's CPU. The statements
of the hot path (a delivery's reads, locks and inserts, the audit staging and sealing, the notification) go
through ``fetch`` and ``execute_many`` here instead (``repositories.base.rows_of``, ``execute``,
``insert_many``).

Invariants:
- A statement is a Core statement of this project built once (a module constant, or one kept per table and
  columns as ``insert_many`` keeps them), compiled once per dialect and kept: a statement built per call must
  not come here, each would be kept. PostgreSQL: its
  bound parameters numbered ``$1``, ``$2``... in order of appearance, an ``IN`` of an expanding parameter
  turned into ``= ANY($n)`` (``NOT IN``: ``<> ALL($n)``), one array parameter whatever the number of values:
  asyncpg prepares one statement for every call. SQLite: a ``?`` per parameter, an expanding one a ``?`` per
  value. Values bound in the statement itself are its defaults; column types that convert values (bind and
  result processors: SQLite's dates) still do. A column's Python-side default is not applied: the caller
  gives every value the statement names (a missing one is a ``KeyError``).
- It runs on the session's own connection, in the session's transaction, begun by SQLAlchemy's rules
  (``session.connection()``, asked once per transaction of the session: on SQLite that is where a writer
  takes its turn in the group commit and opens its savepoint, ``store.groupcommit``): what it writes commits
  or rolls back with the unit of work, and the session sees it (no ORM object is involved: the rows are the
  caller's). On asyncpg the transaction is begun here if no statement began it yet, as SQLAlchemy's adapter
  begins it; on SQLite the project's driver (``sqlite_driver.OneTripCursor``) runs it as it runs
  SQLAlchemy's: inline in the group commit's batch and for short reads, its kept-back ``BEGIN`` first.
- An error is SQLAlchemy's, as if the session had run the statement (``IntegrityError``,
  ``OperationalError``... with the driver's error as ``orig`` and its SQLSTATE): ``store.retry`` and the
  callers catch what they caught before.
- Listeners of the engine's ``before_execute`` and ``before_cursor_execute`` hear each statement: a read-only
  unit of work refuses an INSERT, UPDATE or DELETE here as it does there (``db._refuse_writes_in_reads``), and
  the tests that pin what a command costs count them.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable

from mailserver.store.sqlite_driver import OneTripCursor

#: compiled as the server's engine compiles, but with named placeholders this module numbers itself
_DIALECTS: dict[str, Any] = {
    "postgresql": PGDialect_asyncpg(paramstyle="pyformat"),  # type: ignore[no-untyped-call]
    "sqlite": SQLiteDialect_aiosqlite(paramstyle="pyformat"),
}
#: ``session.info`` key of the transaction and connection ``_connection`` found last
_KEPT = "masante_direct_connection"
_PLACEHOLDER = re.compile(r"(NOT IN|IN) \(__\[POSTCOMPILE_(\w+)\]\)|%\((\w+)\)s")


@dataclass(frozen=True, slots=True)
class Compiled:
    sql: str  # PostgreSQL: the statement; SQLite: the statement when it has no expanding parameter
    names: tuple[str, ...]  # PostgreSQL: the parameter of $1, $2...; SQLite: of each ? in turn (a name may repeat)
    expanding: frozenset[str]
    defaults: Mapping[str, Any]
    bind: Mapping[str, Any]  # name -> bind processor (only those that convert)
    result: tuple[Any, ...] | None  # a result processor per column, None when no column needs one
    pieces: tuple[str, ...] = ()  # SQLite: the text around each parameter (len(names) + 1 of them)
    negated: frozenset[int] = frozenset()  # SQLite: the positions of a NOT IN


_COMPILED: dict[tuple[Executable, str], Compiled] = {}


def compiled(stmt: Executable, dialect: Any = None) -> Compiled:
    """``stmt`` for the driver of ``dialect`` (the engine's; PostgreSQL's when not given), compiled once."""
    name = "postgresql" if dialect is None else dialect.name
    done = _COMPILED.get((stmt, name))
    if done is not None:
        return done
    real = _DIALECTS[name] if dialect is None else dialect
    c: Any = cast(Any, stmt).compile(dialect=_DIALECTS[name])
    names: list[str] = []
    expanding: set[str] = set()
    pieces: list[str] = []
    negated: set[int] = set()
    last = 0
    for m in _PLACEHOLDER.finditer(c.string):
        param = m.group(2) or m.group(3)
        if m.group(2) is not None:
            expanding.add(param)
        if name == "sqlite":  # each ? its own parameter, in order
            pieces.append(c.string[last : m.start()].replace("%%", "%"))
            if m.group(1) == "NOT IN":
                negated.add(len(names))
            names.append(param)
            last = m.end()
        elif param not in names:
            names.append(param)
    if name == "sqlite":
        pieces.append(c.string[last:].replace("%%", "%"))
        text = "?".join(pieces) if not expanding else ""
    else:

        def number(m: re.Match[str]) -> str:
            n = names.index(m.group(2) or m.group(3)) + 1
            if m.group(2) is None:
                return f"${n}"
            return f"= ANY(${n})" if m.group(1) == "IN" else f"<> ALL(${n})"

        text = _PLACEHOLDER.sub(number, c.string).replace("%%", "%")
    binds = {n: b for b, n in c.bind_names.items()}  # anonymous binds by the name compiled for them
    defaults = {n: binds[n].value for n in names if n in binds and binds[n].value is not None}
    bind = {n: p for n in names if n in binds and (p := binds[n].type._cached_bind_processor(real)) is not None}
    procs = tuple(col.type._cached_result_processor(real, None) for col in getattr(c, "_result_columns", ()))
    done = _COMPILED[(stmt, name)] = Compiled(
        text,
        tuple(names),
        frozenset(expanding),
        defaults,
        bind,
        procs if any(procs) else None,
        tuple(pieces),
        frozenset(negated),
    )
    return done


def _value(c: Compiled, name: str, params: Mapping[str, Any]) -> Any:
    v = params[name] if name in params else c.defaults[name]
    proc = c.bind.get(name)
    if proc is not None:
        return [proc(x) for x in v] if name in c.expanding else proc(v)
    if name in c.expanding and not isinstance(v, list):
        return list(v)
    return v


def _args(c: Compiled, params: Mapping[str, Any]) -> list[Any]:
    return [_value(c, name, params) for name in c.names]


def _many(c: Compiled, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """``_args`` of each row; a converted value that repeats (a batch's timestamp) converted once."""
    if not c.bind or len(rows) == 1:
        return [_args(c, r) for r in rows]
    memo: dict[str, dict[Any, Any]] = {name: {} for name in c.bind if name not in c.expanding}
    out = []
    for r in rows:
        values = []
        for name in c.names:
            seen = memo.get(name)
            v = r[name] if name in r else c.defaults[name]
            if seen is None or isinstance(v, (bytes, bytearray, memoryview)):  # a body: unique, never hashed
                values.append(_value(c, name, r))
                continue
            if v not in seen:
                seen[v] = c.bind[name](v)
            values.append(seen[v])
        out.append(values)
    return out


def _sqlite(c: Compiled, params: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """SQLite: the statement for these values (an expanding parameter is one ? per value) and its arguments."""
    values = _args(c, params)
    if not c.expanding:
        return c.sql, values
    out, args = [c.pieces[0]], []
    for i, (name, v) in enumerate(zip(c.names, values, strict=True)):
        if name in c.expanding:
            marks = ", ".join("?" * len(v))
            out.append(f"{'NOT IN' if i in c.negated else 'IN'} ({marks})")
            args += v
        else:
            out.append("?")
            args.append(v)
        out.append(c.pieces[i + 1])
    return "".join(out), args


async def _connection(session: AsyncSession) -> Any:
    """The session's connection in its current transaction (begun by SQLAlchemy's rules on the first statement).
    Kept for the rest of that transaction: asking the session again is a greenlet switch each time, about 3% of
    the server's CPU under the PostgreSQL deliveries."""
    tx = session.sync_session.get_transaction()
    kept = session.info.get(_KEPT)
    if tx is not None and kept is not None and kept[0] is tx and tx.is_active:
        return kept[1]
    conn = (await session.connection()).sync_connection
    session.info[_KEPT] = (session.sync_session.get_transaction(), conn)
    return conn


async def _heard(session: AsyncSession, stmt: Executable, sql: str, args: Any, many: bool) -> tuple[Any, Any]:
    """The session's connection and its adapter, once the engine's listeners have heard the statement."""
    conn = await _connection(session)
    dispatch = conn.dispatch
    if dispatch.before_execute:
        dispatch.before_execute(conn, stmt, (), {}, {})
    if dispatch.before_cursor_execute:
        dispatch.before_cursor_execute(conn, None, sql, args, None, many)
    return conn, conn.connection.dbapi_connection


def _processed(c: Compiled, rows: Any) -> list[Any]:
    if c.result is None:
        return cast(list[Any], rows)
    procs = c.result
    return [tuple(v if p is None else p(v) for p, v in zip(procs, r, strict=True)) for r in rows]


async def fetch(session: AsyncSession, stmt: Executable, params: Mapping[str, Any] | None = None) -> list[Any]:
    """Run ``stmt`` in ``session``'s transaction; its rows (by index; asyncpg's records by name too)."""
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        return await _fetch_sqlite(session, stmt, params or {}, dialect)
    c = compiled(stmt)
    args = _args(c, params or {})
    _conn, adapted = await _heard(session, stmt, c.sql, args, False)
    return _processed(c, await _on_asyncpg(adapted, c.sql, args, lambda driver: driver.fetch(c.sql, *args)))


async def execute_many(session: AsyncSession, stmt: Executable, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run ``stmt`` once per mapping of ``rows`` (one round trip: asyncpg's pipelined ``executemany``, sqlite3's)."""
    if not rows:
        return
    dialect = session.get_bind().dialect
    if dialect.name == "sqlite":
        c = compiled(stmt, dialect)
        if c.expanding:
            raise ValueError("execute_many: a statement with an expanding parameter")
        many = _many(c, rows)
        _conn, adapted = await _heard(session, stmt, c.sql, many, True)
        await _run_sqlite(adapted, c.sql, many, True)
        return
    c = compiled(stmt)
    args = _many(c, rows)
    _conn, adapted = await _heard(session, stmt, c.sql, args, True)
    if len(args) == 1:  # asyncpg's executemany sets up a pipeline: for one row, a plain execute is cheaper
        await _on_asyncpg(adapted, c.sql, args, lambda driver: driver.execute(c.sql, *args[0]))
    else:
        await _on_asyncpg(adapted, c.sql, args, lambda driver: driver.executemany(c.sql, args))


async def _on_asyncpg(adapted: Any, sql: str, args: Any, run: Callable[[Any], Awaitable[Any]]) -> Any:
    """``run(asyncpg connection)`` as SQLAlchemy's adapter runs a statement: under its lock, in its transaction
    (begun here if no statement began it), an error translated (``_raise``)."""
    async with adapted._execute_mutex:
        if adapted._transaction is None:
            await adapted._start_transaction()
        try:
            return await run(adapted._connection)
        except Exception as error:
            _raise(adapted, sql, args, error)


async def _fetch_sqlite(session: AsyncSession, stmt: Executable, params: Mapping[str, Any], dialect: Any) -> list[Any]:
    c = compiled(stmt, dialect)
    sql, args = _sqlite(c, params)
    _conn, adapted = await _heard(session, stmt, sql, args, False)
    return _processed(c, await _run_sqlite(adapted, sql, args, False))


async def _run_sqlite(adapted: Any, sql: str, args: Any, many: bool) -> list[Any]:
    """On the project's SQLite driver (``sqlite_driver.OneTripCursor``): inline in the group commit's batch or a
    short read, else one call on aiosqlite's thread; the kept-back BEGIN sent first."""
    cursor = OneTripCursor(adapted)
    try:
        await cursor._run_async(sql, args, many)
    except Exception as error:
        _raise(adapted, sql, args, error)
    return list(cursor._rows)


def _raise(adapted: Any, sql: str, args: Any, error: Exception) -> None:
    """``error`` as SQLAlchemy would have raised it (the adapter translates, ``DBAPIError.instance`` wraps)."""
    try:
        adapted._handle_exception(error)
    except adapted.dbapi.Error as translated:
        raise sa_exc.DBAPIError.instance(sql, args, translated, adapted.dbapi.Error) from error
    raise error  # pragma: no cover - _handle_exception always raises
