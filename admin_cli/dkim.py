"""``masante-admin dkim``: our signing keys, and the trust space's public keys for verification."""

from __future__ import annotations

import click
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from crypto.dkim import txt_chunks
from directory.dkim import DkimKeys, KeyView
from mailserver.context import Context


@click.group()
def dkim() -> None:
    """DKIM keys: sign what we send, verify what operators send us."""


@dkim.command()
@click.argument("domain")
@click.option("--selector", help="Selector name (default: mssYYYYMM, the current month).")
def keygen(domain: str, selector: str | None) -> None:
    """Make a new signing key for our DOMAIN and print the DNS TXT record to publish.

    The private key is written under keys.dkim_dir (readable by the server only) and becomes the
    domain's signing key; the public record is also added to the key table, so that operators on a
    closed network can be given it (`masante-admin dkim add` on their side)."""

    async def go(ctx: Context) -> KeyView:
        return await DkimKeys(ctx).generate(domain, actor=actor(), selector=selector)

    key = run(go)
    strings = " ".join(f'"{c}"' for c in txt_chunks(key.record))
    click.echo(f"{key.name}. IN TXT ( {strings} )")
    click.echo(f"; selector {key.selector}: outbound mail from {key.domain} is signed with it from now on", err=True)


@dkim.command()
@click.argument("domain")
@click.argument("selector")
@click.argument("record")
def add(domain: str, selector: str, record: str) -> None:
    """Add an operator's public key (the TXT RECORD it publishes at SELECTOR._domainkey.DOMAIN)."""

    async def go(ctx: Context) -> KeyView:
        return await DkimKeys(ctx).add(domain, selector, record, actor=actor())

    key = run(go)
    console.print(f"key {key.name} added")


@dkim.command()
@click.argument("domain")
@click.argument("selector")
def remove(domain: str, selector: str) -> None:
    """Remove a public key from the table."""

    async def go(ctx: Context) -> None:
        await DkimKeys(ctx).remove(domain, selector, actor=actor())

    run(go)
    console.print(f"key {selector}._domainkey.{domain} removed")


@dkim.command("list")
@click.argument("domain", required=False)
def list_(domain: str | None) -> None:
    """List the public keys in the table (ours and the operators')."""

    async def go(ctx: Context) -> list[KeyView]:
        return await DkimKeys(ctx).list(domain)

    keys = run(go)
    if not keys:
        console.print("no DKIM key in the table")
        return
    table = Table("name", "source", "added (UTC)", "key", box=None)
    for k in keys:
        p = k.record.rpartition("p=")[2]
        table.add_row(k.name, k.source, k.created_at.strftime("%Y-%m-%d %H:%M"), f"{p[:12]}...{p[-8:]}")
    print_table(table)
