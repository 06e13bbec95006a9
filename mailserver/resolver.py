"""DNS, injected: the queue's mail routes and the DKIM key lookup go through ``ctx.resolver``.

Invariants:
- Three questions only: the mail exchangers of a domain (RFC 5321 §5.1), the
  route to it (its exchangers by preference with their addresses), and the TXT
  strings at a name (RFC 6376 §3.6.2.2, a DKIM key record, its strings joined).
  For ``mx`` and ``txt``, "no such name" and "no such record" are an empty
  answer; a lookup that could not be made (timeout, no server answered) raises
  ``TimeoutError``, which the callers turn into a temporary failure.
- A route is the domain's exchangers by preference, lowest first, equal ones
  in random order (RFC 5321 §5.1), each with the addresses the same resolver
  gives for it (A, then AAAA). No MX record at all: the domain itself is the
  exchanger (the implicit MX). A domain that does not exist (NXDOMAIN) or that
  publishes a null MX (RFC 7505) raises ``NoRoute(permanent=True)``; a timeout
  raises ``NoRoute(permanent=False)`` (retry later).
- ``[dns] nameservers`` (``host``, ``host:port``, ``[v6]:port``) replaces
  ``/etc/resolv.conf`` when given; empty, the system's resolvers are used.
- ``DnsResolver`` asks DNS through dnspython; ``MemoryResolver`` is a real
  resolver over a table held in memory (mox ``dns.MockResolver``), for tests
  and for sites that run without DNS. Both answer the same questions the same way.
"""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from mailserver.config import Config, ConfigError

__all__ = ["DnsResolver", "Hop", "MemoryResolver", "NoRoute", "Resolver"]

#: seconds one lookup may take, retries across the nameservers included
LIFETIME = 10.0
#: seconds a whole lookup may take: an MX lookup (the queue retries later), a DKIM key (a client waits at DATA)
MX_TIMEOUT = 10.0
TXT_TIMEOUT = 5.0


class NoRoute(Exception):
    """No exchanger can be tried for a domain; ``status`` is the RFC 3463 code for the DSN."""

    def __init__(self, status: str, text: str, *, permanent: bool) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class Hop:
    """One exchanger to try: its name (checked against its TLS certificate) and one of its addresses."""

    name: str
    address: str
    preference: int


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1:5353"`` → ``("127.0.0.1", 5353)``; ``"[::1]:53"``; a bare address means port 53."""
    s = text.strip()
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"dns.nameservers: {text!r} is not [address]:port")
        port = rest[1:] or "53"
    elif s.count(":") == 1:
        host, port = s.split(":")
    else:
        host, port = s, "53"  # an IPv4 address, or a bare IPv6 one
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"dns.nameservers: {text!r} is not address or address:port")
    return host, int(port)


@functools.cache
def _resolver(nameservers: tuple[str, ...]) -> dns.asyncresolver.Resolver:
    if not nameservers:
        return dns.asyncresolver.Resolver()
    r = dns.asyncresolver.Resolver(configure=False)
    r.nameservers = [dns.nameserver.Do53Nameserver(*parse_nameserver(n)) for n in nameservers]
    r.use_edns(0, 0, 1232)  # the DNS flag day 2020 payload size
    r.lifetime = LIFETIME
    return r


