"""``masante-admin dns records DOMAIN``: the DNS records an operator publishes for one of our domains.

Invariants:
- Output is zone-file lines (RFC 1035 §5), absolute names, one record a
  line, that a zone loads as they are; explanations are ``;`` comments.
- Only for a local domain. Values come from the configuration (host name,
  ports) and the store (the domain's DKIM keys); nothing is looked up in DNS.
- A door that does not listen (negative port) is published as "decidedly not
  available": ``SRV 0 0 0 .`` (RFC 2782, RFC 6186 §4).

See Also: RFC 6186 (SRV for mail submission and access), RFC 8314 §5.1
(``_submissions``, ``_imaps``), RFC 6376 §3.6.2 (DKIM key records), RFC 8461
§3.1 (MTA-STS), RFC 8460 §3 (SMTP TLS reporting).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import click

from admin_cli.common import fail, run
from directory.addresses import normalize_domain
from directory.dkim import DkimKeys, KeyView
from mailserver.config import Config
from mailserver.context import Context
from mailserver.web.autoconfig import mta_sts_policy

TTL = 3600


@dataclass(frozen=True, slots=True)
class Records:
    domain: str
    lines: list[str]


def txt_value(text: str) -> str:
    """``text`` as TXT character-strings of at most 255 octets (RFC 1035 §3.3.14), quoted for a zone file."""
    raw = text.encode("ascii")
    parts = [raw[i : i + 255].decode("ascii") for i in range(0, len(raw), 255)] or [""]
    return " ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)


def records(cfg: Config, domain: str, keys: list[KeyView], *, tlsrpt_rua: str | None = None) -> list[str]:
    """The zone lines for ``domain`` (already known to be local)."""
    host = cfg.server.hostname.rstrip(".") + "."
    p = cfg.ports
    out = [f"; DNS records for {domain} (masante-mail, server {cfg.server.hostname})", "; mail exchanger"]
    out.append(f"{domain}. {TTL} IN MX 10 {host}")
    out.append("; client autoconfiguration (RFC 6186, RFC 8314 §5.1): implicit TLS first")
    for service, port in (
        ("_submissions._tcp", p.submissions),
        ("_submission._tcp", p.submission),
        ("_imaps._tcp", p.imaps),
        ("_imap._tcp", p.imap),
    ):
        target = f"0 1 {port} {host}" if port > 0 else "0 0 0 ."  # RFC 2782: "decidedly not available"
        out.append(f"{service}.{domain}. {TTL} IN SRV {target}")
    out.append("; DKIM public keys (RFC 6376 §3.6.2)")
    if not keys:
        out.append(f"; (no DKIM key for {domain}: masante-admin dkim generate {domain})")
    for k in keys:
        out.append(f"{k.selector}._domainkey.{domain}. {TTL} IN TXT {txt_value(k.record)}")
    policy = mta_sts_policy(cfg.server.hostname)
    policy_id = hashlib.sha256(policy.encode()).hexdigest()[:20]  # RFC 8461 §3.1: 1-32 alphanumerics
    out.append(f"; MTA-STS (RFC 8461): this policy, served by the HTTPS service (ports.web) to Host mta-sts.{domain}")
    out.append(f";   at https://mta-sts.{domain}/.well-known/mta-sts.txt (its certificate must name mta-sts.{domain}):")
    out += [f";   {line}" for line in policy.strip().split("\r\n")]
    out.append(f"_mta-sts.{domain}. {TTL} IN TXT {txt_value(f'v=STSv1; id={policy_id}')}")
    out.append("; SMTP TLS reporting (RFC 8460)")
    rua = tlsrpt_rua or f"mailto:postmaster@{domain}"
    out.append(f"_smtp._tls.{domain}. {TTL} IN TXT {txt_value(f'v=TLSRPTv1; rua={rua}')}")
    return out


@click.group("dns")
def dns_group() -> None:
    """What to publish in DNS for our domains."""


@dns_group.command("records")
@click.argument("domain")
@click.option("--tlsrpt-rua", metavar="URI", help="Where TLS reports go (default: mailto:postmaster@DOMAIN).")
def records_command(domain: str, tlsrpt_rua: str | None) -> None:
    """Print the zone-file lines to publish for DOMAIN: MX, SRV (RFC 6186), DKIM, MTA-STS and TLSRPT."""

    async def go(ctx: Context) -> Records:
        name = normalize_domain(domain)
        async with ctx.uow(readonly=True) as uow:
            if await uow.domains.get(name) is None:
                fail(f"{name} is not a local domain (masante-admin domain list)")
        keys = await DkimKeys(ctx).list(name)
        return Records(name, records(ctx.config, name, keys, tlsrpt_rua=tlsrpt_rua))

    result = run(go)
    for line in result.lines:
        click.echo(line)  # not through rich: a zone line must never be wrapped or styled
