"""Domains, accounts, IMAP mailboxes, messages and their encrypted blobs.

Invariants:
- ``Mailbox.uidnext`` and ``Mailbox.highestmodseq`` are only advanced by
  ``MailboxRepository.allocate`` / ``bump_modseq`` (one ``UPDATE ... RETURNING`` that
  also locks the row until commit), so two deliveries never share a UID and UIDs
  become visible in increasing order.
- Every change to a message (new, flags, expunge) carries a fresh modseq from its
  mailbox; an expunge leaves an ``ExpungedMessage`` tombstone with its modseq, so
  "what changed since modseq N" is answerable (IMAP sessions, CONDSTORE/QRESYNC).
- ``Blob.body`` and ``Blob.meta`` are sealed with the owning account's data key,
  bound to the blob id; an account whose ``wrapped_key`` is NULL has been shredded.
  A large sealed body (written in pieces) is in ``Blob.large_body`` (the row's last column) and
  ``body`` is empty: ``Blob.sealed_body`` is the one to read.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.orm import Mapped, QueryContext, Session, mapped_column

from mailserver.store.models.base import Base, BigIntPK, utcnow
from mailserver.store.sealing import SESSION_SEALER, MetadataSealer, OpenedName, open_mailbox_name, seal_mailbox_name


class DomainKind(enum.StrEnum):
    PROFESSIONAL = "professional"
    PATIENT = "patient"


class AccountKind(enum.StrEnum):
    """MSSanté mailbox types (TRE_R257-TypeBAL) plus patients."""

    PER = "PER"  # a professional, a person
    ORG = "ORG"  # an organisation's service (a secretariat)
    APP = "APP"  # software (a laboratory system)
    PATIENT = "PATIENT"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # an administrator turned it off
    SUSPENDED = "suspended"  # temporarily (e.g. suspected fraud): mail is deferred
    OPPOSED = "opposed"  # the patient refused the service
    CLOSED = "closed"  # closed; data kept until retention_until, then the key is destroyed


def _enum(e: type[enum.StrEnum], name: str) -> Enum:
    return Enum(e, name=name, native_enum=False, length=16, values_callable=lambda x: [m.value for m in x])


class Domain(Base):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    kind: Mapped[DomainKind] = mapped_column(_enum(DomainKind, "domain_kind"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id"), index=True)
    kind: Mapped[AccountKind] = mapped_column(_enum(AccountKind, "account_kind"))
    status: Mapped[AccountStatus] = mapped_column(_enum(AccountStatus, "account_status"))
    display_name: Mapped[str | None] = mapped_column(String(200))
    ins: Mapped[str | None] = mapped_column(String(15), unique=True)
    rpps: Mapped[str | None] = mapped_column(String(11), index=True)
    profession_code: Mapped[str | None] = mapped_column(String(8))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_destroyed_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    closed_at: Mapped[dt.datetime | None]
    retention_until: Mapped[dt.datetime | None]
    #: the largest UIDVALIDITY the account's mailboxes ever had (RFC 3501 §2.3.1.1; ``mailboxes.next_uidvalidity``)
    uidvalidity_high: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    @property
    def owner_id(self) -> str:
        """The opaque id ``crypto`` binds this account's keys and objects to."""
        return f"account:{self.id}"


class Mailbox(Base):
    """An IMAP mailbox. Its name is health data (a folder named after a diagnosis): the row keeps a keyed
    digest of it, for lookups and uniqueness, and a sealed copy (``mailserver.store.sealing``); ``name`` is the
    name opened, set when the row is loaded through a unit of work and sealed again when it changes."""

    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    name_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    special_use: Mapped[str | None] = mapped_column(String(32))  # RFC 6154 attribute, e.g. "\\Sent"
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uidnext: Mapped[int] = mapped_column(BigInteger, default=1)
    highestmodseq: Mapped[int] = mapped_column(BigInteger, default=1)
    first_recent_uid: Mapped[int] = mapped_column(BigInteger, default=1)  # RFC 3501 \Recent bookkeeping
    subscribed: Mapped[bool] = mapped_column(Boolean, default=True)
    # what the mailbox holds (its messages' sizes, their number), kept by triggers on ``messages`` (migration 0021):
    # the quota reads them; never written by the application
    octets: Mapped[int] = mapped_column(BigInteger, server_default="0")
    message_count: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    #: the full path, "/" as hierarchy delimiter; INBOX is "INBOX" (not a column: see the class notes)
    name = OpenedName()


def _sealer(session: Session) -> MetadataSealer | None:
    get = session.info.get(SESSION_SEALER)
    return get() if get is not None else None


@event.listens_for(Mailbox, "load")
def _open_name(target: Mailbox, context: QueryContext) -> None:
    sealer = _sealer(context.session)
    if sealer is not None:
        name = open_mailbox_name(sealer, target.name_digest, target.name_sealed)
        target.__dict__["_opened_name"] = target.__dict__["_sealed_name"] = name


@event.listens_for(Mailbox, "refresh")
def _reopen_name(target: Mailbox, context: QueryContext, attrs: object) -> None:
    _open_name(target, context)


@event.listens_for(Session, "before_flush")
def _seal_names(session: Session, flush_context: object, instances: object) -> None:
    """Seal the names of new mailboxes and of renamed ones (``OpenedName`` marks them modified)."""
    for obj in (*session.new, *session.dirty):
        if not isinstance(obj, Mailbox):
            continue
        name = obj.__dict__.get("_opened_name")
        if name is None or obj.__dict__.get("_sealed_name") == name:
            continue
        sealer = _sealer(session)
        if sealer is None:
            raise RuntimeError("a mailbox name is sealed with the metadata key: write it through a unit of work")
        obj.name_digest, obj.name_sealed = seal_mailbox_name(sealer, obj.account_id, name)
        obj.__dict__["_sealed_name"] = name


class Blob(Base):
    """An encrypted message: the RFC 5322 bytes and the metadata derived from them."""

    __tablename__ = "blobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # uuid4, chosen before sealing
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    meta: Mapped[bytes | None] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # a large sealed body, written in pieces into the row's last column (``body`` is then empty; both databases)
    large_body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)

    @property
    def object_id(self) -> str:
        return f"blob:{self.id}"

    @property
    def sealed_body(self) -> bytes:
        """The sealed body, wherever the row keeps it."""
        return self.large_body if self.large_body is not None else self.body


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uid"),
        Index("ix_messages_mailbox_modseq", "mailbox_id", "modseq"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uid: Mapped[int] = mapped_column(BigInteger)
    modseq: Mapped[int] = mapped_column(BigInteger)
    flags: Mapped[str] = mapped_column(Text, default="")  # space-separated, sorted, keywords sealed (mailserver.flags)
    internal_date: Mapped[dt.datetime]
    size: Mapped[int] = mapped_column(Integer)
    blob_id: Mapped[str] = mapped_column(ForeignKey("blobs.id"), index=True)
    # RFC 8514 SAVEDATE: set by the database on insert (delivery, APPEND, a COPY or MOVE's new row)
    saved_at: Mapped[dt.datetime | None] = mapped_column(server_default=text("CURRENT_TIMESTAMP"))


class ExpungedMessage(Base):
    """A tombstone: which UID left which mailbox at which modseq."""

    __tablename__ = "expunged_messages"
    __table_args__ = (Index("ix_expunged_messages_mailbox_modseq", "mailbox_id", "modseq"),)

    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True)
    uid: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    modseq: Mapped[int] = mapped_column(BigInteger)
