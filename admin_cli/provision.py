"""Setting up a server directory: configuration, KEK, TLS material, schema, demo data.

Every step is idempotent: what exists is kept (a second ``init --demo`` keeps the
data, the keys, the certificates and the passwords). Used by ``masante-admin
init`` and by the tests that start real servers.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from crypto.audit import AuditKey, write_audit_key_file
from crypto.envelope import Kek, write_key_file
from crypto.pki import CertificateAuthority
from directory.accounts import AccountService
from directory.errors import AccountExists, DomainExists, OperatorExists
from directory.trust import TrustSpace
from mailserver import config as config_mod
from mailserver.config import Config
from mailserver.context import Context
from mailserver.store.models import AccountKind, DomainKind

DEMO_PRO_DOMAIN = "hopital.demo.masante.fr"
DEMO_PRO = f"dr.martin@{DEMO_PRO_DOMAIN}"
DEMO_PRO_RPPS = "10000001239"  # synthetic, Luhn-valid
DEMO_PATIENT_INS = "279035121518989"  # the ANS example INS (valid key)
DEMO_OTHER_OPERATOR = "clinique.demo.masante.fr"
DEMO_WEB_PORT = 2443  # the HTTPS service (autoconfig, /metrics) is on in the demo
DEMO_PASSWORD_ENV = "MASANTE_DEMO_PASSWORD"  # noqa: S105 - the name of a variable, not a password


def demo_password() -> str:
    return os.environ.get(DEMO_PASSWORD_ENV) or "demo-password"


@dataclass
class Report:
    """What a step created (for the summary printed by ``init``)."""

    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def add(self, what: str, created: bool) -> None:
        (self.created if created else self.kept).append(what)


def write_config(path: Path, *, demo: bool, hostname: str | None, patient_domain: str | None, report: Report) -> Config:
    if path.exists():
        report.add(f"configuration {path}", False)
        return config_mod.load(path)
    cfg = config_mod.demo(path) if demo else Config(path=path)
    if demo:
        cfg.ports.web = DEMO_WEB_PORT
    if hostname:
        cfg.server.hostname = hostname
    elif not demo:
        cfg.server.hostname = socket.getfqdn()
    if patient_domain:
        cfg.domains.patient = patient_domain
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(cfg.to_toml(), encoding="utf-8")
    report.add(f"configuration {path}", True)
    return config_mod.load(path)  # with the environment applied


def ensure_kek(cfg: Config, report: Report) -> None:
    if os.environ.get("MASANTE_KEK"):
        report.add("KEK (from MASANTE_KEK)", False)
        return
    kek_file = cfg.resolve(cfg.keys.kek_file)
    if kek_file.exists():
        report.add(f"KEK {kek_file}", False)
        return
    write_key_file(kek_file, Kek.generate())
    report.add(f"KEK {kek_file}", True)


def ensure_audit_key(cfg: Config, report: Report) -> None:
    """The audit chain's HMAC key, beside the KEK (never in the database)."""
    if os.environ.get("MASANTE_AUDIT_KEY"):
        report.add("audit key (from MASANTE_AUDIT_KEY)", False)
        return
    key_file = cfg.resolve(cfg.audit.key_file)
    if key_file.exists():
        report.add(f"audit key {key_file}", False)
        return
    write_audit_key_file(key_file, AuditKey.generate())
    report.add(f"audit key {key_file}", True)


def operator_dn(hostname: str) -> str:
    return f"CN={hostname},O=masante-mail,C=FR"


def ensure_tls(cfg: Config, report: Report) -> None:
    """A self-signed CA and a server certificate (also our client certificate towards other operators)."""
    cert, key = cfg.resolve(cfg.tls.cert), cfg.resolve(cfg.tls.key)
    ca_cert = cfg.resolve(cfg.tls.ca)
    if cert.exists() and key.exists():
        report.add(f"TLS certificate {cert}", False)
        return
    ca_key = ca_cert.with_suffix(".key")
    if ca_cert.exists() and ca_key.exists():
        ca = CertificateAuthority.load(ca_cert, ca_key)
    else:
        ca = CertificateAuthority.create(f"masante-mail CA for {cfg.server.hostname}")
        ca.write(ca_cert, ca_key)
        report.add(f"CA {ca_cert}", True)
    names = tuple(dict.fromkeys(["localhost", cfg.server.hostname]))
    ca.issue(operator_dn(cfg.server.hostname), dns_names=names, ip_addresses=("127.0.0.1", "::1")).write(cert, key)
    report.add(f"TLS certificate {cert}", True)


