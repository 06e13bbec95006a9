"""``masante-admin patient``: patients' mailboxes, named by their INS."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from admin_cli.common import actor, console, fail, print_table, read_password, run
from directory.patients import BulkReport, PatientService
from mailserver.admission import Admission
from mailserver.context import Context
from mailserver.store.models import Account, AccountStatus


@click.group()
def patient() -> None:
    """Patients' mailboxes (<INS>@<patient domain>): open, oppose, suspend, close."""


@patient.command("open")
@click.argument("ins", required=False)
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Open one mailbox per INS in this file (one per line; # comments).",
)
@click.option("--name", "display_name", help="The patient's name as shown to correspondents.")
@click.option("--password-stdin", is_flag=True, help="Read a password from standard input (IMAP login).")
def open_(ins: str | None, file: Path | None, display_name: str | None, password_stdin: bool) -> None:
    """Open the mailbox of the patient INS (15 characters: NIR or NIA and its key), or of every INS in --file."""
    if (ins is None) == (file is None):
        fail("give one INS, or --file with one INS per line")
    if file is not None:
        if password_stdin or display_name:
            fail("--name and --password-stdin apply to one patient, not to --file")
        _open_file(file)
        return
    assert ins is not None  # noqa: S101 - checked above
    password = read_password(password_stdin, prompt=False)

    async def go(ctx: Context) -> Account:
        return await PatientService(ctx).open(ins, actor=actor(), password=password, display_name=display_name)

    a = run(go)
    console.print(f"patient mailbox {a.address} opened")


def _open_file(file: Path) -> None:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )

    async def go(ctx: Context) -> BulkReport:
        task = progress.add_task("opening", total=None)

        def update(r: BulkReport) -> None:
            progress.update(task, description=f"{r.opened} opened, {r.existing} existing, {r.invalid} invalid")

        with progress, file.open(encoding="utf-8-sig") as lines:
            return await PatientService(ctx).open_many(lines, actor=actor(), progress=update)

    r = run(go)
    rate = r.opened / r.seconds if r.seconds > 0 else 0.0
    console.print(
        f"{r.opened} patient mailbox(es) opened, {r.existing} already open, {r.invalid} invalid line(s) "
        f"({r.seconds:.1f} s, {rate:.0f}/s)"
    )
    for b in r.bad_lines:
        click.echo(f"warning: line {b.line}: {b.reason}", err=True)
    if r.invalid > len(r.bad_lines):
        click.echo(f"warning: ... {r.invalid - len(r.bad_lines)} more invalid line(s)", err=True)


def _status_command(name: str, status: AccountStatus, done: str, help_text: str) -> None:
    @click.argument("ins")
    def cmd(ins: str) -> None:
        async def go(ctx: Context) -> Account:
            return await PatientService(ctx).set_status(ins, status, actor=actor())

        a = run(go)
        console.print(f"patient mailbox {a.address} {done}")

    cmd.__doc__ = help_text
    patient.command(name)(cmd)


_status_command(
    "oppose",
    AccountStatus.OPPOSED,
    "is opposed: mail to it is refused (5.2.1)",
    "Record that the patient INS refused the service: mail is refused permanently (5.2.1).",
)
_status_command(
    "suspend",
    AccountStatus.SUSPENDED,
    "is suspended: mail to it is deferred (4.2.1), no login",
    "Suspend the mailbox of INS for now (e.g. suspected fraud): mail is deferred (4.2.1).",
)
_status_command(
    "activate",
    AccountStatus.ACTIVE,
    "is active",
    "Make the mailbox of INS active again (after opposition or suspension).",
)


@patient.command("close")
@click.argument("ins")
@click.option("--erase", is_flag=True, help="The patient asked for deletion: destroy the key now.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --erase.")
def close(ins: str, erase: bool, yes: bool) -> None:
    """Close the mailbox of INS: mail is refused; its data is kept for the retention period, unless --erase."""
    if erase and not yes:
        click.confirm(f"Destroy the key of patient {ins}? Their messages can never be read again", abort=True)

    async def go(ctx: Context) -> Account:
        return await PatientService(ctx).close(ins, actor=actor(), erase=erase)

    a = run(go)
    if erase:
        console.print(f"patient mailbox {a.address} closed; its key is destroyed and its messages unreadable")
    else:
        until = a.retention_until.date().isoformat() if a.retention_until else "the end of the retention period"
        console.print(f"patient mailbox {a.address} closed; data kept until {until}")


@patient.command("reopen")
@click.argument("ins")
def reopen(ins: str) -> None:
    """Reopen the closed mailbox of INS with its data (if it was not erased)."""

    async def go(ctx: Context) -> Account:
        return await PatientService(ctx).reopen(ins, actor=actor())

    a = run(go)
    console.print(f"patient mailbox {a.address} reopened")


@patient.command("show")
@click.argument("ins")
def show(ins: str) -> None:
    """Status of the mailbox of INS and the professionals the patient may reply to."""

    async def go(ctx: Context) -> tuple[Account, list[str]]:
        account = await PatientService(ctx).get(ins)
        return account, await Admission(ctx).grants_of(account.address)

    a, grants = run(go)
    table = Table(box=None, show_header=False)
    table.add_row("address", a.address)
    table.add_row("INS", a.ins or "")
    status = a.status.value + (" (key destroyed)" if a.wrapped_key is None else "")
    table.add_row("status", status)
    if a.retention_until:
        table.add_row("data kept until", a.retention_until.date().isoformat())
    table.add_row("may reply to", "\n".join(grants) or "(nobody yet)")
    print_table(table)
