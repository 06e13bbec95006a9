from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from rich.table import Table

from admin_cli.common import console, run
from mailserver.context import Context
from mailserver.store.models import AuditEntry
from mailserver.store.repositories import AuditBreak


@click.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command()
def verify() -> None:
    """Check the whole chain; report the first broken link (exit 1 if any)."""

    async def go(ctx: Context) -> tuple[int, AuditBreak | None]:
        async with ctx.uow(readonly=True) as uow:
            return await uow.audit_log.verify()

    checked, broken = run(go)
    if broken is None:
        console.print(f"audit log intact: {checked} entries")
        return
    click.echo(
        f"error: audit log broken at entry {broken.seq}: {broken.reason} ({checked} entries verified before it)",
        err=True,
    )
    sys.exit(1)


@audit.command()
@click.option("-n", "count", default=20, show_default=True, type=click.IntRange(1, 100_000), help="How many entries.")
def tail(count: int) -> None:
    """Show the newest entries."""

    async def go(ctx: Context) -> Sequence[AuditEntry]:
        async with ctx.uow(readonly=True) as uow:
            return await uow.audit_log.tail(count)

    table = Table("seq", "time (UTC)", "actor", "action", "object", "outcome", "detail", box=None)
    for e in run(go):
        table.add_row(
            str(e.seq), e.at.strftime("%Y-%m-%d %H:%M:%S"), e.actor, e.action, e.object_id, e.outcome, e.detail or ""
        )
    console.print(table)
