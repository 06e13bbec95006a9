"""``masante-admin app``: delegated access for the labelled apps of a patient's space (scoped, expiring)."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table

from admin_cli.app_password import when
from admin_cli.common import actor, console, print_table, run
from directory.app_passwords import CredentialView
from directory.grants import Granted, Grants, parse_duration, parse_folders
from mailserver.context import Context


@click.group("app")
def app() -> None:
    """Grants to labelled apps: IMAP access to some folders of a patient's mailbox, read-only by default."""


@app.command()
@click.argument("ins")
@click.option("--app", "app_name", required=True, help="The app's name (as the patient's space labels it).")
@click.option("--folders", required=True, help="Folders granted, with their children: Documents,Agenda.")
@click.option("--read-only/--read-write", default=True, show_default=True, help="Whether the app may change them.")
@click.option("--expires", default="90d", show_default=True, help="How long the grant lasts: 90d, 12h, 30m.")
def grant(ins: str, app_name: str, folders: str, read_only: bool, expires: str) -> None:
    """Grant APP access to FOLDERS of the patient INS; print its credential, once, on the last line."""
    wanted, lasting = parse_folders(folders), parse_duration(expires)

    async def go(ctx: Context) -> Granted:
        return await Grants(ctx).grant(ins, app_name, wanted, actor=actor(), read_only=read_only, expires=lasting)

    g = run(go)
    mode = "read-only" if g.view.read_only else "read-write"
    click.echo(
        f"app {g.view.name!r} granted {', '.join(g.view.folders or ())} of {g.address} ({mode}, IMAP, "
        f"until {when(g.view.expires_at)} UTC); log in as {g.address} with this password, shown only now:"
    )
    click.echo(g.secret)


@app.command("list")
@click.argument("ins")
def list_(ins: str) -> None:
    """The grants of the patient INS: app, folders, mode, created, expires, last used, state."""

    async def go(ctx: Context) -> tuple[list[CredentialView], dt.datetime]:
        return await Grants(ctx).list(ins), ctx.clock()

    views, now = run(go)
    if not views:
        console.print(f"no app grant for {ins}")
        return
    table = Table("app", "folders", "mode", "created (UTC)", "expires (UTC)", "last used (UTC)", "state", box=None)
    for v in views:
        mode = "read-only" if v.read_only else "read-write"
        table.add_row(
            v.app or v.name,
            ",".join(v.folders or ()),
            mode,
            when(v.created_at),
            when(v.expires_at),
            when(v.last_used_at),
            v.state(now),
        )
    print_table(table)


@app.command()
@click.argument("ins")
@click.option("--app", "app_name", required=True, help="The app whose grant ends.")
def revoke(ins: str, app_name: str) -> None:
    """End the grant of APP on the patient INS: its logins fail from now, open sessions at their next command."""

    async def go(ctx: Context) -> int:
        return await Grants(ctx).revoke(ins, app_name, actor=actor())

    run(go)
    console.print(f"grant of app {app_name!r} on {ins} revoked")
