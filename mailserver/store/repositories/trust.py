from __future__ import annotations

import builtins
from collections.abc import Sequence

from sqlalchemy import select

from mailserver.store.models import TrustedOperator, TrustedOperatorDN
from mailserver.store.repositories.base import Repository


class TrustRepository(Repository):
    async def get(self, domain: str) -> TrustedOperator | None:
        return await self.session.get(TrustedOperator, domain.lower())

    async def list(self) -> Sequence[TrustedOperator]:
        return (await self.session.execute(select(TrustedOperator).order_by(TrustedOperator.domain))).scalars().all()

    async def dns(self, domain: str) -> builtins.list[str]:
        stmt = (
            select(TrustedOperatorDN.dn)
            .where(TrustedOperatorDN.domain == domain.lower())
            .order_by(TrustedOperatorDN.dn)
        )
        return list((await self.session.execute(stmt)).scalars().all())

    async def all_dns(self) -> Sequence[TrustedOperatorDN]:
        return (await self.session.execute(select(TrustedOperatorDN))).scalars().all()

    async def add(self, operator: TrustedOperator, dns: Sequence[str] = ()) -> TrustedOperator:
        operator.domain = operator.domain.lower()
        async with self._conflict_as(f"{operator.domain} is already in the trust space"):
            self.session.add(operator)
            for dn in dict.fromkeys(dns):
                self.session.add(TrustedOperatorDN(domain=operator.domain, dn=dn))
        return operator

    async def add_dn(self, domain: str, dn: str) -> None:
        async with self._conflict_as(f"{dn} is already listed for {domain}"):
            self.session.add(TrustedOperatorDN(domain=domain.lower(), dn=dn))

    async def remove(self, operator: TrustedOperator) -> None:
        await self.session.delete(operator)
        await self.session.flush()
