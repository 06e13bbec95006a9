"""Engines and sessions: one ``Database`` per process (one engine cannot be shared across event loops).

Invariants:
- SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when
  it returns: the acknowledgement a client gets is durable), foreign keys on, ``secure_delete`` on (freed
  pages are zeroed, so a destroyed key does not linger in the file) and a busy
  timeout. Python's sqlite3 transaction handling is switched off and we emit
  BEGIN ourselves: ``BEGIN IMMEDIATE`` for a unit of work that writes (the write
  lock is taken up front, so two writers wait for each other instead of failing
  on a lock upgrade), plain ``BEGIN`` for read-only ones. Processes sharing the file take turns at the
  writer through a lock file beside it (``writer_lock``, ``store.writerlock``). The BEGIN goes with the
  transaction's first statement, and every statement is one round trip to aiosqlite's thread
  (``store.sqlite_driver``).
- PostgreSQL runs at READ COMMITTED; row locks taken by ``UPDATE ... RETURNING``
  serialise what must be serial (UID allocation, the audit chain).
- The SQLite file is created 0600 before SQLite opens it, and a wider mode on an
  existing one is narrowed: SQLite gives its ``-wal`` and ``-shm`` files the
  mode of the database file, so none of the three is readable by others.
- Statement parameters (addresses, INS) never reach a log or an exception's text
  (``hide_parameters``).
- ``audit`` carries the audit key and anchors of this process; releasing the
  database (``dispose``) writes the last anchor.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Delete, Insert, Update, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from mailserver.notify import ChangeNotifier
from mailserver.sqlitefile import on_disk
from mailserver.store.auditchain import AuditTrail
from mailserver.store.sealing import MetadataSealer
from mailserver.store.sqlite_driver import defer_begin, one_trip_dbapi
from mailserver.store.writerlock import WriterLock

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: SQLite connections kept open in the pool: about as many as the read units of work in flight at once under load
#: (20 clients), so a read does not open one (a thread of aiosqlite's, the PRAGMAs) and close it again when the pool
#: is over its size (5 by default: 1.9% of the server's time under bench/imap_bench.py went on opening them);
#: twice as many more may be opened for a burst
SQLITE_POOL_SIZE = 20
#: PostgreSQL connections a process holds at most (each a server process of PostgreSQL's; its ``max_connections``,
#: 100 by default, must cover every process), all kept open once opened: a unit of work past them waits for one.
#: 10 was too few for 20 clients; 20 with 10 more "for a burst" opened those 10 (a backend forked, the startup, the
#: authentication, asyncpg's type introspection) and closed them again at every burst: 40 logins at once from
#: one address opened 8 connections a round, p50 213 ms on PostgreSQL (SQLite: 30 ms)
PG_POOL_SIZE = 30
#: seconds a pooled PostgreSQL connection may rest before it is checked (a round trip) when taken again: one
#: that works all the time is not checked at every checkout (``pool_pre_ping`` costs three round trips, BEGIN,
#: an empty query and ROLLBACK, per unit of work), one that rested through a restart or a failover is
PG_PING_AFTER_IDLE = 5.0
#: the SQLite database and its -wal/-shm files: owner only
SQLITE_FILE_MODE = 0o600

log = logging.getLogger("masante.store")


class Database:
    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        notifier: ChangeNotifier | None = None,
        pool_size: int | None = None,
        audit: AuditTrail | None = None,
    ) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        self.audit = audit
        kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
        if self.dialect == "sqlite":
            _private_sqlite_file(url)
            # check_same_thread off: a large body is written through sqlite3's blob API from a worker thread
            # (``BlobRepository._write_in_pieces``), aiosqlite having no public way onto its own thread
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
            kwargs["module"] = one_trip_dbapi()  # one round trip to aiosqlite's thread per statement (sqlite_driver)
            size = pool_size or SQLITE_POOL_SIZE
            kwargs.update(pool_size=size, max_overflow=size * 2)
        else:
            kwargs.update(pool_size=pool_size or PG_POOL_SIZE, max_overflow=0)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        else:
            _ping_rested_connections(self.engine)
        _refuse_writes_in_reads(self.engine)
        self.writer: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)
        # on PostgreSQL a read runs without a transaction: at READ COMMITTED each statement reads its own snapshot
        # either way, and BEGIN and ROLLBACK were two more round trips per read (a reader that needs one snapshot
        # asks for it: ``AuditRepository.report``)
        read_options: dict[str, Any] = {"masante_readonly": True}
        if self.dialect == "postgresql":
            read_options["isolation_level"] = "AUTOCOMMIT"
        self.reader: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine.execution_options(**read_options), expire_on_commit=False
        )
        self.notifier = notifier or ChangeNotifier()
        #: the SQLite database's file name as SQLite opens it (None: PostgreSQL)
        self.sqlite_file: str | None = make_url(url).database if self.dialect == "sqlite" else None
        #: orders the group writers of the processes sharing this SQLite file (``writerlock``)
        self.writer_lock = WriterLock(self.sqlite_file)
        self.metadata_key_loader: Callable[[], MetadataSealer] | None = None
        self._metadata_key: MetadataSealer | None = None
        self._before_dispose: list[Callable[[], Awaitable[None]]] = []

    @property
    def metadata_key(self) -> MetadataSealer:
        """The key of the metadata kept under digests and seals (``crypto.metadata``), loaded on first use."""
        if self._metadata_key is None:
            if self.metadata_key_loader is None:
                raise RuntimeError("this database was opened without the credential key: open it with Context.open")
            self._metadata_key = self.metadata_key_loader()
        return self._metadata_key

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    async def sqlite_checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (outside any transaction)."""
        if not self.is_sqlite:
            return
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            cursor = await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
            await cursor.close()

    def before_dispose(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Await ``fn`` when the database is disposed of, before its connections close (a background task's end)."""
        self._before_dispose.append(fn)

    async def dispose(self) -> None:
        for fn in self._before_dispose:
            await fn()
        if self.audit is not None:
            self.audit.close()
        await self.engine.dispose()
        self.writer_lock.close()


def _private_sqlite_file(url: str) -> None:
    """Create the database file 0600 (before any data is in it), or narrow an existing file's mode."""
    name = make_url(url).database
    if not on_disk(name):
        return
    path = Path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SQLITE_FILE_MODE)
    except FileExistsError:
        for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            try:
                mode = stat.S_IMODE(os.stat(p).st_mode)
                if mode & ~SQLITE_FILE_MODE:
                    os.chmod(p, SQLITE_FILE_MODE)
            except FileNotFoundError:
                continue
            except PermissionError:
                log.warning("store.file-mode", extra={"fields": {"file": str(p), "mode": oct(mode)}})
        return
    except FileNotFoundError:
        return  # no such directory: SQLite says so when it opens the file
    os.close(fd)


def _ping_rested_connections(engine: AsyncEngine) -> None:
    """Check a pooled connection when it is taken after resting ``PG_PING_AFTER_IDLE`` seconds or more; a dead one
    is replaced before the unit of work sees it (``DisconnectionError``: the pool tries a new connection). A
    connection that dies while it works is invalidated by SQLAlchemy with every other of the pool older than it,
    so a PostgreSQL restart under load fails the units of work in flight, and no later one."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["masante_rested_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("masante_rested_since")
        if since is None or time.monotonic() - since < PG_PING_AFTER_IDLE:
            return  # new, or it worked a moment ago
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - whatever broke it, the pool replaces it
            raise DisconnectionError("a pooled PostgreSQL connection is gone") from exc
        if not alive:
            raise DisconnectionError("a pooled PostgreSQL connection is gone")


class ReadOnlyViolation(RuntimeError):
    """A read-only unit of work ran a write: a bug, refused before it reaches the database."""


def _refuse_writes_in_reads(engine: AsyncEngine) -> None:
    """An INSERT, UPDATE or DELETE (Core or an ORM flush) on a read-only unit's connection raises
    ``ReadOnlyViolation``: on PostgreSQL a read has no transaction (``reader``), so nothing would roll it back."""

    @event.listens_for(engine.sync_engine, "before_execute")
    def on_execute(conn: Connection, clauseelement: Any, *_args: Any) -> None:
        if isinstance(clauseelement, _WRITES) and conn.get_execution_options().get("masante_readonly", False):
            raise ReadOnlyViolation(f"a read-only unit of work cannot {clauseelement.__visit_name__}")


_WRITES = (Insert, Update, Delete)


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")
        # FULL in WAL mode: every commit fsyncs the WAL, so a 250 or an APPEND OK survives a power cut
        # (NORMAL only syncs at checkpoints: the last commits could be lost)
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("masante_readonly", False)
        sql = "BEGIN" if readonly else "BEGIN IMMEDIATE"
        # sent with the transaction's first statement, in its round trip (``sqlite_driver``)
        if not defer_begin(conn.connection.dbapi_connection, sql):
            conn.exec_driver_sql(sql)


def null_pool_engine(url: str) -> AsyncEngine:
    """A throw-away engine for one-off administrative statements."""
    return create_async_engine(url, poolclass=NullPool)