async def ensure_schema(ctx: Context, report: Report) -> None:
    from mailserver.store import migrate  # Alembic, only for the commands that need it

    before = await migrate.current_revision(ctx.db)
    await migrate.upgrade(ctx.db)
    after = await migrate.current_revision(ctx.db)
    report.add(f"database schema at {after}", before != after)


async def ensure_demo_data(ctx: Context, report: Report, actor: str) -> None:
    accounts = AccountService(ctx)
    trust = TrustSpace(ctx)
    password = demo_password()
    patient_domain = ctx.config.domains.patient
    own_dn = operator_dn(ctx.config.server.hostname)
    for name, domain_kind in ((DEMO_PRO_DOMAIN, DomainKind.PROFESSIONAL), (patient_domain, DomainKind.PATIENT)):
        try:
            await accounts.add_domain(name, domain_kind, actor=actor)
            report.add(f"domain {name}", True)
        except DomainExists:
            report.add(f"domain {name}", False)
    demo_accounts = (
        (
            DEMO_PRO,
            AccountKind.PER,
            {"display_name": "Dr Jeanne Martin", "rpps": DEMO_PRO_RPPS, "profession_code": "10"},
        ),
        (f"{DEMO_PATIENT_INS}@{patient_domain}", AccountKind.PATIENT, {"display_name": "Camille Demo"}),
    )
    for address, kind, extra in demo_accounts:
        try:
            await accounts.create(address, kind, actor=actor, password=password, **extra)
            report.add(f"account {address}", True)
        except AccountExists:
            report.add(f"account {address}", False)
    mx_port = ctx.config.ports.mx if ctx.config.ports.mx > 0 else None
    operators = (
        (DEMO_PRO_DOMAIN, "this server (professionals)", [own_dn], ctx.config.server.hostname, mx_port),
        (patient_domain, "this server (patients)", [own_dn], ctx.config.server.hostname, mx_port),
        (
            DEMO_OTHER_OPERATOR,
            "Clinique de démonstration (another operator)",
            [f"CN=mx.{DEMO_OTHER_OPERATOR},O=Clinique Demo,C=FR"],
            f"mx.{DEMO_OTHER_OPERATOR}",
            25,
        ),
    )
    for domain, description, dns, host, port in operators:
        try:
            await trust.add(
                domain, actor=actor, dns=dns, description=description, mta_host=host, mta_port=port, dkim_signing=False
            )
            report.add(f"trust-space domain {domain}", True)
        except OperatorExists:
            report.add(f"trust-space domain {domain}", False)
    await ensure_demo_directory(ctx, report, actor)
    await ensure_dkim_keys(ctx, report, actor, (DEMO_PRO_DOMAIN, patient_domain))


async def ensure_dkim_keys(ctx: Context, report: Report, actor: str, domains: tuple[str, ...]) -> None:
    """A DKIM signing key for each of our demo domains, so that the mail they send out is signed."""
    from directory.dkim import DkimKeys

    keys = DkimKeys(ctx)
    for domain in domains:
        if await keys.list(domain):
            report.add(f"DKIM key for {domain}", False)
            continue
        key = await keys.generate(domain, actor=actor)
        report.add(f"DKIM key for {domain} (selector {key.selector})", True)


DEMO_PHARMACIST = f"pharmacie@{DEMO_OTHER_OPERATOR}"
DEMO_PHARMACIST_RPPS = "10000002252"  # synthetic, Luhn-valid

