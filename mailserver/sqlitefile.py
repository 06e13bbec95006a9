"""Where a SQLite database's file is, for what the processes serving it share beside it (``store.writerlock``'s
lock file, ``notify.SiblingRelay``'s sockets) and for its mode (``store.db``)."""

from __future__ import annotations


def on_disk(database: str | None) -> bool:
    """Whether ``database`` (a SQLite URL's database part) names a file: not in memory, not a ``file:`` URI."""
    return bool(database) and database != ":memory:" and not str(database).startswith("file:")


def beside(database: str | None, suffix: str) -> str | None:
    """The path ``suffix`` names beside the file of ``database`` (None: it has no file to share)."""
    return database + suffix if database is not None and on_disk(database) else None
