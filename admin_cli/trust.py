"""``masante-admin trust``: the trust space of operator domains (manual entries and the national whitelist)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from directory.trust import HistoryEntry, ImportPlan, Operator, TrustSpace
from mailserver.context import Context
from mailserver.store.models import OperatorStatus


@click.group()
def trust() -> None:
    """Operator domains we exchange mail with (the MSSanté trust space)."""


@trust.command("add")
@click.argument("domain")
@click.option("--dn", "dns", multiple=True, help="Subject DN of one of the operator's MTA certificates (repeatable).")
@click.option("--description", help="Who this operator is.")
@click.option("--mta-host", help="Where to relay mail for this domain (default: the domain's MX).")
@click.option("--mta-port", type=click.IntRange(1, 65535), help="The MTA's port (default 25).")
@click.option("--dkim/--no-dkim", default=False, show_default=True, help="Whether this operator DKIM-signs.")
def add(
    domain: str, dns: tuple[str, ...], description: str | None, mta_host: str | None, mta_port: int | None, dkim: bool
) -> None:
    """Add DOMAIN to the trust space by hand (an operator not, or not yet, in the national whitelist)."""

    async def go(ctx: Context) -> Operator:
        return await TrustSpace(ctx).add(
            domain,
            actor=actor(),
            dns=dns,
            description=description,
            mta_host=mta_host,
            mta_port=mta_port,
            dkim_signing=dkim,
        )

    op = run(go)
    console.print(f"{op.domain} added to the trust space ({len(op.dns)} certificate DN(s))")


@trust.command("set")
@click.argument("domain")
@click.option("--mta-host", help="Where to relay mail for this domain.")
@click.option("--mta-port", type=click.IntRange(1, 65535), help="The MTA's port.")
@click.option("--default-endpoint", is_flag=True, help="Forget the MTA host and port (use the domain's MX).")
@click.option("--dkim/--no-dkim", default=None, help="Whether this operator DKIM-signs.")
@click.option("--description", help="Who this operator is.")
@click.option("--add-dn", multiple=True, help="Add a certificate subject DN (repeatable).")
@click.option("--remove-dn", multiple=True, help="Remove a certificate subject DN (repeatable).")
def set_(
    domain: str,
    mta_host: str | None,
    mta_port: int | None,
    default_endpoint: bool,
    dkim: bool | None,
    description: str | None,
    add_dn: tuple[str, ...],
    remove_dn: tuple[str, ...],
) -> None:
    """Change the local settings of DOMAIN (kept across whitelist imports: MTA host and port, DKIM)."""

    async def go(ctx: Context) -> Operator:
        return await TrustSpace(ctx).update(
            domain,
            actor=actor(),
            mta_host=mta_host,
            mta_port=mta_port,
            dkim_signing=dkim,
            description=description,
            add_dns=add_dn,
            remove_dns=remove_dn,
            clear_endpoint=default_endpoint,
        )

    op = run(go)
    console.print(f"{op.domain} updated: MTA {_endpoint(op)}, DKIM {'yes' if op.dkim_signing else 'no'}")


def _status_command(name: str, status: OperatorStatus, done: str, help_text: str) -> None:
    @click.argument("domain")
    def cmd(domain: str) -> None:
        async def go(ctx: Context) -> None:
            await TrustSpace(ctx).set_status(domain, status, actor=actor())

        run(go)
        console.print(f"{domain.lower()} {done}")

    cmd.__doc__ = help_text
    trust.command(name)(cmd)


_status_command(
    "suspend",
    OperatorStatus.SUSPENDED,
    "suspended: its MTAs get a temporary refusal and mail to it is refused for now",
    "Suspend DOMAIN: mail from and to it is deferred (4.7.1) until it is resumed.",
)
_status_command("resume", OperatorStatus.ACTIVE, "is active again", "Make a suspended DOMAIN active again.")


@trust.command("remove")
@click.argument("domain")
def remove(domain: str) -> None:
    """Remove DOMAIN from the trust space: mail from and to it is refused from now on."""

    async def go(ctx: Context) -> None:
        await TrustSpace(ctx).remove(domain, actor=actor())

    run(go)
    console.print(f"{domain.lower()} removed from the trust space")


def _endpoint(op: Operator) -> str:
    if op.mta_host is None and op.mta_port is None:
        return "MX"
    return f"{op.mta_host or op.domain}:{op.mta_port or 25}"


@trust.command("list")
@click.option("--search", "pattern", help="Only domains, descriptions or DNs containing this text.")
@click.option("--source", type=click.Choice(["manual", "whitelist"]), help="Only entries from this source.")
@click.option("--suspended", is_flag=True, help="Only suspended operators.")
def list_(pattern: str | None, source: str | None, suspended: bool) -> None:
    """List the trust space."""

    async def go(ctx: Context) -> list[Operator]:
        return await TrustSpace(ctx).list()

    ops = run(go)
    if pattern:
        p = pattern.lower()
        ops = [
            o for o in ops if p in o.domain or p in (o.description or "").lower() or any(p in d.lower() for d in o.dns)
        ]
    if source:
        ops = [o for o in ops if o.source == source]
    if suspended:
        ops = [o for o in ops if not o.active]
    table = Table("domain", "status", "source", "MTA", "DKIM", "certificate DNs", "description", box=None)
    for o in ops:
        table.add_row(
            o.domain,
            o.status.value,
            o.source,
            _endpoint(o),
            "yes" if o.dkim_signing else "no",
            "; ".join(o.dns) or "(none)",
            o.description or "",
        )
    print_table(table)
    console.print(f"{len(ops)} domain(s)")


@trust.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would be added, removed and changed; change nothing.")
@click.option("--show", default=20, show_default=True, type=click.IntRange(0), help="Names listed per category.")
def import_(file: Path, dry_run: bool, show: int) -> None:
    """Import the national whitelist FILE (listeblanchemssante.xml): swap the trust space in one transaction,
    keeping the previous version (see `trust history` and `trust rollback`)."""

    async def go(ctx: Context) -> ImportPlan:
        return await TrustSpace(ctx).import_whitelist(file, actor=actor(), dry_run=dry_run)

    plan = run(go)
    when = plan.generated_at.isoformat() if plan.generated_at else "unknown date"
    console.print(
        f"{plan.source}: whitelist generated {when}, {plan.entries} entries, {plan.domains} domains "
        f"(sha256 {plan.sha256[:16]}...)"
    )
    verb = "would be" if dry_run else "were"

    def listing(title: str, names: list[str]) -> None:
        console.print(f"{len(names)} domain(s) {verb} {title}" + (":" if names and show else ""))
        for n in names[:show]:
            console.print(f"  {n}")
        if len(names) > show and show:
            console.print(f"  ... and {len(names) - show} more")

    listing("added", plan.added)
    listing("removed", plan.removed)
    listing("changed", [f"{c.domain} ({', '.join(c.what)})" for c in plan.changed])
    console.print(f"{plan.unchanged} domain(s) unchanged")
    if plan.kept_manual:
        console.print(f"{len(plan.kept_manual)} manual entr{'y' if len(plan.kept_manual) == 1 else 'ies'} kept:")
        for n in plan.kept_manual[:show]:
            console.print(f"  {n}")
    for r in plan.rejected:
        click.echo(f"warning: entry {r.position}: {r.name!r} skipped: {r.reason}", err=True)
    if dry_run:
        console.print("dry run: nothing was changed")
    else:
        console.print("trust space replaced; the previous version is kept (`masante-admin trust rollback`)")


@trust.command("sync")
@click.option("--url", help="Where the national list is published (default: whitelist.url).")
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA bundle for the mirror."
)
@click.option("--force", is_flag=True, help="Import even a list that removes more than whitelist.max_removed_share.")
def sync(url: str | None, ca_file: Path | None, force: bool) -> None:
    """Download the national whitelist over HTTPS (checked against URL.sha256 when published) and import it."""
    from directory.sync import WhitelistSync

    r = run(lambda ctx: WhitelistSync(ctx).sync(actor=actor(), url=url, ca_file=ca_file, force=force))
    console.print(
        f"{r.url}: {r.plan.domains} domains, +{len(r.plan.added)} -{len(r.plan.removed)} ~{len(r.plan.changed)} "
        f"({'checksum verified' if r.checksum_checked else 'no checksum published'}); last good copy {r.kept}"
    )


@trust.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file.")
def export(output: Path | None) -> None:
    """Write the trust space in the whitelist format (to standard output, or --output)."""

    async def go(ctx: Context) -> bytes:
        return await TrustSpace(ctx).export()

    data = run(go)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        console.print(f"trust space written to {output}")


@trust.command("history")
def history() -> None:
    """The imports and rollbacks of the trust space, newest first."""

    async def go(ctx: Context) -> list[HistoryEntry]:
        return await TrustSpace(ctx).history()

    table = Table("#", "when (UTC)", "what", "by", "source", "+", "-", "~", "can roll back", box=None)
    for h in run(go):
        table.add_row(
            str(h.id),
            h.at.strftime("%Y-%m-%d %H:%M:%S"),
            h.kind,
            h.actor,
            h.source or "",
            str(h.added),
            str(h.removed),
            str(h.changed),
            "yes" if h.restorable else "no",
        )
    print_table(table)


@trust.command("rollback")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def rollback(yes: bool) -> None:
    """Put back the trust space as it was before the last import (or rollback)."""
    if not yes:
        click.confirm("Replace the trust space by its previous version?", abort=True)

    async def go(ctx: Context) -> int:
        return (await TrustSpace(ctx).rollback(actor=actor())).entries

    n = run(go)
    console.print(f"trust space rolled back: {n} domains restored")
