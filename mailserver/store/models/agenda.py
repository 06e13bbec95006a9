"""The agenda's index: one row per event a patient's (or organiser's) ``Agenda`` holds, and its reminder.

Invariants:
- One row per (mailbox, iCalendar UID): ``message_uid`` is the IMAP UID of the one
  event message that mailbox holds for it (``mailserver.agenda`` replaces the
  message and updates the row in the same unit of work).
- No event content here (summary, place, attendees): that stays in the sealed
  message. The row holds ids, the SEQUENCE, the STATUS and times only.
- A reminder is pending while ``remind_at`` is set and ``reminded_at`` is NULL;
  ``mailserver.reminders`` sets ``reminded_at`` in the unit of work that delivers
  it, so each reminder is sent once, across restarts and processes.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, BigIntPK, utcnow


class AgendaEvent(Base):
    __tablename__ = "agenda_events"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "event_uid"),
        Index("ix_agenda_events_remind_at", "remind_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    event_uid: Mapped[str] = mapped_column(String(512))  # the iCalendar UID (RFC 5545 §3.8.4.7)
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))  # CONFIRMED, TENTATIVE, CANCELLED (RFC 5545 §3.8.1.11)
    message_uid: Mapped[int] = mapped_column(BigInteger)  # IMAP UID of the event message in mailbox_id
    starts_at: Mapped[dt.datetime | None]
    remind_at: Mapped[dt.datetime | None]
    reminded_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
