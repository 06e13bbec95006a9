"""Broadcasts and the patients they go to, a page at a time in account id order."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from mailserver.store.models import Account, AccountKind, AccountStatus, Broadcast
from mailserver.store.repositories.base import Repository


class BroadcastRepository(Repository):
    async def add(self, item: Broadcast) -> Broadcast:
        self.session.add(item)
        await self.session.flush()
        return item

    async def get(self, broadcast_id: str, *, for_update: bool = False) -> Broadcast | None:
        stmt = select(Broadcast).where(Broadcast.id == broadcast_id)
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def unfinished(self, content_sha256: str) -> Broadcast | None:
        """The broadcast of this very content that was started and not finished, if any."""
        stmt = (
            select(Broadcast)
            .where(Broadcast.content_sha256 == content_sha256, Broadcast.finished_at.is_(None))
            .order_by(Broadcast.created_at)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def list(self) -> Sequence[Broadcast]:
        return (await self.session.execute(select(Broadcast).order_by(Broadcast.created_at))).scalars().all()

    async def patients_after(self, cursor: int, limit: int) -> Sequence[Account]:
        """The next ``limit`` active patient accounts with an id above ``cursor``, in id order."""
        stmt = (
            select(Account)
            .where(Account.id > cursor, Account.kind == AccountKind.PATIENT, Account.status == AccountStatus.ACTIVE)
            .order_by(Account.id)
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def patients_left(self, cursor: int) -> int:
        stmt = select(func.count(Account.id)).where(
            Account.id > cursor, Account.kind == AccountKind.PATIENT, Account.status == AccountStatus.ACTIVE
        )
        return int((await self.session.execute(stmt)).scalar_one())