#: a two-professional extraction of the Annuaire Santé, in the national formats (columns found by name)
_DEMO_PS = (
    "Type d'identifiant PP|Identifiant PP|Identification nationale PP|Libellé civilité d'exercice|Nom d'exercice|"
    "Prénom d'exercice|Code profession|Libellé profession|Libellé mode exercice|Raison sociale site|"
    "Numéro Voie (coord. structure)|Libellé type de voie (coord. structure)|Libellé Voie (coord. structure)|"
    "Code postal (coord. structure)|Libellé commune (coord. structure)|\n"
    f"8|{DEMO_PRO_RPPS}|8{DEMO_PRO_RPPS}|Docteur|MARTIN|Jeanne|10|Médecin|Salarié|HOPITAL DE DEMONSTRATION|"
    "12|Rue|DE LA SANTE|75013|PARIS|\n"
    f"8|{DEMO_PHARMACIST_RPPS}|8{DEMO_PHARMACIST_RPPS}||BERNARD|Louis|21|Pharmacien|Libéral|PHARMACIE DE LA GARE|"
    "3|Place|DE LA GARE|44000|NANTES|\n"
)
_DEMO_MSS = (
    "Type de BAL|Adresse BAL|Type Identifiant PP|Identifiant PP|Identification nationale PP|Nom d'exercice|"
    "Prénom d'exercice|Code Profession|Libellé Profession|Raison Sociale structure BAL|"
    "L6LIGNEACHEMINEMENT structure BAL\n"
    f"PER|{DEMO_PRO}|8|{DEMO_PRO_RPPS}|8{DEMO_PRO_RPPS}|MARTIN|Jeanne|10|Médecin|HOPITAL DE DEMONSTRATION|"
    "75013 PARIS\n"
    f"PER|{DEMO_PHARMACIST}|8|{DEMO_PHARMACIST_RPPS}|8{DEMO_PHARMACIST_RPPS}|BERNARD|Louis|21|Pharmacien|"
    "PHARMACIE DE LA GARE|44000 NANTES\n"
)


async def ensure_demo_directory(ctx: Context, report: Report, actor: str) -> None:
    """The demo's professionals in the directory (``directory search martin``; a patient may write first to
    the demo pharmacist at the other operator), imported from extraction files under ``var/directory``."""
    from directory.annuaire import DirectoryImporter

    folder = ctx.config.base_dir / "directory"
    folder.mkdir(parents=True, exist_ok=True)
    changed = False
    for name, text in (
        ("PS_LibreAcces_Personne_activite_demo.txt", _DEMO_PS),
        ("Extraction_Correspondance_MSSante_demo.txt", _DEMO_MSS),
    ):
        path = folder / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue  # imported by an earlier init
        path.write_text(text, encoding="utf-8")
        changed |= (await DirectoryImporter(ctx).import_file(path, actor=actor)).changed
    report.add(f"directory of professionals ({folder})", changed)


def demo_summary(cfg: Config) -> str:
    pw = demo_password()
    shown = pw if DEMO_PASSWORD_ENV not in os.environ else f"the value of {DEMO_PASSWORD_ENV}"
    p = cfg.ports

    def port(n: int) -> str:
        return str(n) if n >= 0 else "off"

    return "\n".join(
        [
            f"masante-mail demo ({cfg.path})",
            f"  accounts (password: {shown}):",
            f"    {DEMO_PRO:<42} professional (PER)",
            f"    {DEMO_PATIENT_INS + '@' + cfg.domains.patient:<42} patient",
            f"  trust space: {DEMO_PRO_DOMAIN}, {cfg.domains.patient}, {DEMO_OTHER_OPERATOR}",
            f"  {cfg.server.bind}: IMAPS {port(p.imaps)}, IMAP+STARTTLS {port(p.imap)}, "
            f"submission+STARTTLS {port(p.submission)}, submissions (TLS) {port(p.submissions)}, MX {port(p.mx)}, "
            f"HTTPS (autoconfig, /metrics) {port(p.web)}",
            f"  clients must trust the CA certificate {cfg.resolve(cfg.tls.ca)}",
        ]
    )
