from __future__ import annotations

import click
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from directory.accounts import AccountService, DomainInfo
from mailserver.context import Context
from mailserver.store.models import Domain, DomainKind


@click.group()
def domain() -> None:
    """Local mail domains (professional or patient)."""


@domain.command("add")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in DomainKind]),
    default=DomainKind.PROFESSIONAL.value,
    show_default=True,
    help="professional: PER/ORG/APP mailboxes; patient: INS mailboxes.",
)
def add(name: str, kind: str) -> None:
    """Add a local domain NAME."""

    async def go(ctx: Context) -> Domain:
        return await AccountService(ctx).add_domain(name, DomainKind(kind), actor=actor())

    d = run(go)
    console.print(f"domain {d.name} added ({d.kind.value})")


@domain.command("list")
def list_() -> None:
    """List local domains."""

    async def go(ctx: Context) -> list[DomainInfo]:
        return await AccountService(ctx).list_domains()

    table = Table("domain", "kind", "accounts", box=None)
    for d in run(go):
        table.add_row(d.name, d.kind.value, str(d.accounts))
    print_table(table)
