"""The audit log: append-only, each entry chained to the previous by a keyed hash.

Invariants:
- ``seq`` is dense (1, 2, 3...), assigned under a lock at commit time; ``hash`` =
  HMAC-SHA256, with the audit key kept outside the database, over the previous
  hash and the entry's canonical fields (seq included), so an edited, inserted,
  deleted or reordered row breaks the chain and cannot be re-chained.
- ``AuditHead`` holds the last seq and hash, written in the same transaction:
  removing the newest rows is detected too (and, head rewound with them, by
  the anchors outside the database). ``keyed_from`` is the first keyed entry:
  those before it were written before migration 0004 with plain SHA-256.
- On PostgreSQL a unit of work writes its entries to ``AuditPending``, in the
  transaction they describe, without taking any shared lock; one sealer at a
  time (an advisory lock) moves them, in batches, into the chain after the
  commit. On SQLite, where there is one writer anyway, entries are chained in
  the writer's own transaction and ``AuditPending`` stays empty.
- Entries hold ids and outcomes, never a body, a password, a key or a document.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, BigIntPK


class AuditEntry(Base):
    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # always 1
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    #: the first entry chained with the audit key (entries before it are legacy, plain SHA-256)
    keyed_from: Mapped[int] = mapped_column(BigInteger, server_default="1")


class AuditPending(Base):
    """Entries committed with what they describe, not chained yet (PostgreSQL: the sealer chains them)."""

    __tablename__ = "audit_pending"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