async def _addresses(resolver: dns.asyncresolver.Resolver, name: str) -> list[str]:
    out: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = await resolver.resolve(name, rdtype, lifetime=LIFETIME, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException:
            continue  # this exchanger cannot be reached for now: the next one may
        out += [r.address for r in answer]
    return out


async def mail_route(resolver: dns.asyncresolver.Resolver, domain: str) -> list[Hop]:
    """Where mail for ``domain`` goes, in the order to try (raises ``NoRoute``)."""
    try:
        answer = await resolver.resolve(domain, "MX", lifetime=LIFETIME, search=False)
        found = [(int(r.preference), r.exchange) for r in answer]
    except dns.resolver.NXDOMAIN:
        raise NoRoute("5.1.2", f"the domain {domain} does not exist (DNS NXDOMAIN)", permanent=True) from None
    except dns.resolver.NoAnswer:
        found = [(0, dns.name.from_text(domain))]  # RFC 5321 §5.1: no MX, the domain itself is the implicit MX
    except dns.exception.DNSException as exc:
        raise NoRoute("4.4.3", f"DNS lookup of {domain} MX failed: {type(exc).__name__}", permanent=False) from None
    if any(name == dns.name.root for _, name in found):
        raise NoRoute("5.1.10", f"{domain} accepts no mail (null MX, RFC 7505)", permanent=True)
    records = [(p, n.to_text(omit_final_dot=True)) for p, n in found]
    random.shuffle(records)  # noqa: S311 - RFC 5321 §5.1: spread the load among exchangers of equal preference
    records.sort(key=lambda r: r[0])
    hops: list[Hop] = []
    for preference, name in records:
        hops += [Hop(name, a, preference) for a in await _addresses(resolver, name)]
    if not hops:
        raise NoRoute("4.4.3", f"no address found for the mail exchangers of {domain}", permanent=False)
    return hops


@runtime_checkable
class Resolver(Protocol):
    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """``(preference, exchange)`` for ``domain``, best first; [] when it has none. TimeoutError if unknown."""
        ...

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record at ``name``, its strings joined; [] when there is none. TimeoutError if unknown."""
        ...

    async def route(self, domain: str) -> list[Hop]:
        """Where mail for ``domain`` goes, in the order to try (raises ``NoRoute``)."""
        ...


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsResolver:
    """DNS through dnspython's asyncio resolver: the system's, or ``nameservers`` (``[dns] nameservers``)."""

    def __init__(
        self, nameservers: Sequence[str] = (), *, mx_timeout: float = MX_TIMEOUT, txt_timeout: float = TXT_TIMEOUT
    ) -> None:
        self.nameservers = tuple(nameservers)
        self.lifetime = {"MX": mx_timeout, "TXT": txt_timeout}

    @classmethod
    def for_config(cls, config: Config) -> DnsResolver:
        return cls(config.dns.nameservers)

    async def _query(self, name: str, rdtype: str) -> list[object]:
        try:
            answer = await _resolver(self.nameservers).resolve(
                _name(name), rdtype, lifetime=self.lifetime[rdtype], search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:  # timeout, no nameserver answered, ...
            raise TimeoutError(f"{rdtype} {_name(name)}: {type(exc).__name__}") from None
        return list(answer)

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        rows = await self._query(domain, "MX")
        found = [(int(r.preference), str(r.exchange).rstrip(".").lower()) for r in rows]  # type: ignore[attr-defined]
        return sorted(found)

    async def txt(self, name: str) -> list[bytes]:
        rows = await self._query(name, "TXT")
        return [b"".join(r.strings) for r in rows]  # type: ignore[attr-defined]

    async def route(self, domain: str) -> list[Hop]:
        return await mail_route(_resolver(self.nameservers), domain)

    def __repr__(self) -> str:
        return f"DnsResolver({len(self.nameservers)} nameservers)"


class MemoryResolver:
    """Records held in memory: ``add_mx``, ``add_txt``; ``fail(name)`` makes a name time out."""

    def __init__(self) -> None:
        self._mx: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._txt: dict[str, list[bytes]] = defaultdict(list)
        self._failing: set[str] = set()
        self._nx: set[str] = set()
        self._addresses: dict[str, list[str]] = defaultdict(list)
        self.queries: list[tuple[str, str]] = []  # (type, name), in order: what was asked

    def add_mx(self, domain: str, exchange: str, preference: int = 10) -> MemoryResolver:
        self._mx[_name(domain)].append((preference, _name(exchange)))
        return self

    def add_txt(self, name: str, text: str | bytes) -> MemoryResolver:
        self._txt[_name(name)].append(text.encode("ascii") if isinstance(text, str) else text)
        return self

    def add_address(self, name: str, address: str) -> MemoryResolver:
        self._addresses[_name(name)].append(address)
        return self

    def nxdomain(self, name: str) -> MemoryResolver:
        self._nx.add(_name(name))
        return self

    def fail(self, name: str) -> MemoryResolver:
        self._failing.add(_name(name))
        return self

    def _ask(self, rdtype: str, name: str) -> str:
        key = _name(name)
        self.queries.append((rdtype, key))
        if key in self._failing:
            raise TimeoutError(f"{rdtype} {key}: no answer")
        return key

    async def mx(self, domain: str) -> list[tuple[int, str]]:
        return sorted(self._mx.get(self._ask("MX", domain), []))

    async def txt(self, name: str) -> list[bytes]:
        return list(self._txt.get(self._ask("TXT", name), []))

    async def route(self, domain: str) -> list[Hop]:
        try:
            key = self._ask("MX", domain)
        except TimeoutError as exc:
            raise NoRoute("4.4.3", f"DNS lookup of {domain} MX failed: {exc}", permanent=False) from None
        if key in self._nx:
            raise NoRoute("5.1.2", f"the domain {domain} does not exist (DNS NXDOMAIN)", permanent=True)
        found = sorted(self._mx.get(key, []))
        if any(not name for _, name in found):
            raise NoRoute("5.1.10", f"{domain} accepts no mail (null MX, RFC 7505)", permanent=True)
        if found:  # an exchanger with no address in the table is its own address (``localhost``, a literal)
            return [Hop(name, a, p) for p, name in found for a in (self._addresses.get(name) or [name])]
        if self._addresses.get(key):  # RFC 5321 §5.1: no MX, the domain itself is the implicit MX
            return [Hop(key, a, 0) for a in self._addresses[key]]
        raise NoRoute("4.4.3", f"no address found for the mail exchangers of {domain}", permanent=False)

    def __repr__(self) -> str:
        return f"MemoryResolver({len(self._mx)} MX, {len(self._txt)} TXT)"
