"""Storage errors that services translate into their own typed results."""


class StoreError(Exception):
    """Base class for storage errors."""


class Conflict(StoreError):
    """A uniqueness rule was broken (the row already exists)."""


class NotFound(StoreError):
    """The row asked for does not exist."""


class StoreBusy(StoreError):
    """The database could not take the write in time (a transient condition)."""
