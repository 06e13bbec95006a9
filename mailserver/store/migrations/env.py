"""Alembic environment, async-aware.

``mailserver.store.migrate`` hands us a live synchronous connection (from
``AsyncConnection.run_sync``) in ``config.attributes["connection"]``; the
``alembic`` command line is not needed. ``render_as_batch`` lets SQLite alter tables.
"""

from __future__ import annotations

from alembic import context

from mailserver.store.models import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through `masante-admin db upgrade` (mailserver.store.migrate)")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
