"""Where a SQLite database's file is, for what the processes serving it share beside it (``store.writerlock``'s
lock file, ``notify.SiblingRelay``'s sockets) and for its mode (``store.db``)."""

from __future__ import annotations

from typing import TypeGuard


def on_disk(database: str | None) -> TypeGuard[str]:
    """Whether ``database`` (a SQLite URL's database part) names a file: not in memory, not a ``file:`` URI."""
    return database is not None and database not in ("", ":memory:") and not database.startswith("file:")


def beside(database: str | None, suffix: str) -> str | None:
    """The path ``suffix`` names beside the file of ``database`` (None: it has no file to share)."""
    return database + suffix if on_disk(database) else None
