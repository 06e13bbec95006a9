from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from mailserver.store.models import DkimKey
from mailserver.store.repositories.base import Repository


class DkimKeyRepository(Repository):
    async def get(self, domain: str, selector: str) -> DkimKey | None:
        stmt = select(DkimKey).where(DkimKey.domain == domain.lower(), DkimKey.selector == selector)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(self, domain: str | None = None) -> Sequence[DkimKey]:
        stmt = select(DkimKey).order_by(DkimKey.domain, DkimKey.selector)
        if domain is not None:
            stmt = stmt.where(DkimKey.domain == domain.lower())
        return (await self.session.execute(stmt)).scalars().all()

    async def add(self, key: DkimKey) -> DkimKey:
        key.domain = key.domain.lower()
        async with self._conflict_as(f"a DKIM key {key.selector}._domainkey.{key.domain} already exists"):
            self.session.add(key)
        return key

    async def remove(self, key: DkimKey) -> None:
        await self.session.delete(key)
        await self.session.flush()
