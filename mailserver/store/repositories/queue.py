from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import or_, select

from mailserver.store.models import QueuedMessage, QueueStatus
from mailserver.store.repositories.base import Repository


class QueueRepository(Repository):
    async def add(self, item: QueuedMessage) -> QueuedMessage:
        self.session.add(item)
        await self.session.flush()
        return item

    async def get(self, item_id: str) -> QueuedMessage | None:
        return await self.session.get(QueuedMessage, item_id)

    async def list(self, *, status: QueueStatus | None = None) -> Sequence[QueuedMessage]:
        stmt = select(QueuedMessage).order_by(QueuedMessage.created_at)
        if status is not None:
            stmt = stmt.where(QueuedMessage.status == status)
        return (await self.session.execute(stmt)).scalars().all()

    async def due(self, now: dt.datetime, limit: int = 50) -> Sequence[QueuedMessage]:
        """Rows ready for an attempt (queued and due, or claimed by a worker whose claim expired)."""
        stmt = (
            select(QueuedMessage)
            .where(
                or_(
                    (QueuedMessage.status == QueueStatus.QUEUED) & (QueuedMessage.next_attempt_at <= now),
                    (QueuedMessage.status == QueueStatus.SENDING) & (QueuedMessage.locked_until <= now),
                )
            )
            .order_by(QueuedMessage.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def wrapped(self) -> Sequence[QueuedMessage]:
        stmt = select(QueuedMessage).where(QueuedMessage.wrapped_key.is_not(None)).with_for_update()
        return (await self.session.execute(stmt)).scalars().all()

    async def delete(self, item: QueuedMessage) -> None:
        await self.session.delete(item)
        await self.session.flush()
