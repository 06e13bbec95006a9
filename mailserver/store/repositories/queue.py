"""The outbound queue's rows: adding, claiming what is due, listing for the administrator."""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import func, or_, select, update

from mailserver.store.models import QueuedMessage, QueueStatus
from mailserver.store.repositories.base import Repository


class QueueRepository(Repository):
    async def add(self, item: QueuedMessage) -> QueuedMessage:
        self.session.add(item)
        await self.session.flush()
        return item

    async def enqueue(
        self,
        qid: str,
        *,
        body: bytes | bytearray,
        wrapped_key: bytes,
        size: int,
        mail_from: str,
        rcpt: str,
        now: dt.datetime,
        expires_at: dt.datetime,
        msg_id: str,
        body_8bit: bool,
        smtputf8: bool = False,
        account_id: int | None = None,
        orcpt: str | None = None,
        notify: str | None = None,
        ret: str | None = None,
        envid: str | None = None,
    ) -> QueuedMessage:
        """A new row, due now, for one recipient of a message already sealed under ``queue:<qid>``
        (``bodies.seal_for_queue``): the one place a queued message starts its life (SMTP, bounces, MDNs)."""
        return await self.add(
            QueuedMessage(
                id=qid,
                account_id=account_id,
                mail_from=mail_from,
                rcpt_to=rcpt,
                rcpt_domain=rcpt.rpartition("@")[2].lower(),
                orcpt=orcpt,
                notify=notify,
                ret=ret,
                envid=envid,
                body=body,
                wrapped_key=wrapped_key,
                size=size,
                status=QueueStatus.QUEUED,
                attempts=0,
                next_attempt_at=now,
                locked_until=None,
                last_error=None,
                created_at=now,
                expires_at=expires_at,
                updated_at=now,
                msg_id=msg_id,
                body_8bit=body_8bit,
                smtputf8=smtputf8,
                remote_mta=None,
                delay_notified=False,
            )
        )

    async def get(self, item_id: str, *, for_update: bool = False) -> QueuedMessage | None:
        if not for_update:
            return await self.session.get(QueuedMessage, item_id)
        stmt = select(QueuedMessage).where(QueuedMessage.id == item_id).with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def by_prefix(self, prefix: str) -> Sequence[QueuedMessage]:
        """Rows whose id (or message id) starts with ``prefix``: what an administrator types."""
        stmt = (
            select(QueuedMessage)
            .where(or_(QueuedMessage.id.startswith(prefix), QueuedMessage.msg_id.startswith(prefix)))
            .order_by(QueuedMessage.created_at)
            .with_for_update()
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def list(self, *, status: QueueStatus | None = None, domain: str | None = None) -> Sequence[QueuedMessage]:
        stmt = select(QueuedMessage).order_by(QueuedMessage.created_at, QueuedMessage.rcpt_to)
        if status is not None:
            stmt = stmt.where(QueuedMessage.status == status)
        if domain is not None:
            stmt = stmt.where(QueuedMessage.rcpt_domain == domain.lower())
        return (await self.session.execute(stmt)).scalars().all()

    async def due(self, now: dt.datetime, limit: int = 50) -> Sequence[QueuedMessage]:
        """Rows ready for an attempt (queued and due, or claimed by a worker whose claim expired),
        locked for this transaction (other workers skip them)."""
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

    async def claim(self, now: dt.datetime, until: dt.datetime, limit: int) -> builtins.list[QueuedMessage]:
        """Move up to ``limit`` due rows to ``sending`` until ``until``; the caller commits."""
        rows = list(await self.due(now, limit))
        for row in rows:
            row.status = QueueStatus.SENDING
            row.locked_until = until
            row.updated_at = now
        await self.session.flush()
        return rows

    async def release(self, ids: Sequence[str], now: dt.datetime) -> None:
        """Give claimed rows back (a worker stopping): due again at once."""
        if not ids:
            return
        await self.session.execute(
            update(QueuedMessage)
            .where(QueuedMessage.id.in_(list(ids)), QueuedMessage.status == QueueStatus.SENDING)
            .values(status=QueueStatus.QUEUED, locked_until=None, next_attempt_at=now, updated_at=now)
        )

    async def next_due_at(self) -> dt.datetime | None:
        stmt = (
            select(QueuedMessage.next_attempt_at)
            .where(QueuedMessage.status == QueueStatus.QUEUED)
            .order_by(QueuedMessage.next_attempt_at)
            .limit(1)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def depth(self) -> tuple[int, dt.datetime | None]:
        """How many messages are queued (any status) and when the oldest was queued (metrics)."""
        row = (
            await self.session.execute(
                select(func.count(), func.min(QueuedMessage.created_at)).select_from(QueuedMessage)
            )
        ).one()
        return int(row[0]), row[1]

    async def wrapped(self) -> Sequence[QueuedMessage]:
        stmt = select(QueuedMessage).where(QueuedMessage.wrapped_key.is_not(None)).with_for_update()
        return (await self.session.execute(stmt)).scalars().all()

    async def delete(self, item: QueuedMessage) -> None:
        await self.session.delete(item)
        await self.session.flush()
