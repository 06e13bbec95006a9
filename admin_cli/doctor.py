"""``masante-admin doctor``: what is wrong with this installation, and what to do about it.

Checks, in order: the configuration; the key-encryption key and the audit key (present,
readable by their owner only, loadable); the database (reachable, migrated to the head, its
schema the models'); TLS (the server certificate: key, validity, host name, RSA, issued by
``tls.ca``; the trust space's CA); the domains (the patient domain, a DKIM key per
professional domain); with ``--dns``, what the resolver answers for each local domain (MX
and DKIM records as ``masante-admin dns records`` prints them).

Invariants: it reads, never writes (no migration, no key, no audit entry); one finding a
line, each non-``ok`` one with its fix; the exit status is 1 when any check fails, 0 when
only warnings remain; ``--json`` prints the same findings for scripts. No secret is printed
(key files are named, never shown).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from admin_cli.common import config_option, console, json_wanted
from crypto.certcheck import Finding, check_ca, check_server_certificate
from crypto.envelope import CryptoError, Kek, Keyring, load_keyring
from directory.dkim import DkimKeys, KeyView
from mailserver.config import Config, ConfigError, load
from mailserver.context import Context
from mailserver.store.models import DomainKind

STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@dataclass(frozen=True, slots=True)
class Check:
    area: str
    level: str
    text: str
    fix: str = ""


def _from(area: str, findings: list[Finding]) -> list[Check]:
    return [Check(area, f.level, f.text, f.fix) for f in findings]


def _private_file(area: str, path: Path, what: str) -> list[Check]:
    if not path.exists():
        return [Check(area, "fail", f"{what} {path} is missing", "masante-admin init creates it (keep a copy offline)")]
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        return [Check(area, "warn", f"{what} {path} is readable by others (mode {mode:o})", f"chmod 600 {path}")]
    return [Check(area, "ok", f"{what} {path} (mode {mode:o})")]


def check_keys(cfg: Config) -> list[Check]:
    kek = cfg.resolve(cfg.keys.kek_file)
    out = [] if os.environ.get("MASANTE_KEK") else _private_file("keys", kek, "key-encryption key")
    try:
        ring = load_keyring(kek, os.environ.get("MASANTE_KEK"))
    except (CryptoError, OSError) as exc:
        return [*out, Check("keys", "fail", f"the key-encryption key does not load: {exc}", "restore it from backup")]
    out.append(Check("keys", "ok", f"key-encryption key loads ({len(ring.kids)} KEK(s))"))
    if not os.environ.get("MASANTE_AUDIT_KEY"):
        out += _private_file("keys", cfg.resolve(cfg.audit.key_file), "audit key")
    return out


def check_tls(cfg: Config, now: dt.datetime) -> list[Check]:
    files = {
        "tls.cert": cfg.resolve(cfg.tls.cert),
        "tls.key": cfg.resolve(cfg.tls.key),
        "tls.ca": cfg.resolve(cfg.tls.ca),
    }
    missing = [
        Check("tls", "fail", f"{k} {p} is missing", f"set {k} to an existing file")
        for k, p in files.items()
        if not p.exists()
    ]
    if missing:
        return missing
    out = _from(
        "tls",
        check_server_certificate(
            files["tls.cert"].read_bytes(),
            files["tls.key"].read_bytes(),
            files["tls.ca"].read_bytes(),
            cfg.server.hostname,
            now,
        ),
    )
    trust = cfg.resolve(cfg.tls.trust_ca)
    if not trust.exists():
        out.append(Check("trust", "fail", f"tls.trust_ca {trust} is missing", "set it to the trust space's CA file"))
    else:
        out += _from("trust", check_ca(trust.read_bytes(), "the trust space's CA (tls.trust_ca)", now))
    return out


async def check_database(ctx: Context) -> list[Check]:
    from mailserver.store import migrate  # Alembic, only for the commands that need it

    try:
        current = await migrate.current_revision(ctx.db)
    except Exception as exc:  # noqa: BLE001 - whatever the driver says, it is the finding
        first = (str(getattr(exc, "orig", None) or exc).splitlines() or [type(exc).__name__])[0]
        return [Check("database", "fail", f"cannot reach the database: {first}", "check database.url and the server")]
    head = migrate.head_revision()
    if current != head:
        return [
            Check(
                "database",
                "fail",
                f"the schema is at revision {current or 'none'}, the code needs {head}",
                "masante-admin db upgrade",
            )
        ]
    out = [Check("database", "ok", f"reachable, schema at revision {head}")]
    drift = await migrate.schema_drift(ctx.db)
    if drift:
        out.append(
            Check(
                "database",
                "warn",
                f"the schema differs from the models in {len(drift)} place(s)",
                "masante-admin db upgrade",
            )
        )
    return out


async def check_domains(ctx: Context, *, dns: bool) -> list[Check]:
    cfg = ctx.config
    async with ctx.uow(readonly=True) as uow:
        domains = list(await uow.domains.list())
    out: list[Check] = []
    if not any(d.name == cfg.domains.patient for d in domains):
        out.append(
            Check(
                "domains",
                "warn",
                f"the patient domain {cfg.domains.patient} has no mailbox yet",
                "masante-admin patient open INS",
            )
        )
    keys = DkimKeys(ctx)
    for d in domains:
        own = [k for k in await keys.list(d.name) if k.source != "dns"]
        if d.kind is DomainKind.PROFESSIONAL and not own:
            out.append(
                Check(
                    "dkim",
                    "warn",
                    f"{d.name} has no DKIM key: its mail leaves unsigned",
                    f"masante-admin dkim keygen {d.name}",
                )
            )
        elif d.kind is DomainKind.PROFESSIONAL:
            out.append(Check("dkim", "ok", f"{d.name}: selector(s) {', '.join(k.selector for k in own)}"))
        if dns:
            out += await _dns(ctx, d.name, own)
    if not domains:
        out.append(Check("domains", "warn", "no domain yet", "masante-admin domain add DOMAIN"))
    return out


async def _dns(ctx: Context, domain: str, keys: list[KeyView]) -> list[Check]:
    host = ctx.config.server.hostname.rstrip(".").lower()
    out: list[Check] = []
    try:
        exchanges = [name.rstrip(".").lower() for _, name in await ctx.resolver.mx(domain)]
    except Exception as exc:  # noqa: BLE001 - a resolver failure is the finding
        exchanges = []
        out.append(
            Check(
                "dns",
                "warn",
                f"MX of {domain}: the lookup failed ({type(exc).__name__}: {exc})",
                "check dns.nameservers",
            )
        )
    else:
        if host in exchanges:
            out.append(Check("dns", "ok", f"MX of {domain} is {host}"))
        else:
            shown = ", ".join(exchanges) or "none"
            out.append(
                Check("dns", "fail", f"MX of {domain} is {shown}, not {host}", f"publish: {domain}. IN MX 10 {host}.")
            )
    for k in keys:
        name = f"{k.selector}._domainkey.{domain}"
        try:
            published = [t.decode("ascii", "replace") for t in await ctx.resolver.txt(name)]
        except Exception as exc:  # noqa: BLE001
            out.append(
                Check(
                    "dns",
                    "warn",
                    f"{name}: the lookup failed ({type(exc).__name__})",
                    "masante-admin dns records " + domain,
                )
            )
            continue
        if _p(k.record) in {_p(t) for t in published}:
            out.append(Check("dns", "ok", f"{name} publishes the DKIM key"))
        else:
            out.append(
                Check(
                    "dns",
                    "fail",
                    f"{name} does not publish this DKIM key ({'another key' if published else 'nothing'})",
                    f"masante-admin dns records {domain}",
                )
            )
    return out


def _p(record: str) -> str:
    """The p= value of a DKIM key record (what must match), without blanks."""
    for tag in record.replace(" ", "").split(";"):
        if tag.startswith("p="):
            return tag[2:]
    return record


async def diagnose(cfg: Config, *, dns: bool) -> list[Check]:
    out = check_keys(cfg)
    # nothing here unwraps a key: when the real KEK does not load (reported above), a throwaway one opens the context
    ctx = Context.open(cfg, keyring=Keyring(Kek.generate()) if any(c.level == "fail" for c in out) else None)
    try:
        out += check_tls(cfg, ctx.clock())
        db = await check_database(ctx)
        out += db
        if not any(c.level == "fail" for c in db):
            out += await check_domains(ctx, dns=dns)
    finally:
        await ctx.close()
    return out


@click.command()
@click.option("--dns", "with_dns", is_flag=True, help="Also ask DNS for each local domain's MX and DKIM records.")
@click.option("--json", "as_json", is_flag=True, help="The findings as JSON (a list of objects).")
def doctor(with_dns: bool, as_json: bool) -> None:
    """Check the configuration, keys, database, certificates and (with --dns) DNS, and say what to fix."""
    import asyncio

    try:
        cfg = load(config_option(click.get_current_context()))
    except ConfigError as exc:
        checks = [Check("config", "fail", str(exc), "fix the file, or pass --config PATH")]
    else:
        checks = [Check("config", "ok", f"read {cfg.path}"), *asyncio.run(diagnose(cfg, dns=with_dns))]
    if as_json or json_wanted():
        click.echo(json.dumps([asdict(c) for c in checks], ensure_ascii=False, indent=1))
    else:
        table = Table("area", "", "finding", "fix", box=None)
        for c in checks:
            table.add_row(c.area, f"[{STYLE[c.level]}]{c.level}[/]", escape(c.text), escape(c.fix))
        console.print(table)
        fails, warns = (sum(c.level == lv for c in checks) for lv in ("fail", "warn"))
        console.print(f"{fails} problem(s), {warns} warning(s)" if fails or warns else "everything checked is fine")
    if any(c.level == "fail" for c in checks):
        raise SystemExit(1)
