"""Retrying a transaction the database aborted to break a conflict between writers.

Invariants:
- Only PostgreSQL's deadlock (SQLSTATE 40P01) and serialization failure (40001) are retried: the
  database rolled the whole transaction back, so running the unit of work again from its start is safe.
  Every other error goes up untouched.
- At most ``ATTEMPTS`` runs, with a short jittered back-off between them (milliseconds: a pause to let
  the other writer finish, not a wait for time to pass); after the last, ``TransactionAborted``.
- The function retried opens its own unit of work and does nothing outside it that it cannot repeat.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from mailserver.store.errors import TransactionAborted

T = TypeVar("T")

ATTEMPTS = 3
RETRYABLE = frozenset({"40P01", "40001"})  # deadlock_detected, serialization_failure
BACKOFF_S = 0.005

#: how many transactions were run again, for tests and metrics
retried = 0


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE a driver error carries (asyncpg or psycopg, wrapped by SQLAlchemy or not)."""
    seen: BaseException | None = exc.orig if isinstance(exc, DBAPIError) else exc
    for _ in range(4):
        if seen is None:
            return None
        code = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(code, str):
            return code
        seen = seen.__cause__
    return None


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and sqlstate(exc) in RETRYABLE


async def retrying(work: Callable[[], Awaitable[T]], *, attempts: int = ATTEMPTS) -> T:
    """Run ``work`` (one unit of work, start to commit) again when the database aborted it as a conflict."""
    global retried
    for attempt in range(1, attempts + 1):
        try:
            return await work()
        except DBAPIError as exc:
            if not is_retryable(exc):
                raise
            if attempt == attempts:
                raise TransactionAborted(f"the transaction was aborted ({sqlstate(exc)}) {attempts} times") from exc
            retried += 1
            await asyncio.sleep(BACKOFF_S * attempt * (0.5 + random.random()))  # noqa: S311 - jitter, not secret
    raise AssertionError("unreachable")  # pragma: no cover
