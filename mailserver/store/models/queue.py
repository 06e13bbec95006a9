"""The outbound queue: messages accepted for another operator, until delivered or bounced.

Invariants:
- A queued message is sealed with its own data key (``wrapped_key``, owner
  ``queue:<id>``), so deleting the row after delivery shreds it.
- ``next_attempt_at`` orders the work; a worker claims a row by moving it to
  ``sending`` with ``locked_until``; a crashed worker's claim expires.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Enum, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class QueueStatus(enum.StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class QueuedMessage(Base):
    __tablename__ = "outbound_queue"
    __table_args__ = (Index("ix_outbound_queue_status_next", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id", ondelete="SET NULL"))
    mail_from: Mapped[str] = mapped_column(String(320))  # "" for a DSN (null reverse-path)
    rcpt_to: Mapped[str] = mapped_column(String(320))
    rcpt_domain: Mapped[str] = mapped_column(String(253), index=True)
    orcpt: Mapped[str | None] = mapped_column(String(500))  # RFC 3461 ORCPT
    notify: Mapped[str | None] = mapped_column(String(64))  # RFC 3461 NOTIFY, e.g. "SUCCESS,FAILURE"
    ret: Mapped[str | None] = mapped_column(String(8))  # RFC 3461 RET: FULL or HDRS
    envid: Mapped[str | None] = mapped_column(String(100))  # RFC 3461 ENVID
    body: Mapped[bytes] = mapped_column(LargeBinary)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    status: Mapped[QueueStatus] = mapped_column(
        Enum(
            QueueStatus,
            name="queue_status",
            native_enum=False,
            length=16,
            values_callable=lambda x: [m.value for m in x],
        )
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime]
    locked_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @property
    def owner_id(self) -> str:
        return f"queue:{self.id}"
