"""Storage errors that services translate into their own typed results.

``DatabaseError`` is any error of the database or its driver that the store did
not translate: callers above the store catch it by this name (the CLI's
one-line "database error"), never by importing SQLAlchemy.
"""

from sqlalchemy.exc import SQLAlchemyError

DatabaseError = SQLAlchemyError


class StoreError(Exception):
    """Base class for storage errors."""


class Conflict(StoreError):
    """A uniqueness rule was broken (the row already exists)."""


class NotFound(StoreError):
    """The row asked for does not exist."""


class StoreBusy(StoreError):
    """The database could not take the write in time (a transient condition)."""


class TransactionAborted(StoreError):
    """PostgreSQL aborted the transaction to resolve a deadlock (40P01) or a serialization failure (40001),
    and it still failed after the retries of ``mailserver.store.retry.retrying``."""
