"""Client certificates bound to accounts, for SASL EXTERNAL (RFC 4422 appendix A) after TLS.

Invariants:
- A row binds one certificate, named by the SHA-256 of its DER encoding
  (``fingerprint``, 64 lower-case hex digits), to one account; the subject DN
  (RFC 4514, most specific RDN first) is kept to show and audit, never to
  decide: only the fingerprint opens the account. One certificate is bound to
  an account at most once; it may be bound to several accounts (one piece of
  software serving several application mailboxes).
- The certificate itself is not stored: what chains to the CA is checked by
  TLS at every connection; ``not_after`` is kept to list what expires.
- Removing an account removes its bindings (``ON DELETE CASCADE``).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class AccountCertificate(Base):
    __tablename__ = "account_certificates"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)  # SHA-256 of the DER, hex
    subject_dn: Mapped[str] = mapped_column(String(1024))
    issuer_dn: Mapped[str] = mapped_column(String(1024))
    not_after: Mapped[dt.datetime]
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    added_by: Mapped[str] = mapped_column(String(320))
