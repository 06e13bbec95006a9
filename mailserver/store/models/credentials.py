"""Credentials beside the account password: app passwords, app grants, device enrolments, second-factor contacts.

Invariants:
- ``AppCredential.digest`` is HMAC-SHA256 of the secret under the credential
  key (``crypto.credentials``), never the secret; it is unique, so a login
  finds its row by one index lookup.
- A credential with ``folders`` NULL opens the whole account for its
  ``protocols``; one with folders (an app grant) opens those folders and their
  children only, read-only if ``read_only``. ``kind`` says which door made it:
  ``app-password`` (the CLI), ``device`` (the enrolment page), ``grant``
  (``masante-admin app grant``; ``app`` is the labelled app's name).
- A row is never deleted by a revoke: ``revoked_at`` is set, so ``list`` shows
  the history and the audit trail's ids keep pointing at something.
- ``Enrolment.code_digest`` is the one-time code bound to the enrolment's
  ``nonce`` (the id a client holds); ``tries`` counts wrong codes; ``status``
  is ``pending``, ``done``, ``locked`` or ``expired``.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class AppCredential(Base):
    __tablename__ = "app_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    protocols: Mapped[str] = mapped_column(String(64))  # "imap,smtp"
    folders: Mapped[str | None] = mapped_column(Text)  # one name a line; NULL: the whole account
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)
    app: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]


class Enrolment(Base):
    __tablename__ = "enrolments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    device: Mapped[str] = mapped_column(String(100))
    code_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    tries: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class SecondFactorContact(Base):
    """Where an account's one-time codes are sent (its owner's e-mail outside the service, a phone)."""

    __tablename__ = "second_factor_contacts"

    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
