"""``masante-admin app-password``: one password per device, shown once, listed, revoked at once."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from directory.app_passwords import KIND_GRANT, AppPasswords, CredentialView, parse_protocols
from mailserver.context import Context


@click.group("app-password")
def app_password() -> None:
    """App passwords: a password of its own for each device or mail client, revocable alone."""


def when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M")


@app_password.command()
@click.argument("address")
@click.option("--name", required=True, help='What the owner calls the device ("Téléphone").')
@click.option("--scope", default="imap,smtp", show_default=True, help="The doors it opens: imap, smtp or both.")
def create(address: str, name: str, scope: str) -> None:
    """Make an app password for ADDRESS and print it, once, on the last line of standard output."""
    protocols = parse_protocols(scope)

    async def go(ctx: Context) -> tuple[CredentialView, str]:
        return await AppPasswords(ctx).create(address, name, actor=actor(), protocols=protocols)

    view, secret = run(go)
    click.echo(f"app password {view.name!r} for {address} ({', '.join(view.protocols)}); it is shown only now:")
    click.echo(secret)


@app_password.command("list")
@click.argument("address")
def list_(address: str) -> None:
    """The app passwords of ADDRESS: name, scope, created, last used, state."""

    async def go(ctx: Context) -> tuple[list[CredentialView], dt.datetime]:
        return [v for v in await AppPasswords(ctx).list(address) if v.kind != KIND_GRANT], ctx.clock()

    views, now = run(go)
    if not views:
        console.print(f"no app password for {address}")
        return
    table = Table("name", "kind", "scope", "created (UTC)", "last used (UTC)", "state", box=None)
    for v in views:
        table.add_row(v.name, v.kind, ",".join(v.protocols), when(v.created_at), when(v.last_used_at), v.state(now))
    print_table(table)


@app_password.command()
@click.argument("address")
@click.argument("name")
def revoke(address: str, name: str) -> None:
    """Revoke the app password NAME of ADDRESS: logins with it fail from now, open IMAP sessions end."""

    async def go(ctx: Context) -> int:
        return await AppPasswords(ctx).revoke(address, name, actor=actor())

    run(go)
    console.print(f"app password {name!r} of {address} revoked")


@app_password.command()
@click.argument("address")
@click.option("--email", help="Where one-time codes are mailed (an address outside this service).")
@click.option("--phone", help="Where one-time codes are sent by SMS (international form, +33...).")
def contact(address: str, email: str | None, phone: str | None) -> None:
    """Set where the one-time codes of ADDRESS's device enrolments are sent."""

    from directory.enrolment import set_contact  # its notifiers (aiohttp), only for this command

    async def go(ctx: Context) -> None:
        await set_contact(ctx, address, email=email, phone=phone, actor=actor())

    run(go)
    console.print(f"one-time codes for {address} go to {email or '-'} / {phone or '-'}")
