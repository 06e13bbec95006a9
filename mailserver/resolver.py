"""DNS for the server: the configured resolver, mail routes by MX (RFC 5321 §5.1), TXT records.

Invariants:
- ``[dns] nameservers`` (``host``, ``host:port``, ``[v6]:port``) replaces
  ``/etc/resolv.conf`` when given; empty, the system's resolvers are used.
  One resolver per process and configuration (``resolver_for``).
- A route is the domain's exchangers by preference, lowest first, equal ones
  in random order (RFC 5321 §5.1), each with the addresses the same resolver
  gives for it (A, then AAAA). No MX record at all: the domain itself is the
  exchanger (the implicit MX, RFC 5321 §5.1).
- What is final is said so: a domain that does not exist (NXDOMAIN) or that
  publishes a null MX (RFC 7505) raises ``NoRoute(permanent=True)``; a timeout
  or a failing server raises ``NoRoute(permanent=False)`` (retry later).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.resolver

from mailserver.config import Config, ConfigError

#: seconds one lookup may take, retries across the nameservers included
LIFETIME = 10.0


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


def resolver_for(config: Config) -> dns.asyncresolver.Resolver:
    """The resolver ``config`` asks for (one per distinct ``dns.nameservers`` in this process)."""
    return _resolver(tuple(config.dns.nameservers))


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


async def txt(resolver: dns.asyncresolver.Resolver, name: str, *, lifetime: float = LIFETIME) -> list[bytes] | None:
    """The TXT records at ``name`` (each one's strings joined), None if the name or the records do not
    exist; raises ``TimeoutError`` when DNS cannot answer for now."""
    try:
        answer = await resolver.resolve(name, "TXT", lifetime=lifetime, search=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return None
    except dns.exception.DNSException as exc:
        raise TimeoutError(f"DNS lookup of {name} TXT failed: {type(exc).__name__}") from None
    return [b"".join(r.strings) for r in answer]


def hops_text(hops: Sequence[Hop]) -> str:
    return ", ".join(f"{h.name}[{h.address}]" for h in hops)
