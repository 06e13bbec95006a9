"""Apply Alembic migrations from inside the running event loop (the CLI, the tests).

Alembic is synchronous; we hand it the synchronous face of an async connection
(``AsyncConnection.run_sync``), the recipe from Alembic's cookbook.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from mailserver.store.db import Database
from mailserver.store.models import Base

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("no migration found: the package is incomplete")
    return head


async def upgrade(db: Database, revision: str = "head") -> None:
    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        cfg.attributes["metadata_key"] = lambda: db.metadata_key  # for migrations that seal existing rows
        command.upgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)
    # a migration that sealed rows leaves their old pages in the WAL: fold it in (secure_delete zeroes them)
    await db.sqlite_checkpoint()


async def downgrade(db: Database, revision: str) -> None:
    def run(conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        cfg.attributes["metadata_key"] = lambda: db.metadata_key
        command.downgrade(cfg, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def current_revision(db: Database) -> str | None:
    def run(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with db.engine.connect() as conn:
        return await conn.run_sync(run)


async def schema_drift(db: Database) -> list[object]:
    """What differs between the migrated database and the models (``alembic check``): [] when in step."""

    def run(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))

    async with db.engine.connect() as conn:
        return await conn.run_sync(run)
