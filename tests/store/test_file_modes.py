"""The SQLite database, its WAL and its shared-memory file are readable by their owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from mailserver.store import migrate
from mailserver.store.db import Database


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most systems give a service: files 0644 unless we say otherwise
    try:
        yield
    finally:
        os.umask(old)


def modes(path: Path) -> dict[str, int]:
    out = {}
    for suffix in ("", "-wal", "-shm"):
        p = path.with_name(path.name + suffix)
        out[suffix or "db"] = stat.S_IMODE(p.stat().st_mode)
    return out


async def test_new_database_files_are_created_0600(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "masante.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate.upgrade(db)
        async with db.engine.begin() as conn:  # keep the WAL and -shm alive while we look
            await conn.execute(text("CREATE TABLE probe (x TEXT)"))
            await conn.execute(text("INSERT INTO probe VALUES ('279035121518989')"))
            assert modes(path) == {"db": 0o600, "-wal": 0o600, "-shm": 0o600}
    finally:
        await db.dispose()


async def test_an_existing_database_with_a_wide_mode_is_narrowed(tmp_path: Path, open_umask: None) -> None:
    path = tmp_path / "masante.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    os.chmod(path, 0o644)  # e.g. copied with cp, or created by an older version
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with db.engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
            assert modes(path) == {"db": 0o600, "-wal": 0o600, "-shm": 0o600}
    finally:
        await db.dispose()
