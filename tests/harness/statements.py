"""The SQL statements a server's engine sends, counted at the driver (``before_cursor_execute``), for the tests
that pin what a command costs (``tests/imap/test_statement_counts.py``, ``tests/smtp/test_*statement_counts.py``).

A transaction's own ``BEGIN`` is never counted; ``skip`` leaves out statements holding one of its words (matched
without regard to case), e.g. the queue worker's look at its queue, which runs in the background whatever the
clients do."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from mailserver.store.db import Database

#: PostgreSQL's audit sealer's statements
_PG_SEALER = (
    "pg_advisory_xact_lock",
    "DELETE FROM audit_pending",
    "FROM audit_head",
    "UPDATE audit_head",
    "INSERT INTO audit_log",
)


def background_sealer(db: Database) -> tuple[str, ...]:
    """The words of the audit sealer's statements where it runs in the background (PostgreSQL, ``uow.AuditSealer``),
    not on the path of the command that staged the entries; none on SQLite, whose group commit's batch writes the
    chain (counted there)."""
    return _PG_SEALER if db.is_postgresql else ()


class Counter:
    """Statements the server's engine sends, counted from any thread (the server runs in its own)."""

    def __init__(self, skip: tuple[str, ...] = ()) -> None:
        self.statements: list[str] = []
        self._skip = tuple(word.upper() for word in skip)
        self._lock = threading.Lock()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip().upper()
        if head.startswith("BEGIN") or any(word in head for word in self._skip):
            return
        with self._lock:
            self.statements.append(statement)

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[str]]:
        """The statements sent while the block runs (filled in when it ends)."""
        with self._lock:
            start = len(self.statements)
        seen: list[str] = []
        yield seen
        with self._lock:
            seen += self.statements[start:]


@contextlib.contextmanager
def listening(engine: AsyncEngine, skip: tuple[str, ...] = ()) -> Iterator[Counter]:
    """A ``Counter`` on ``engine`` for the block's duration."""
    counter = Counter(skip)
    event.listen(engine.sync_engine, "before_cursor_execute", counter)
    try:
        yield counter
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", counter)
