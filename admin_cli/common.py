"""What every command shares: the configuration, a context, the actor, errors as one line."""

from __future__ import annotations

import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console

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
