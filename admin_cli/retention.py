"""``masante-admin retention``: the end of the retention period of closed mailboxes (crypto-shredding), and the
mailboxes nobody uses (``inactive``: warned, then closed; ``mailserver.inactivity``)."""

from __future__ import annotations

import click
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from directory.patients import PatientService
from mailserver.context import Context
from mailserver.inactivity import Inactivity, Unused
from mailserver.store.models import Account
from mailserver.text import escape


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
    print_table(table)


@retention.command("inactive")
@click.option("--days", type=click.IntRange(min=0), default=365, show_default=True, help="unused for this long")
@click.option(
    "--grace-days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="days between the warning and the closure",
)
@click.option("--dry-run", is_flag=True, help="list what would be done, change nothing")
def inactive(days: int, grace_days: int, dry_run: bool) -> None:
    """Mailboxes unused for DAYS: warn their owners by mail (once), close them GRACE-DAYS after the warning."""

    async def go(ctx: Context) -> list[Unused]:
        return await Inactivity(ctx).review(days=days, grace_days=grace_days, actor=actor(), dry_run=dry_run)

    found = run(go)
    table = Table("address", "last login", "warned", "closes on", "action", box=None)
    for u in found:
        table.add_row(
            escape(u.address),
            u.last_login.date().isoformat() if u.last_login else "never",
            u.warned_at.date().isoformat() if u.warned_at else "",
            u.closes_on.date().isoformat() if u.closes_on else "",
            f"would be {u.action}" if dry_run and u.action != "waiting" else u.action,
        )
    print_table(table)
    counts = {a: sum(1 for u in found if u.action == a) for a in ("warned", "waiting", "closed")}
    verb = "to warn / waiting / to close" if dry_run else "warned / waiting / closed"
    console.print(
        f"{len(found)} mailbox(es) unused for {days} days: "
        f"{verb}: {counts['warned']} / {counts['waiting']} / {counts['closed']}"
    )
