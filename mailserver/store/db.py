"""Engines and sessions: one ``Database`` per process (one engine cannot be shared across event loops).

Invariants:
- SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when
  it returns: the acknowledgement a client gets is durable), foreign keys on, ``secure_delete`` on (freed
  pages are zeroed, so a destroyed key does not linger in the file) and a busy
  timeout. Python's sqlite3 transaction handling is switched off and we emit
  BEGIN ourselves: ``BEGIN IMMEDIATE`` for a unit of work that writes (the write
  lock is taken up front, so two writers wait for each other instead of failing
  on a lock upgrade), plain ``BEGIN`` for read-only ones.
- PostgreSQL runs at READ COMMITTED; row locks taken by ``UPDATE ... RETURNING``
  serialise what must be serial (UID allocation, the audit chain).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from mailserver.notify import ChangeNotifier

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    def __init__(
        self, url: str, *, echo: bool = False, notifier: ChangeNotifier | None = None, pool_size: int = 10
    ) -> None:
        self.url = url
        self.dialect = url.split(":", 1)[0].split("+", 1)[0]
        kwargs: dict[str, Any] = {"echo": echo}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs.update(pool_size=pool_size, max_overflow=pool_size * 2, pool_pre_ping=True)
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _sqlite_setup(self.engine)
        self.writer: async_sessionmaker[AsyncSession] = async_sessionmaker(self.engine, expire_on_commit=False)
        self.reader: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine.execution_options(masante_readonly=True), expire_on_commit=False
        )
        self.notifier = notifier or ChangeNotifier()

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

    async def dispose(self) -> None:
        await self.engine.dispose()


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
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def null_pool_engine(url: str) -> AsyncEngine:
    """A throw-away engine for one-off administrative statements."""
    return create_async_engine(url, poolclass=NullPool)
