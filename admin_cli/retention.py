"""``masante-admin retention``: the end of the retention period of closed mailboxes (crypto-shredding)."""

from __future__ import annotations

import click
from rich.table import Table

from admin_cli.common import actor, console, run
from directory.patients import PatientService
from mailserver.context import Context
from mailserver.store.models import Account


@click.group()
def retention() -> None:
    """Closed mailboxes whose data is kept until the end of the retention period."""


@retention.command("run")
def run_() -> None:
    """Destroy the keys of closed mailboxes whose retention period is over (their messages become unreadable)."""

    async def go(ctx: Context) -> list[str]:
        return await PatientService(ctx).run_retention(actor=actor())

    shredded = run(go)
    for address in shredded:
        console.print(f"key destroyed: {address}")
    console.print(f"{len(shredded)} mailbox key(s) destroyed")


@retention.command("list")
def list_() -> None:
    """Closed mailboxes whose data is still kept, and until when."""

    async def go(ctx: Context) -> list[Account]:
        return await PatientService(ctx).kept()

    table = Table("address", "closed", "kept until", box=None)
    for a in run(go):
        table.add_row(
            a.address,
            a.closed_at.date().isoformat() if a.closed_at else "",
            a.retention_until.date().isoformat() if a.retention_until else "",
        )
    console.print(table)
