"""DNS, injected: the MX lookup of the queue and the DKIM key lookup go through ``ctx.resolver``.

Invariants:
- Two questions only: the mail exchangers of a domain (RFC 5321 §5.1) and the
  TXT strings at a name (RFC 6376 §3.6.2.2, a DKIM key record, its strings
  joined). "No such name" and "no such record" are an empty answer; a lookup
  that could not be made (timeout, no server answered) raises ``TimeoutError``,
  which the callers turn into a temporary failure.
- ``DnsResolver`` asks public DNS through dnspython; ``MemoryResolver`` is a
  real resolver over a table held in memory (mox ``dns.MockResolver``), for tests
  and for sites that run without DNS. Both answer the same questions the same way.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol, runtime_checkable

__all__ = ["DnsResolver", "MemoryResolver", "Resolver"]

#: seconds a whole lookup may take: an MX lookup (the queue retries later), a DKIM key (a client waits at DATA)
MX_TIMEOUT = 10.0
TXT_TIMEOUT = 5.0


@runtime_checkable
class Resolver(Protocol):
    async def mx(self, domain: str) -> list[tuple[int, str]]:
        """``(preference, exchange)`` for ``domain``, best first; [] when it has none. TimeoutError if unknown."""
        ...

    async def txt(self, name: str) -> list[bytes]:
        """Each TXT record at ``name``, its strings joined; [] when there is none. TimeoutError if unknown."""
        ...


def _name(name: str) -> str:
    return name.strip().rstrip(".").lower()


class DnsResolver:
    """Public DNS, through dnspython's asyncio resolver."""

    def __init__(self, *, mx_timeout: float = MX_TIMEOUT, txt_timeout: float = TXT_TIMEOUT) -> None:
        self.lifetime = {"MX": mx_timeout, "TXT": txt_timeout}

    async def _query(self, name: str, rdtype: str) -> list[object]:
        import dns.asyncresolver
        import dns.exception
        import dns.resolver

        try:
            answer = await dns.asyncresolver.resolve(_name(name), rdtype, lifetime=self.lifetime[rdtype])
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

    def __repr__(self) -> str:
        return "DnsResolver()"


class MemoryResolver:
    """Records held in memory: ``add_mx``, ``add_txt``; ``fail(name)`` makes a name time out."""

    def __init__(self) -> None:
        self._mx: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self._txt: dict[str, list[bytes]] = defaultdict(list)
        self._failing: set[str] = set()
        self.queries: list[tuple[str, str]] = []  # (type, name), in order: what was asked

    def add_mx(self, domain: str, exchange: str, preference: int = 10) -> MemoryResolver:
        self._mx[_name(domain)].append((preference, _name(exchange)))
        return self

    def add_txt(self, name: str, text: str | bytes) -> MemoryResolver:
        self._txt[_name(name)].append(text.encode("ascii") if isinstance(text, str) else text)
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

    def __repr__(self) -> str:
        return f"MemoryResolver({len(self._mx)} MX, {len(self._txt)} TXT)"
