from __future__ import annotations

import click

from admin_cli import provision
from admin_cli.common import actor, config_option, console, run
from mailserver.config import config_path
from mailserver.context import Context


@click.command()
@click.option(
    "--demo", is_flag=True, help="Loopback-only demo: ports 2525/2587/2465/2143/2993, demo domains and accounts."
)
@click.option("--hostname", help="The server's host name (default: this machine's FQDN; localhost for --demo).")
@click.option("--patient-domain", help="The patient domain (default patient.masante.fr).")
def init(demo: bool, hostname: str | None, patient_domain: str | None) -> None:
    """Set up (or complete) a server: configuration, KEK, audit key, TLS, database schema[, demo data].

    Idempotent: what already exists is kept.
    """
    path = config_path(config_option(click.get_current_context()))
    report = provision.Report()
    cfg = provision.write_config(path, demo=demo, hostname=hostname, patient_domain=patient_domain, report=report)
    provision.ensure_kek(cfg, report)
    provision.ensure_audit_key(cfg, report)
    provision.ensure_tls(cfg, report)

    async def go(ctx: Context) -> None:
        await provision.ensure_schema(ctx, report)
        if demo:
            await provision.ensure_demo_data(ctx, report, actor())

    run(go, cfg)
    for item in report.created:
        console.print(f"created {item}")
    if report.kept:
        console.print(f"kept {len(report.kept)} existing item(s): " + "; ".join(report.kept))
    if demo:
        console.print(provision.demo_summary(cfg))
