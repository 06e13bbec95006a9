"""SQLite through aiosqlite with as few round trips to its thread as may be: one per statement at most, none for
the group commit's statements nor for most reads.

aiosqlite runs every sqlite3 call on the connection's own thread and hands each result back to the event loop
(a queue put, then ``call_soon_threadsafe`` and the loop's wake-up). SQLAlchemy's adapter makes four such round
trips for a SELECT (open a cursor, execute, fetch, close) and three for any other statement, and a transaction
one more for its ``BEGIN``. On SQLite those round trips are made while the unit of work holds the one writer
(``store.groupcommit``): each waits for the event loop to come back to it, behind every other session's work,
so the writer's hold time, and so every writer's wait, grew with them.

This driver keeps aiosqlite and SQLAlchemy's aiosqlite dialect and replaces the cursor only:

- a statement runs in one call on the connection's thread: open a sqlite3 cursor, execute, fetch every row
  (the adapter buffered them all anyway), read ``description``, ``rowcount`` and ``lastrowid``, close;
- the ``BEGIN`` of a transaction (``store.db`` emits ``BEGIN`` or ``BEGIN IMMEDIATE``) is kept back and sent in
  the same call as the transaction's first statement, before it; a transaction that runs no statement costs
  no round trip at all, nor does its COMMIT or ROLLBACK;
- a ROLLBACK when no transaction is open (the pool's reset of a connection whose session already ended its
  transaction) is skipped without a round trip, and the ROLLBACK that ends a read (a transaction begun as plain
  ``BEGIN``) runs on the calling thread: it only lets go of the snapshot;
- the group commit's batch (``store.groupcommit``), once its ``BEGIN IMMEDIATE`` has taken SQLite's write lock
  on aiosqlite's thread, runs its statements on the event loop's thread itself (``OneTripConnection.run_inline``):
  no round trip at all, and no turn of the event loop between a writer's statements while every other writer
  waits. Its COMMIT (an fsync) and a ROLLBACK go back to aiosqlite's thread;
- a read-only transaction (plain ``BEGIN``) runs its statements on the event loop's thread too, but for those
  that read ``blobs`` (a sealed body may be megabytes: those stay on aiosqlite's thread). In WAL mode a reader
  waits for no writer; a mailbox's UIDs and flags, a row, a count take microseconds to a few milliseconds for a
  very large mailbox, less than the round trip cost the event loop.

A sqlite3 connection is so used from two threads, never at once: the adapter's lock orders the statements of a
connection, and a session runs one at a time (``store.db`` opens SQLite with ``check_same_thread=False``). What
runs on the event loop can still wait there in one case: SQLite's reader retries while another process recovers
the WAL after a crash (rare; bounded by the busy timeout).

What a unit of work sees is unchanged: the BEGIN still runs before anything of its transaction (a read-only
one still reads one snapshot, a writer still takes SQLite's write lock before its first statement), and an
error of the BEGIN is raised by that first statement. The private part of aiosqlite used is
``Connection._execute(fn, *args)`` (queue a call for its thread, await the result: aiosqlite has no public
way onto its thread) and ``Connection._conn`` (its sqlite3 connection); ``tests/store/test_sqlite_driver.py``
pins both, and the round trips, so an aiosqlite that changes them fails there first.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util.concurrency import await_


def _run(
    conn: sqlite3.Connection, begin: str | None, operation: str, parameters: Any, many: bool
) -> tuple[Any, int, int | None, list[Any] | None]:
    """On the connection's thread: the kept-back BEGIN, the statement, and all it returns."""
    if begin is not None:
        conn.execute(begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _short_read(operation: str) -> bool:
    """A statement of a read-only transaction that may run on the event loop: any but those reading ``blobs``
    (a sealed body may be megabytes)."""
    return "blobs" not in operation


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement is one call on aiosqlite's thread (no sqlite3 cursor kept open)."""

    __slots__ = ("_description", "_rowcount", "_lastrowid", "arraysize")

    _adapt_connection: OneTripConnection

    def __init__(self, adapt_connection: OneTripConnection) -> None:  # no cursor opened here: no round trip
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = {}  # type: ignore[assignment]
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self.arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    async def _async_soft_close(self) -> None:
        return None  # nothing open on the driver's side: the rows are already here

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        return None  # sqlite3 has no result sets after the first

    def execute(self, operation: Any, parameters: Any = None) -> Any:
        try:
            return await_(self._run_async(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> Any:
        try:
            return await_(self._run_async(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run_async(self, operation: Any, parameters: Any, many: bool) -> None:
        adapt = self._adapt_connection
        async with adapt._execute_mutex:
            begin, adapt._begin = adapt._begin, None
            if begin is not None:
                adapt._reading = begin == "BEGIN"
            driver = self._connection
            if (adapt._inline and begin is None) or (adapt._reading and _short_read(operation)):
                # the group commit's batch, its write lock held (``run_inline``), or a read that touches no
                # body: run here, on the event loop
                self._description, self._rowcount, self._lastrowid, rows = _run(
                    driver._conn, begin, operation, parameters, many
                )
            else:
                self._description, self._rowcount, self._lastrowid, rows = await driver._execute(
                    _run, driver._conn, begin, operation, parameters, many
                )
            self._rows = collections.deque(rows) if rows else collections.deque()


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """aiosqlite's adapted connection with ``OneTripCursor`` and a BEGIN kept for the first statement."""

    __slots__ = ("_begin", "_inline", "_reading")

    _cursor_cls = OneTripCursor  # type: ignore[assignment]

    def __init__(self, dbapi: Any, connection: Any) -> None:  # an aiosqlite.Connection
        super().__init__(dbapi, connection)
        self._begin: str | None = None
        self._inline = False
        self._reading = False  # the open transaction began as a plain BEGIN (a read-only unit of work's)

    async def run_inline(self) -> None:
        """Send the kept-back BEGIN now, on aiosqlite's thread (where SQLite's busy handler may wait for another
        process's write lock), then run this transaction's statements on the calling thread, the event loop's,
        until its COMMIT or ROLLBACK (which go back to aiosqlite's thread: the COMMIT's fsync takes
        milliseconds). For the group commit's batch (``store.groupcommit``): it holds SQLite's write lock, so
        its statements wait for nobody, and each takes tens of microseconds where a round trip to the thread and
        back through the event loop took a whole turn of the loop, behind every other session's work, while
        every other writer of the process waited."""
        begin, self._begin = self._begin, None
        if begin is not None:
            driver = self._connection
            await driver._execute(driver._conn.execute, begin)
        self._inline, self._reading = True, False

    def defer_begin(self, sql: str) -> None:
        """Send ``sql`` (``BEGIN ...``) with the next statement, before it, in the same round trip."""
        if self._begin is not None:
            raise RuntimeError("a transaction is already begun on this connection")
        self._begin = sql

    def commit(self) -> None:
        self._inline = self._reading = False
        if self._begin is not None:  # BEGIN never sent: nothing to commit
            self._begin = None
            return
        super().commit()

    def rollback(self) -> None:
        reading, self._inline, self._reading = self._reading, False, False
        if self._begin is not None:  # BEGIN never sent: nothing to roll back
            self._begin = None
            return
        driver = self._connection
        if driver._connection is None:
            return
        if not driver._conn.in_transaction:
            # no transaction open (the pool's reset after the session ended its own): no round trip. Read on
            # the event loop's thread, safe since nothing runs on this connection meanwhile (it is not in use)
            return
        if reading:
            # the end of a read: SQLite lets go of its snapshot, microseconds; here rather than a round trip
            try:
                driver._conn.rollback()
            except Exception as error:
                self._handle_exception(error)
            return
        super().rollback()

    def close(self) -> None:
        self._begin = None
        self._inline = self._reading = False
        super().close()


class OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module handed to ``create_async_engine(module=...)``: aiosqlite, with ``OneTripConnection``."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        adapted = super().connect(*arg, **kw)
        return OneTripConnection(self, adapted._connection)


def one_trip_dbapi() -> OneTripDBAPI:
    return OneTripDBAPI(aiosqlite, sqlite3)


def defer_begin(dbapi_connection: Any, sql: str) -> bool:
    """Keep ``sql`` for the connection's next statement if it is a ``OneTripConnection`` (False: it is not)."""
    if isinstance(dbapi_connection, OneTripConnection):
        dbapi_connection.defer_begin(sql)
        return True
    return False
