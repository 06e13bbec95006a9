from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from mailserver.store.models import Account, AccountKind, AccountStatus, Domain, DomainKind
from mailserver.store.repositories.base import Repository


class DomainRepository(Repository):
    async def get(self, name: str) -> Domain | None:
        return (await self.session.execute(select(Domain).where(Domain.name == name.lower()))).scalar_one_or_none()

    async def get_by_id(self, domain_id: int) -> Domain | None:
        return await self.session.get(Domain, domain_id)

    async def add(self, name: str, kind: DomainKind) -> Domain:
        domain = Domain(name=name.lower(), kind=kind)
        async with self._conflict_as(f"domain {name} already exists"):
            self.session.add(domain)
        return domain

    async def list(self) -> Sequence[Domain]:
        return (await self.session.execute(select(Domain).order_by(Domain.name))).scalars().all()

    async def account_counts(self) -> dict[int, int]:
        rows = await self.session.execute(select(Account.domain_id, func.count()).group_by(Account.domain_id))
        return {domain_id: count for domain_id, count in rows.tuples()}


class AccountRepository(Repository):
    async def get(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def by_address(self, address: str, *, for_update: bool = False) -> Account | None:
        stmt = select(Account).where(Account.address == address.lower())
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_ins(self, ins: str) -> Account | None:
        return (await self.session.execute(select(Account).where(Account.ins == ins))).scalar_one_or_none()

    async def add(self, account: Account) -> Account:
        async with self._conflict_as(f"account {account.address} already exists"):
            self.session.add(account)
        return account

    async def list(
        self,
        *,
        domain_id: int | None = None,
        kind: AccountKind | None = None,
        status: AccountStatus | None = None,
    ) -> Sequence[Account]:
        stmt = select(Account).order_by(Account.address)
        if domain_id is not None:
            stmt = stmt.where(Account.domain_id == domain_id)
        if kind is not None:
            stmt = stmt.where(Account.kind == kind)
        if status is not None:
            stmt = stmt.where(Account.status == status)
        return (await self.session.execute(stmt)).scalars().all()

    async def with_wrapped_keys(self) -> Sequence[Account]:
        stmt = select(Account).where(Account.wrapped_key.is_not(None)).order_by(Account.id).with_for_update()
        return (await self.session.execute(stmt)).scalars().all()
