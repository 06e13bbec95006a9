"""The trust space: operator domains, the certificate DNs they list, and the history of its changes.

Invariants:
- Read as it is in the database, every time: nothing here caches an operator, a DN or a status.
- ``remote`` reads an address of another domain for admission in one statement, built once at import: the
  operator's status, and the directory's published mailbox of that address (outer-joined) if there is one.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text, update

from mailserver.store.models import OperatorStatus, PublishedMailbox, TrustedOperator, TrustedOperatorDN, TrustImport
from mailserver.store.repositories.base import Repository, is_postgresql

#: a DN as stored: (as written, canonical key)
DN = tuple[str, str]

#: the operator of ``domain`` and the directory's published mailbox ``address``, if any (SMTP RCPT)
_REMOTE = (
    select(TrustedOperator.status, PublishedMailbox.kind, PublishedMailbox.profession_code)
    .select_from(TrustedOperator)
    .outerjoin(PublishedMailbox, PublishedMailbox.address == bindparam("address"))
    .where(TrustedOperator.domain == bindparam("domain"))
)


@dataclass(frozen=True, slots=True)
class RemoteAddress:
    """An address at a trust-space operator: the operator's status, and the directory's word on the mailbox
    (``kind`` PER, ORG, APP or CAB, and the profession), None when the directory does not publish it."""

    status: OperatorStatus
    published_kind: str | None
    profession_code: str | None


class TrustRepository(Repository):
    async def lock_for_change(self) -> None:
        """Serialise whole-trust-space changes (imports, rollbacks) until the transaction ends.

        SQLite: ``BEGIN IMMEDIATE`` already holds the write lock. PostgreSQL: a table lock that lets
        readers (the server) go on reading the old state."""
        if is_postgresql(self.session):
            await self.session.execute(text("LOCK TABLE trust_operators IN SHARE ROW EXCLUSIVE MODE"))

    async def get(self, domain: str) -> TrustedOperator | None:
        return await self.session.get(TrustedOperator, domain.lower())

    async def remote(self, address: str, domain: str) -> RemoteAddress | None:
        """``address`` if ``domain`` (its domain) is in the trust space, else None; one statement (``_REMOTE``)."""
        params = {"address": address.lower(), "domain": domain.lower()}
        row = (await self.session.execute(_REMOTE, params)).first()
        return None if row is None else RemoteAddress(row[0], row[1], row[2])

    async def list(self) -> Sequence[TrustedOperator]:
        return (await self.session.execute(select(TrustedOperator).order_by(TrustedOperator.domain))).scalars().all()

    async def dns(self, domain: str) -> builtins.list[str]:
        stmt = (
            select(TrustedOperatorDN.dn)
            .where(TrustedOperatorDN.domain == domain.lower())
            .order_by(TrustedOperatorDN.dn)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def dn_keys(self, domain: str) -> builtins.list[str]:
        stmt = select(TrustedOperatorDN.dn_key).where(TrustedOperatorDN.domain == domain.lower())
        return list((await self.session.execute(stmt)).scalars().all())

    async def all_dns(self) -> Sequence[TrustedOperatorDN]:
        return (await self.session.execute(select(TrustedOperatorDN))).scalars().all()

    async def domains_with_dn_key(self, key: str, *, active_only: bool = True) -> builtins.list[str]:
        """The operator domains that list a certificate whose canonical DN is ``key``."""
        stmt = (
            select(TrustedOperator.domain)
            .join(TrustedOperatorDN, TrustedOperatorDN.domain == TrustedOperator.domain)
            .where(TrustedOperatorDN.dn_key == key)
        )
        if active_only:
            stmt = stmt.where(TrustedOperator.status == OperatorStatus.ACTIVE)
        return list((await self.session.execute(stmt.order_by(TrustedOperator.domain))).scalars().all())

    async def add(self, operator: TrustedOperator, dns: Sequence[DN] = ()) -> TrustedOperator:
        operator.domain = operator.domain.lower()
        async with self._conflict_as(f"{operator.domain} is already in the trust space"):
            self.session.add(operator)
            for dn, key in _unique(dns):
                self.session.add(TrustedOperatorDN(domain=operator.domain, dn=dn, dn_key=key))
        return operator

    async def add_dn(self, domain: str, dn: str, key: str) -> None:
        async with self._conflict_as(f"{dn} is already listed for {domain}"):
            self.session.add(TrustedOperatorDN(domain=domain.lower(), dn=dn, dn_key=key))

    async def replace_dns(self, domain: str, dns: Sequence[DN]) -> None:
        await self.session.execute(delete(TrustedOperatorDN).where(TrustedOperatorDN.domain == domain.lower()))
        for dn, key in _unique(dns):
            self.session.add(TrustedOperatorDN(domain=domain.lower(), dn=dn, dn_key=key))
        await self.session.flush()

    async def add_dns(self, domain: str, dns: Sequence[DN]) -> None:
        """DNs for a domain that has none yet (a new entry)."""
        self.session.add_all(TrustedOperatorDN(domain=domain.lower(), dn=dn, dn_key=key) for dn, key in _unique(dns))

    async def bulk_add(self, operators: Sequence[Mapping[str, Any]], dns: Mapping[str, Sequence[DN]]) -> None:
        """Insert many new entries and their DNs at once (imports)."""
        if operators:
            await self.session.execute(insert(TrustedOperator), list(operators))
        rows = [
            {"domain": d.lower(), "dn": dn, "dn_key": key} for d, pairs in dns.items() for dn, key in _unique(pairs)
        ]
        if rows:
            await self.session.execute(insert(TrustedOperatorDN), rows)

    async def remove(self, operator: TrustedOperator) -> None:
        await self.session.delete(operator)
        await self.session.flush()

    async def remove_domains(self, domains: Sequence[str]) -> None:
        names = [d.lower() for d in domains]
        for i in range(0, len(names), 500):
            chunk = names[i : i + 500]
            await self.session.execute(delete(TrustedOperatorDN).where(TrustedOperatorDN.domain.in_(chunk)))
            await self.session.execute(delete(TrustedOperator).where(TrustedOperator.domain.in_(chunk)))

    # --- history ---------------------------------------------------------------------------------------------

    async def add_import(self, record: TrustImport) -> TrustImport:
        self.session.add(record)
        await self.session.flush()
        return record

    async def imports(self, limit: int = 20) -> Sequence[TrustImport]:
        stmt = select(TrustImport).order_by(TrustImport.id.desc()).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def latest_with_previous(self) -> TrustImport | None:
        stmt = select(TrustImport).where(TrustImport.previous.is_not(None)).order_by(TrustImport.id.desc()).limit(1)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def keep_previous_of_newest(self, keep: int) -> None:
        """Drop the saved states of all but the ``keep`` newest changes (the history rows stay)."""
        stmt = select(TrustImport.id).order_by(TrustImport.id.desc()).limit(keep)
        ids = (await self.session.execute(stmt)).scalars().all()
        if ids:
            await self.session.execute(
                update(TrustImport)
                .where(TrustImport.id < min(ids), TrustImport.previous.is_not(None))
                .values(previous=None)
            )


def _unique(dns: Sequence[DN]) -> builtins.list[DN]:
    seen: set[str] = set()
    out = []
    for dn, key in dns:
        if key not in seen:
            seen.add(key)
            out.append((dn, key))
    return out
