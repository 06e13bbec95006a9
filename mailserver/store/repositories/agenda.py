"""The agenda's index rows (``AgendaEvent``): by UID, the pending reminders, claiming one."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select, update

from mailserver.store.models import AgendaEvent
from mailserver.store.repositories.base import Repository


class AgendaRepository(Repository):
    async def get(self, mailbox_id: int, event_uid: str) -> AgendaEvent | None:
        stmt = select(AgendaEvent).where(AgendaEvent.mailbox_id == mailbox_id, AgendaEvent.event_uid == event_uid)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_by_id(self, event_id: int) -> AgendaEvent | None:
        return await self.session.get(AgendaEvent, event_id, populate_existing=True)

    async def by_message(self, mailbox_id: int, message_uid: int) -> AgendaEvent | None:
        stmt = select(AgendaEvent).where(AgendaEvent.mailbox_id == mailbox_id, AgendaEvent.message_uid == message_uid)
        return (await self.session.execute(stmt)).scalars().first()

    async def add(self, event: AgendaEvent) -> AgendaEvent:
        self.session.add(event)
        await self.session.flush()
        return event

    async def of_account(self, account_id: int) -> Sequence[AgendaEvent]:
        stmt = select(AgendaEvent).where(AgendaEvent.account_id == account_id).order_by(AgendaEvent.id)
        return (await self.session.execute(stmt)).scalars().all()

    async def due(self, now: dt.datetime, limit: int = 100) -> builtins.list[int]:
        """Ids of the events whose reminder is due at ``now`` and not sent yet, oldest first."""
        stmt = (
            select(AgendaEvent.id)
            .where(AgendaEvent.remind_at.is_not(None), AgendaEvent.remind_at <= now, AgendaEvent.reminded_at.is_(None))
            .order_by(AgendaEvent.remind_at, AgendaEvent.id)
            .limit(limit)
        )
        return [int(i) for i in (await self.session.execute(stmt)).scalars().all()]

    async def next_due(self) -> dt.datetime | None:
        """When the next pending reminder is due (None: none pending)."""
        stmt = (
            select(AgendaEvent.remind_at)
            .where(AgendaEvent.remind_at.is_not(None), AgendaEvent.reminded_at.is_(None))
            .order_by(AgendaEvent.remind_at)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def claim_reminder(self, event_id: int, now: dt.datetime) -> AgendaEvent | None:
        """Mark the reminder of ``event_id`` sent, if it still is pending: the row, or None when another
        unit of work (another process) claimed it first. The row stays locked until the commit."""
        stmt = (
            update(AgendaEvent)
            .where(AgendaEvent.id == event_id, AgendaEvent.reminded_at.is_(None), AgendaEvent.remind_at.is_not(None))
            .values(reminded_at=now)
            .returning(AgendaEvent.id)
            .execution_options(synchronize_session=False)
        )
        if (await self.session.execute(stmt)).scalar_one_or_none() is None:
            return None
        row = await self.session.get(AgendaEvent, event_id, populate_existing=True)
        return row
