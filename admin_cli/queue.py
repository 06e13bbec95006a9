"""``masante-admin queue``: what waits for another operator, and the administrator's hands on it."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click
from rich.table import Table

from admin_cli.common import actor, console, fail, print_table, run
from mailserver.context import Context
from mailserver.store.models import QueueStatus

if TYPE_CHECKING:
    from mailserver.smtp.queue import QueueAdmin, QueueEntry


def _admin(ctx: Context) -> QueueAdmin:
    from mailserver.smtp.queue import QueueAdmin  # the SMTP stack is only loaded by the commands that need it

    return QueueAdmin(ctx)


@click.group()
def queue() -> None:
    """The outbound queue (messages for other operators of the trust space)."""


def _age(when: dt.datetime) -> str:
    seconds = int((dt.datetime.now(dt.UTC) - when).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@queue.command("list")
@click.option("--status", type=click.Choice([s.value for s in QueueStatus]), help="Only messages in this state.")
@click.option("--domain", help="Only messages for this recipient domain.")
def list_(status: str | None, domain: str | None) -> None:
    """List queued messages, oldest first (one line per recipient)."""

    async def go(ctx: Context) -> list[QueueEntry]:
        return await _admin(ctx).list(status=QueueStatus(status) if status else None, domain=domain)

    entries = run(go)
    if not entries:
        console.print("the queue is empty")
        return
    table = Table("id", "from", "to", "status", "tries", "age", "next try (UTC)", "size", "last error", box=None)
    for e in entries:
        table.add_row(
            e.id[:12],
            e.mail_from or "<>",
            e.rcpt_to,
            e.status,
            str(e.attempts),
            _age(e.created_at),
            e.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(e.size),
            (e.last_error or "")[:80],
        )
    print_table(table)
    console.print(f"{len(entries)} queued recipient(s)")


def _targets(ids: tuple[str, ...], everything: bool) -> None:
    if not ids and not everything:
        fail("name the messages (ids or id prefixes, as `queue list` shows them), or give --all")
    if ids and everything:
        fail("give ids or --all, not both")


@queue.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queued message.")
def retry(ids: tuple[str, ...], everything: bool) -> None:
    """Try IDS again now (the worker picks them up at its next poll)."""
    _targets(ids, everything)

    async def go(ctx: Context) -> int:
        try:
            return await _admin(ctx).retry(ids, everything=everything, actor=actor())
        except LookupError as exc:
            fail(str(exc.args[0]))

    console.print(f"{run(go)} message(s) due for delivery now")


@queue.command()
@click.argument("ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Every queued message.")
@click.option("--bounce", is_flag=True, help="Tell each sender, with a delivery status notification.")
def delete(ids: tuple[str, ...], everything: bool, bounce: bool) -> None:
    """Remove IDS from the queue; their encrypted copy is destroyed with them."""
    _targets(ids, everything)

    async def go(ctx: Context) -> int:
        try:
            return await _admin(ctx).delete(ids, everything=everything, bounce=bounce, actor=actor())
        except LookupError as exc:
            fail(str(exc.args[0]))

    n = run(go)
    console.print(f"{n} message(s) deleted" + (" and bounced to their senders" if bounce else ""))
