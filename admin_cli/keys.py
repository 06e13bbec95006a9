from __future__ import annotations

import click

from admin_cli.common import actor, console, progress_bar, run
from mailserver.context import Context
from mailserver.keys import RotationError, RotationResult, rotate_kek


@click.group()
def keys() -> None:
    """Key-encryption keys."""


@keys.command()
def rotate() -> None:
    """Re-wrap every account key under a new KEK (message bodies are not re-encrypted)."""

    bar = progress_bar()

    async def go(ctx: Context) -> RotationResult:
        task = bar.add_task("re-wrapping keys", total=None)
        with bar:
            try:
                return await rotate_kek(
                    ctx, actor=actor(), progress=lambda done, total: bar.update(task, completed=done, total=total)
                )
            except RotationError as exc:
                raise click.ClickException(str(exc)) from None

    r = run(go)
    console.print(
        f"KEK rotated: {r.old_kid} -> {r.new_kid}; {r.accounts} account keys and {r.queued} queued "
        "message keys re-wrapped"
    )
