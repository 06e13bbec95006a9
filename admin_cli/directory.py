"""``masante-admin directory``: import the Annuaire Santé extractions and search them."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from admin_cli.common import actor, console, print_table, run
from directory.annuaire import DirectoryImporter, DirectorySearch, Hit, ImportReport, Query
from mailserver.context import Context


@click.group()
def directory() -> None:
    """The directory of health professionals and their published secure mailboxes."""


@directory.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_(file: Path) -> None:
    """Import FILE: a PS_LibreAcces_Personne_activite or Extraction_Correspondance_MSSante extraction
    (text or zip). Importing it again updates what changed and reports counts."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[lines]} lines"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )

    async def go(ctx: Context) -> ImportReport:
        task = progress.add_task(file.name, total=None, lines=0)

        def update(done: int, total: int, lines: int) -> None:
            progress.update(task, completed=done, total=total, lines=lines)

        with progress:
            return await DirectoryImporter(ctx).import_file(file, actor=actor(), progress=update)

    report = run(go)
    console.print(f"{file.name}: {report.format}, {report.lines} lines read")
    table = Table("table", "added", "updated", "unchanged", box=None)
    for name, c in report.counts.items():
        table.add_row(name, str(c.added), str(c.updated), str(c.unchanged))
    print_table(table)
    if report.rejected or report.warnings:
        console.print(f"{report.rejected} line(s) rejected, {report.warnings} warning(s)")
    for p in report.problems:
        click.echo(f"warning: line {p.line}: {p.reason}", err=True)
    if report.rejected + report.warnings > len(report.problems):
        click.echo(f"warning: ... {report.rejected + report.warnings - len(report.problems)} more", err=True)
    if not report.changed:
        console.print("nothing changed: the directory already held this file")


@directory.command("search")
@click.argument("text", required=False)
@click.option("--name", help="A professional's or a structure's name (words in any order).")
@click.option("--id", "identifier", help="RPPS (11 digits), ADELI (9) or national id (8+RPPS, 0+ADELI).")
@click.option("--profession", help="Profession code (10, 21...) or label (médecin, pharmacien...).")
@click.option("--city", help="City name or postal code (its beginning).")
@click.option("--address", help="Words of the postal address, or part of a secure mail address.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="At most this many.")
def search(
    text: str | None,
    name: str | None,
    identifier: str | None,
    profession: str | None,
    city: str | None,
    address: str | None,
    limit: int,
) -> None:
    """Find professionals and their secure addresses. TEXT is a name, an identifier or a mail address."""
    query = Query(text=text, name=name, identifier=identifier, profession=profession, city=city, address=address)

    async def go(ctx: Context) -> list[Hit]:
        return await DirectorySearch(ctx).search(query, limit=limit)

    hits = run(go)
    table = Table("name", "kind", "identifier", "profession", "where", "secure address", box=None)
    for h in hits:
        table.add_row(
            h.name,
            h.kind,
            h.identifier or "",
            h.profession or "",
            "\n".join(h.places),
            "\n".join(h.mailboxes) or "(none published)",
        )
    print_table(table)
    console.print(f"{len(hits)} result(s)" + (f" (limited to {limit})" if len(hits) >= limit else ""))
