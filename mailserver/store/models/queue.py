"""The outbound queue: messages accepted for another operator, until delivered or bounced.

Invariants:
- One row per (message, recipient): each recipient is retried, delivered or
  bounced on its own. Rows of one accepted message share ``msg_id``.
- A queued message is sealed with its own data key (``wrapped_key``, owner
  ``queue:<id>``), so deleting the row after delivery shreds it.
- ``next_attempt_at`` orders the work; a worker claims a row by moving it to
  ``sending`` with ``locked_until``; a crashed worker's claim expires and the
  row is due again (at-least-once delivery: a crash between the remote ``250``
  and our commit may deliver twice, never zero times).
- The RFC 3461 parameters the sender gave (NOTIFY, ORCPT, RET, ENVID) and the
  body type (BODY=8BITMIME, SMTPUTF8) travel with the row to the next hop.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, Enum, ForeignKey, Index, Integer, LargeBinary, String, Text
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
    # --- added by the SMTP work (migration 0003) ---
    msg_id: Mapped[str | None] = mapped_column(String(36), index=True)  # the accepted message this copy is of
    body_8bit: Mapped[bool] = mapped_column(Boolean, default=False)  # BODY=8BITMIME (RFC 6152)
    smtputf8: Mapped[bool] = mapped_column(Boolean, default=False)  # SMTPUTF8 (RFC 6531)
    remote_mta: Mapped[str | None] = mapped_column(String(253))  # the host of the last attempt (DSN Remote-MTA)
    delay_notified: Mapped[bool] = mapped_column(Boolean, default=False)  # a "delayed" DSN was sent

    @property
    def owner_id(self) -> str:
        return f"queue:{self.id}"
