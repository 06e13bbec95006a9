from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
from rich.table import Table

from admin_cli.common import actor, console, fail, print_table, read_password, run
from directory.accounts import AccountService
from mailserver.context import Context
from mailserver.store.models import Account, AccountCertificate, AccountKind, AccountStatus


@click.group()
def account() -> None:
    """Mailboxes of professionals, organisations, applications and patients."""


@account.command("create")
@click.argument("address")
@click.option(
    "--kind",
    type=click.Choice([k.value for k in AccountKind]),
    required=True,
    help="PER a professional, ORG a service, APP software, PATIENT a patient.",
)
@click.option("--name", "display_name", help="Display name.")
@click.option("--ins", help="The patient's INS (defaults to the address's local part).")
@click.option("--rpps", help="The professional's RPPS number.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--no-password", is_flag=True, help="Create without a password (token or certificate login only).")
def create(
    address: str,
    kind: str,
    display_name: str | None,
    ins: str | None,
    rpps: str | None,
    password_stdin: bool,
    no_password: bool,
) -> None:
    """Create the account ADDRESS with its key and special mailboxes."""
    password = None if no_password else read_password(password_stdin)

    async def go(ctx: Context) -> Account:
        return await AccountService(ctx).create(
            address, AccountKind(kind), actor=actor(), password=password, display_name=display_name, ins=ins, rpps=rpps
        )

    a = run(go)
    console.print(f"account {a.address} created ({a.kind.value})")


@account.command("create-pro")
@click.option("--rpps", required=True, help="The professional's RPPS number (or national id 8+RPPS).")
@click.option("--address", required=True, help="The mailbox address, on a local professional domain.")
@click.option(
    "--kind",
    type=click.Choice(["PER", "ORG", "APP"], case_sensitive=False),
    default="PER",
    show_default=True,
    help="PER the professional's own mailbox, ORG a service (secretariat), APP software they are responsible for.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.option("--no-password", is_flag=True, help="Create without a password (token or certificate login only).")
def create_pro(rpps: str, address: str, kind: str, password_stdin: bool, no_password: bool) -> None:
    """Create a professional's mailbox from the directory: name and profession come from the imported
    Annuaire Santé; address and kind never change afterwards."""
    from directory.annuaire import ProAccount, create_pro_account

    password = None if no_password else read_password(password_stdin)

    async def go(ctx: Context) -> ProAccount:
        return await create_pro_account(ctx, rpps=rpps, address=address, kind=kind, actor=actor(), password=password)

    made = run(go)
    a, p = made.account, made.professional
    console.print(
        f"account {a.address} created ({a.kind.value}) for {p.first_name or ''} {p.last_name or ''} "
        f"(RPPS {p.identifier}, {p.profession or 'profession unknown'})"
    )


@account.command("list")
@click.option("--domain", help="Only this domain.")
@click.option("--kind", type=click.Choice([k.value for k in AccountKind]), help="Only this kind.")
def list_(domain: str | None, kind: str | None) -> None:
    """List accounts."""

    async def go(ctx: Context) -> Sequence[Account]:
        return await AccountService(ctx).list(domain=domain, kind=AccountKind(kind) if kind else None)

    table = Table("address", "kind", "status", "name", box=None)
    for a in run(go):
        status = a.status.value + (" (key destroyed)" if a.wrapped_key is None else "")
        table.add_row(a.address, a.kind.value, status, a.display_name or "")
    print_table(table)


def _status_command(name: str, status: AccountStatus, help_text: str) -> click.Command:
    @click.argument("address")
    def cmd(address: str) -> None:
        async def go(ctx: Context) -> Account:
            return await AccountService(ctx).set_status(address, status, actor=actor())

        a = run(go)
        console.print(f"account {a.address} is now {a.status.value}")

    cmd.__doc__ = help_text
    return account.command(name)(cmd)


_status_command("disable", AccountStatus.DISABLED, "Disable ADDRESS: no login, mail refused (5.2.1).")
_status_command("enable", AccountStatus.ACTIVE, "Make ADDRESS active again.")
_status_command("suspend", AccountStatus.SUSPENDED, "Suspend ADDRESS: no login, mail deferred (4.2.1).")


@account.command("close")
@click.argument("address")
@click.option(
    "--erase",
    is_flag=True,
    help="Destroy the account key now (crypto-shredding) instead of keeping the data for the retention period.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --erase.")
def close(address: str, erase: bool, yes: bool) -> None:
    """Close ADDRESS: mail is refused; data kept for the retention period unless --erase."""
    if erase and not yes:
        click.confirm(f"Destroy the key of {address}? Its messages can never be read again", abort=True)

    async def go(ctx: Context) -> Account:
        return await AccountService(ctx).close(address, actor=actor(), erase=erase)

    a = run(go)
    if erase:
        console.print(f"account {a.address} closed; its key is destroyed and its messages unreadable")
    else:
        until = a.retention_until.date().isoformat() if a.retention_until else "the end of the retention period"
        console.print(f"account {a.address} closed; data kept until {until}")


@account.command("password")
@click.argument("address")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
def password(address: str, password_stdin: bool) -> None:
    """Set the password of ADDRESS."""
    value = read_password(password_stdin) or fail("a password is required")

    async def go(ctx: Context) -> None:
        await AccountService(ctx).set_password(address, value, actor=actor())

    run(go)
    console.print(f"password of {address} changed")


@account.group("certificate")
def certificate() -> None:
    """Client certificates of APP and ORG mailboxes (SASL EXTERNAL on submission and IMAP)."""


@certificate.command("add")
@click.argument("address")
@click.option(
    "--cert",
    "cert_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The client certificate (PEM or DER), issued by the CA of [tls] account_ca.",
)
def certificate_add(address: str, cert_file: Path) -> None:
    """Bind the certificate in FILE to the APP or ORG mailbox ADDRESS (its subject and SHA-256 are kept)."""
    from directory.certificates import CertificateService

    async def go(ctx: Context) -> tuple[Account, AccountCertificate]:
        return await CertificateService(ctx).bind(address, cert_file, actor=actor())

    a, binding = run(go)
    console.print(
        f"certificate {binding.subject_dn} (SHA-256 {binding.fingerprint}) bound to {a.address}", markup=False
    )


@certificate.command("list")
@click.argument("address")
def certificate_list(address: str) -> None:
    """The certificates bound to ADDRESS."""
    from directory.certificates import CertificateService

    async def go(ctx: Context) -> Sequence[AccountCertificate]:
        return await CertificateService(ctx).list(address)

    table = Table("sha-256", "subject", "issuer", "valid until", "added", box=None)
    for b in run(go):
        table.add_row(
            b.fingerprint, b.subject_dn, b.issuer_dn, b.not_after.date().isoformat(), b.added_at.date().isoformat()
        )
    print_table(table)


@certificate.command("remove")
@click.argument("address")
@click.argument("fingerprint")
def certificate_remove(address: str, fingerprint: str) -> None:
    """Unbind the certificate of SHA-256 FINGERPRINT from ADDRESS: it no longer logs in."""
    from directory.certificates import CertificateService

    async def go(ctx: Context) -> None:
        await CertificateService(ctx).remove(address, fingerprint, actor=actor())

    run(go)
    console.print(f"certificate {fingerprint} unbound from {address}", markup=False)
