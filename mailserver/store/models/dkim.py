"""DKIM public keys of the trust space, so that signatures verify on a closed network without DNS.

Invariants:
- One row per (domain, selector), the domain lower-case; ``record`` is the TXT
  record an operator publishes at ``<selector>._domainkey.<domain>`` (RFC 6376
  §3.6.1), stored as given (``v=DKIM1; k=rsa; p=...``).
- ``source`` says where it came from: ``local`` (made by ``dkim keygen`` for one
  of our domains) or ``manual`` (an operator's key entered by an administrator).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class DkimKey(Base):
    __tablename__ = "dkim_keys"
    __table_args__ = (UniqueConstraint("domain", "selector"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(String(253), index=True)
    selector: Mapped[str] = mapped_column(String(63))
    record: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="manual")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
