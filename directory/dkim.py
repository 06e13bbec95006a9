"""The trust space's DKIM public keys: a local table, so that signatures verify on a closed network.

Invariants:
- A signature's key is looked for in the table first (``<selector>._domainkey.<domain>``);
  public DNS is asked only when ``smtp.dkim_dns`` is on. A key absent from both
  is "no key" (a permanent error for that signature); a DNS timeout is temporary.
- Records are checked before they are stored: a record dkimpy cannot use is refused.
- ``generate`` makes a signing key for one of our own domains: the private key
  goes to ``keys.dkim_dir`` (0600, never to the database), the public record to
  the table (so our own signatures verify here too) and to the caller, to publish.
- Every change is audited (domain and selector only).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.asyncresolver

from crypto import dkim as dkim_keys
from directory.addresses import normalize_domain
from directory.errors import DirectoryError, UnknownDomain
from mailserver.context import Context
from mailserver.resolver import resolver_for, txt
from mailserver.store.errors import Conflict
from mailserver.store.models import DkimKey

DNS_TIMEOUT = 5.0


class DkimKeyError(DirectoryError):
    """A DKIM key cannot be added, found or made; the message says why."""


@dataclass(frozen=True, slots=True)
class KeyView:
    domain: str
    selector: str
    record: str
    source: str
    created_at: dt.datetime

    @property
    def name(self) -> str:
        return dkim_keys.key_name(self.domain, self.selector)


@dataclass
class Lookup:
    """TXT records found for key names; ``temporary`` holds the names whose lookup failed for now."""

    records: dict[str, bytes | None] = field(default_factory=dict)
    temporary: set[str] = field(default_factory=set)


def default_selector(now: dt.datetime) -> str:
    """Selectors named after the month they were made in, so a rotation gets a new name."""
    return now.strftime("mss%Y%m")


class DkimKeys:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def add(self, domain: str, selector: str, record: str, *, actor: str, source: str = "manual") -> KeyView:
        name = normalize_domain(domain)
        try:
            dkim_keys.check_selector(selector)
            text = dkim_keys.check_record(record)
        except dkim_keys.DkimError as exc:
            raise DkimKeyError(str(exc)) from None
        async with self.ctx.uow() as uow:
            key = DkimKey(domain=name, selector=selector, record=text, source=source, created_at=self.ctx.clock())
            try:
                await uow.dkim_keys.add(key)
            except Conflict as exc:
                raise DkimKeyError(str(exc)) from None
            uow.audit(actor, "dkim.add", f"dkim:{dkim_keys.key_name(name, selector)}", "ok", source)
            await uow.commit()
            return _view(key)

    async def remove(self, domain: str, selector: str, *, actor: str) -> None:
        name = normalize_domain(domain)
        async with self.ctx.uow() as uow:
            key = await uow.dkim_keys.get(name, selector)
            if key is None:
                raise DkimKeyError(f"no DKIM key {dkim_keys.key_name(name, selector)} in the table")
            await uow.dkim_keys.remove(key)
            uow.audit(actor, "dkim.remove", f"dkim:{dkim_keys.key_name(name, selector)}", "ok")
            await uow.commit()

    async def list(self, domain: str | None = None) -> builtins.list[KeyView]:
        async with self.ctx.uow(readonly=True) as uow:
            rows = await uow.dkim_keys.list(normalize_domain(domain) if domain else None)
            return [_view(k) for k in rows]

    async def find(self, names: Iterable[str]) -> Lookup:
        """The TXT record of each ``<selector>._domainkey.<domain>`` name, from the table, then DNS if enabled."""
        out = Lookup()
        wanted = sorted({n.lower().rstrip(".") for n in names})
        async with self.ctx.uow(readonly=True) as uow:
            for n in wanted:
                selector, sep, domain = n.partition("._domainkey.")
                key = await uow.dkim_keys.get(domain, selector) if sep else None
                out.records[n] = key.record.encode("ascii") if key is not None else None
        if self.ctx.config.smtp.dkim_dns:
            for n in wanted:
                if out.records[n] is None:
                    try:
                        out.records[n] = await _dns_txt(n, resolver_for(self.ctx.config))
                    except TimeoutError:
                        out.temporary.add(n)
        return out

    async def generate(self, domain: str, *, actor: str, selector: str | None = None) -> KeyView:
        """A new signing key for a local domain, made current; returns its public record to publish."""
        name = normalize_domain(domain)
        async with self.ctx.uow(readonly=True) as uow:
            if await uow.domains.get(name) is None:
                raise UnknownDomain(f"{name} is not a local domain: DKIM keys are made for our own domains")
        sel = selector or default_selector(self.ctx.clock())
        try:
            dkim_keys.check_selector(sel)
            pair = await asyncio.to_thread(dkim_keys.generate_key)
        except dkim_keys.DkimError as exc:
            raise DkimKeyError(str(exc)) from None
        async with self.ctx.uow(readonly=True) as uow:
            if await uow.dkim_keys.get(name, sel) is not None:
                raise DkimKeyError(f"selector {sel} of {name} is taken: choose another with --selector")
        try:
            dkim_keys.write_key(self.ctx.config.resolve(self.ctx.config.keys.dkim_dir), name, sel, pair.private_pem)
        except dkim_keys.DkimError as exc:
            raise DkimKeyError(str(exc)) from None
        return await self.add(name, sel, pair.record, actor=actor, source="local")


def _view(k: DkimKey) -> KeyView:
    return KeyView(k.domain, k.selector, k.record, k.source, k.created_at)


async def _dns_txt(name: str, resolver: dns.asyncresolver.Resolver) -> bytes | None:
    """The DKIM TXT record at ``name`` in DNS (``dns.nameservers``; its strings joined), None if there is none."""
    # raises TimeoutError when DNS cannot answer for now
    for text in await txt(resolver, name, lifetime=DNS_TIMEOUT) or []:
        if b"p=" in text:
            return text
    return None
