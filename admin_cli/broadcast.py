"""``masante-admin broadcast``: health information sent to every patient mailbox, resumable."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from admin_cli.common import actor, console, fail, print_table, progress_bar, run
from mailserver.broadcast import AUDIENCES, PAGE, BroadcastError, BroadcastService
from mailserver.broadcast import Progress as Done
from mailserver.context import Context
from mailserver.store.models import Broadcast


@click.group()
def broadcast() -> None:
    """Information messages to every patient ("informations sur la santé" of the patient space)."""


@broadcast.command("send")
@click.option("--to", "audience", type=click.Choice(AUDIENCES), required=True, help="Who receives it.")
@click.option("--subject", required=True, help="The Subject of the message.")
@click.option("--from", "sender", metavar="ADDRESS", help="The From field (default: information@ the patient domain).")
@click.option("--page", type=click.IntRange(1, 10_000), default=PAGE, show_default=True, help="Patients per commit.")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def send(audience: str, subject: str, sender: str | None, page: int, file: Path) -> None:
    """Deliver the UTF-8 text of FILE to every active patient mailbox.

    Run again with the same FILE, subject and sender after an interruption: the broadcast
    resumes where it stopped, and no patient gets it twice."""
    text = file.read_bytes()
    bar = progress_bar()
    started = time.monotonic()

    async def go(ctx: Context) -> Done:
        task = bar.add_task("delivering", total=None)

        def update(p: Done) -> None:
            done = p.delivered + p.skipped
            bar.update(task, completed=done, total=p.total, description=f"broadcast {p.broadcast_id[:8]}")

        with bar:
            try:
                return await BroadcastService(ctx, page=page).send(
                    subject=subject, text=text, audience=audience, sender=sender, actor=actor(), progress=update
                )
            except BroadcastError as exc:
                fail(str(exc))

    done = run(go)
    seconds = time.monotonic() - started
    how = "resumed and finished" if done.resumed else "sent"
    console.print(f"broadcast {done.broadcast_id} {how}: {done.delivered} patient mailbox(es) ({seconds:.1f} s)")
    if done.skipped:
        console.print(f"{done.skipped} full mailbox(es) skipped (their quota left no room): they did not get it")


@broadcast.command("list")
def list_() -> None:
    """Broadcasts, oldest first, with how far each went."""

    async def go(ctx: Context) -> list[Broadcast]:
        return await BroadcastService(ctx).list()

    rows = run(go)
    if not rows:
        console.print("no broadcast yet")
        return
    table = Table("id", "started (UTC)", "to", "subject", "delivered", "skipped (full)", "state", box=None)
    for b in rows:
        table.add_row(
            b.id,
            b.created_at.strftime("%Y-%m-%d %H:%M"),
            b.audience,
            b.subject,
            str(b.delivered),
            str(b.skipped),
            "finished" if b.finished_at else "unfinished (send again to resume)",
        )
    print_table(table)
