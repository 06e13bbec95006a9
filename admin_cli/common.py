"""What every command shares: the configuration, a context, the actor, errors as one line."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from crypto.envelope import CryptoError
from crypto.passwords import PasswordHashError
from directory.errors import DirectoryError
from mailserver.config import Config, ConfigError, load
from mailserver.context import Context
from mailserver.store.errors import StoreError

T = TypeVar("T")

#: tables are not wrapped to 80 columns when the output goes to a file or a pipe
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)

#: errors whose message is meant for the operator, printed as one line
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    CryptoError,
    DirectoryError,
    StoreError,
    PasswordHashError,
    OSError,
)


class AdminError(click.ClickException):
    """A refusal from a command, printed as ``error: <message>``."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    raise AdminError(message)


def actor() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"admin:{user}"


def progress_bar() -> Progress:
    """The progress bar of a long command (import, broadcast, key rotation, export): drawn on a terminal only,
    gone when the command ends, so that a pipe or a script sees the final line alone."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def json_wanted() -> bool:
    """``masante-admin --json ...``: tables come out as JSON (a list of objects, one per row) for scripts."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("as_json"))


def print_table(table: Table) -> None:
    """A command's table: drawn by rich, or with ``--json`` a JSON list of objects keyed by the column headers
    (cell text without its markup), so that every ``list`` feeds a script the same way."""
    if not json_wanted():
        console.print(table)
        return
    headers = [str(c.header) or f"column{i}" for i, c in enumerate(table.columns)]
    columns = [[_plain(cell) for cell in c.cells] for c in table.columns]
    rows = [dict(zip(headers, values, strict=True)) for values in zip(*columns, strict=True)] if columns else []
    click.echo(json.dumps(rows, ensure_ascii=False, indent=1))


def _plain(cell: object) -> str:
    if isinstance(cell, Text):
        return cell.plain
    if isinstance(cell, str):
        return Text.from_markup(cell).plain
    return str(cell)


def config_option(ctx: click.Context) -> str | None:
    value = ctx.find_root().params.get("config")
    return value if isinstance(value, str) else None


def get_config() -> Config:
    return load(config_option(click.get_current_context()))


def run(fn: Callable[[Context], Awaitable[T]], config: Config | None = None) -> T:
    """Open a context on the configuration, run ``fn`` in an event loop, always close."""
    cfg = config or get_config()

    async def main() -> T:
        ctx = Context.open(cfg)
        try:
            return await fn(ctx)
        finally:
            await ctx.close()

    return asyncio.run(main())


def read_password(from_stdin: bool, *, prompt: bool = True) -> str | None:
    if from_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            fail("no password on standard input")
        return value
    if prompt:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    return None
