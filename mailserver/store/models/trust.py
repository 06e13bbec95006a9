"""The trust space: operator domains we exchange mail with, and the certificate DNs of their MTAs.

Invariants:
- Domain names are stored lower-case (domains compare case-insensitively).
- A domain may be listed with several DNs (one per MTA certificate), as in the
  national whitelist. ``dn_key`` is the DN in canonical form (attribute types
  upper-case, values case-folded, no spaces around separators): peers are
  matched on it, so ``CN=a, O=B`` and ``CN=a,O=b`` are one DN.
- ``source`` says where an entry comes from: ``manual`` (``trust add``) or
  ``whitelist`` (the national list). A whitelist import replaces the whitelist
  entries and keeps what is local: manual entries, the MTA host and port, the
  DKIM setting and a suspension.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Boolean, Enum, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class OperatorStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class TrustedOperator(Base):
    __tablename__ = "trust_operators"

    domain: Mapped[str] = mapped_column(String(253), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    mta_host: Mapped[str | None] = mapped_column(String(253))  # None: the domain itself (or its MX)
    mta_port: Mapped[int | None] = mapped_column(Integer)
    dkim_signing: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[OperatorStatus] = mapped_column(
        Enum(
            OperatorStatus,
            name="operator_status",
            native_enum=False,
            length=16,
            values_callable=lambda x: [m.value for m in x],
        ),
        default=OperatorStatus.ACTIVE,
    )
    source: Mapped[str] = mapped_column(String(32), default="manual")  # "manual" or "whitelist"
    responsible_contact: Mapped[str | None] = mapped_column(Text)
    support_contact: Mapped[str | None] = mapped_column(Text)
    listed_at: Mapped[dt.datetime | None]  # DateMAJ in the whitelist
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrustedOperatorDN(Base):
    __tablename__ = "trust_operator_dns"
    __table_args__ = (UniqueConstraint("domain", "dn"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str] = mapped_column(ForeignKey("trust_operators.domain", ondelete="CASCADE"), index=True)
    dn: Mapped[str] = mapped_column(String(1024))
    dn_key: Mapped[str] = mapped_column(String(1024), index=True, default="")
