"""``masante-admin vault``: a patient's vault (``Documents/``), listed and exported, audited."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from admin_cli.common import actor, console, print_table, progress_bar, run
from directory.patients import PatientService
from mailserver import vault as V
from mailserver.context import Context


@click.group()
def vault() -> None:
    """A patient's documents (the Documents/ mailboxes): list, export."""


@vault.command("list")
@click.argument("ins")
def list_(ins: str) -> None:
    """The documents of the patient INS: folder, type, author, date, size."""

    async def go(ctx: Context) -> tuple[str, list[V.Entry]]:
        account = await PatientService(ctx).get(ins)
        found = await V.entries(ctx, account)
        await V.audit(ctx, account, "vault.list", actor=actor(), detail=f"{len(found)} documents")
        return account.address, found

    address, found = run(go)
    if not found:
        console.print(f"the vault of {address} holds no document")
        return
    table = Table(title=f"vault of {address}")
    for column in ("folder", "uid", "type", "author", "date", "size", "title"):
        table.add_column(column, justify="right" if column in ("uid", "size") else "left")
    for e in found:
        table.add_row(
            escape(e.folder.partition("/")[2] or e.folder),
            str(e.uid),
            escape(e.type),
            escape(e.author),
            escape(e.date),
            str(e.size),
            escape(e.title),
        )
    print_table(table)


@vault.command("export")
@click.argument("ins")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export(ins: str, directory: Path) -> None:
    """Write the documents of the patient INS under DIRECTORY, with an index.json of their metadata."""

    bar = progress_bar()

    async def go(ctx: Context) -> tuple[str, int, Path]:
        account = await PatientService(ctx).get(ins)
        found = await V.entries(ctx, account)
        task = bar.add_task("writing documents", total=len(found))
        with bar:
            index = V.export(
                found,
                directory,
                patient=account.address,
                when=ctx.clock(),
                progress=lambda done, _total: bar.update(task, completed=done),
            )
        await V.audit(ctx, account, "vault.export", actor=actor(), detail=f"{len(found)} documents")
        return account.address, len(found), index

    address, count, index = run(go)
    console.print(f"{count} document(s) of {escape(address)} exported; index: {escape(str(index))}")
