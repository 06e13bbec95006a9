from __future__ import annotations

import click

from admin_cli.common import console, run
from mailserver.context import Context


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
def upgrade() -> None:
    """Apply every pending migration."""

    from mailserver.store import migrate  # Alembic, only for the commands that need it

    async def go(ctx: Context) -> tuple[str | None, str | None]:
        before = await migrate.current_revision(ctx.db)
        await migrate.upgrade(ctx.db)
        return before, await migrate.current_revision(ctx.db)

    before, after = run(go)
    if before == after:
        console.print(f"database already at revision {after}")
    else:
        console.print(f"database upgraded from {before or 'empty'} to {after}")


@db.command()
def current() -> None:
    """Show the database's revision and the newest one this version knows."""

    from mailserver.store import migrate

    async def go(ctx: Context) -> str | None:
        return await migrate.current_revision(ctx.db)

    cur = run(go)
    head = migrate.head_revision()
    state = "up to date" if cur == head else "needs `masante-admin db upgrade`"
    console.print(f"database at {cur or 'empty'}, newest {head}: {state}")
