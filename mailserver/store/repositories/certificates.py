"""Client certificates bound to accounts (``models.certificates``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from mailserver.store.models.certificates import AccountCertificate
from mailserver.store.repositories.base import Repository


class CertificateRepository(Repository):
    async def for_account(self, account_id: int) -> Sequence[AccountCertificate]:
        stmt = select(AccountCertificate).where(AccountCertificate.account_id == account_id)
        return (await self.session.execute(stmt.order_by(AccountCertificate.id))).scalars().all()

    async def binding(self, account_id: int, fingerprint: str) -> AccountCertificate | None:
        stmt = select(AccountCertificate).where(
            AccountCertificate.account_id == account_id, AccountCertificate.fingerprint == fingerprint.lower()
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_fingerprint(self, fingerprint: str) -> Sequence[AccountCertificate]:
        stmt = select(AccountCertificate).where(AccountCertificate.fingerprint == fingerprint.lower())
        return (await self.session.execute(stmt.order_by(AccountCertificate.account_id))).scalars().all()

    async def add(self, binding: AccountCertificate) -> AccountCertificate:
        binding.fingerprint = binding.fingerprint.lower()
        async with self._conflict_as("this certificate is already bound to this account"):
            self.session.add(binding)
        return binding

    async def remove(self, binding: AccountCertificate) -> None:
        await self.session.delete(binding)
        await self.session.flush()
