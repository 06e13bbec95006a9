"""``masante-admin audit``: verify the keyed chain against its anchors; show the newest entries.

Invariants: what ``tail`` prints passes through ``mailserver.text.escape`` (and
no rich markup is read in it), so a stored entry, even one written before
entries were escaped on write, cannot move the terminal's cursor or forge a row.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from rich.table import Table
from rich.text import Text

from admin_cli.common import console, print_table, run
from mailserver.context import Context
from mailserver.store.models import AuditEntry
from mailserver.store.repositories.audit import AuditReport
from mailserver.text import escape


@click.group()
def audit() -> None:
    """The keyed, anchored audit log."""


@audit.command()
def verify() -> None:
    """Check the whole chain with the audit key and the anchors; say what can be trusted (exit 1 if broken)."""

    async def go(ctx: Context) -> AuditReport:
        async with ctx.uow(readonly=True) as uow:
            return await uow.audit_log.report()

    report = run(go)
    if report.intact:
        console.print(Text(report.sentence()))
        return
    click.echo(f"error: {report.sentence()}", err=True)
    sys.exit(1)


def _shown(value: str) -> Text:
    # already escaped on write; escaping again without doubling backslashes only touches legacy rows
    return Text(escape(value, backslash=False))


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
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            _shown(e.actor),
            _shown(e.action),
            _shown(e.object_id),
            _shown(e.outcome),
            _shown(e.detail or ""),
        )
    print_table(table)
