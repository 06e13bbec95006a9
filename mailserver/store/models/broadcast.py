"""Broadcasts: one information message delivered to every active patient mailbox, resumable.

Invariants:
- Patients are served in ascending account id; ``cursor`` is the largest id already served,
  committed in the same transaction as the copies it covers. A broadcast interrupted at any
  point resumes after ``cursor``: no patient gets two copies, none is skipped.
- The body is not kept here (each copy is sealed with its patient's key, like every message):
  ``content_sha256`` identifies the message rebuilt on resume from the same file, subject and
  sender; ``message_id`` and ``date`` make the rebuilt copy byte for byte the first one.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class Broadcast(Base):
    __tablename__ = "broadcasts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    audience: Mapped[str] = mapped_column(String(32))  # "patients"
    sender: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(998))
    content_sha256: Mapped[str] = mapped_column(String(64), index=True)
    message_id: Mapped[str] = mapped_column(String(250))
    date: Mapped[str] = mapped_column(String(64))  # the Date header field, as written in every copy
    created_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cursor: Mapped[int] = mapped_column(Integer, default=0)  # largest account id served
    delivered: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # full mailboxes (quota)
    finished_at: Mapped[dt.datetime | None]
