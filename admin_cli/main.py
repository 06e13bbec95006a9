"""``masante-admin``: init, database, domains, accounts, keys, audit.

Every error is one line on stderr (``error: ...``) and a non-zero exit, never a
traceback; ``MASANTE_DEBUG=1`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from admin_cli import (
    account,
    agenda,
    app,
    app_password,
    audit,
    broadcast,
    db,
    directory,
    dkim,
    dns,
    doctor,
    domain,
    keys,
    patient,
    queue,
    retention,
    setup,
    trust,
    vault,
)
from admin_cli.common import EXPECTED_ERRORS, AdminError, console
from mailserver.store.errors import DatabaseError


class AdminGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except EXPECTED_ERRORS as exc:
            raise AdminError(str(exc)) from None
        except DatabaseError as exc:
            if os.environ.get("MASANTE_DEBUG"):
                raise
            first = (str(getattr(exc, "orig", None) or exc).splitlines() or ["(no detail)"])[0]
            raise AdminError(f"database error: {first}") from None
        except Exception as exc:
            if os.environ.get("MASANTE_DEBUG"):
                raise
            raise AdminError(
                f"internal error ({type(exc).__name__}): {exc} (MASANTE_DEBUG=1 shows the details)"
            ) from None


@click.group(cls=AdminGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", metavar="PATH", help="Configuration file (default: $MASANTE_CONFIG or var/masante.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print tables as JSON (a list of objects) for scripts.")
def cli(config: str | None, as_json: bool) -> None:
    """Administer a masante-mail server: setup, domains, accounts and patients, the trust space, the directory,
    the queue, keys and the audit log."""
    if as_json:  # standard output holds the JSON alone; counts and notes go to standard error
        console.file = sys.stderr


cli.add_command(setup.init)
cli.add_command(db.db)
cli.add_command(domain.domain)
cli.add_command(account.account)
cli.add_command(keys.keys)
cli.add_command(audit.audit)
cli.add_command(trust.trust)
cli.add_command(directory.directory)
cli.add_command(patient.patient)
cli.add_command(agenda.agenda)
cli.add_command(retention.retention)
cli.add_command(queue.queue)
cli.add_command(dkim.dkim)
cli.add_command(dns.dns_group)
cli.add_command(broadcast.broadcast)
cli.add_command(doctor.doctor)
cli.add_command(app_password.app_password)
cli.add_command(app.app)
cli.add_command(vault.vault)


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), default="bash")
def completion(shell: str) -> None:
    """Print the shell completion script: ``eval "$(masante-admin completion bash)"`` (or add it to ~/.bashrc)."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    assert cls is not None  # noqa: S101 - the three choices all have one
    click.echo(cls(cli, {}, "masante-admin", "_MASANTE_ADMIN_COMPLETE").source())


def main() -> None:
    try:
        cli.main(prog_name="masante-admin", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
