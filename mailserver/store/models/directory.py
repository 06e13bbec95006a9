"""The directory of professionals (Annuaire Santé), published mailboxes, conversation grants, trust-space history.

Invariants:
- Directory rows come only from imports of the public extractions and are
  keyed by what identifies them there: a professional by national id
  (``8``+RPPS or ``0``+ADELI), an activity by that id and a digest of the
  structure, profession and practice it describes (``<national id>:<digest>``,
  so one professional's activities sit together), a published mailbox by its
  address (lower-case). ``row_hash`` is a digest of every imported field: a
  re-import writes only rows whose digest changed.
- ``search`` columns hold the searchable text lower-cased and without accents,
  so a search needs no function on the column.
- A conversation grant lets a patient write to a contact; it is keyed by
  addresses (the patient may be another operator's), one row per pair, and
  removed when the professional ends the conversation. Neither address is
  readable in the row: keyed digests for lookups, the rest sealed
  (``crypto.metadata``, under a key beside the KEK).
- ``trust_imports`` keeps every whitelist import, and for the newest ones the
  trust space as it was before (compressed JSON), so an import can be undone.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from mailserver.store.models.base import Base, utcnow


class Professional(Base):
    __tablename__ = "directory_professionals"

    national_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    id_type: Mapped[str] = mapped_column(String(2))  # "8" RPPS, "0" ADELI
    identifier: Mapped[str] = mapped_column(String(11), index=True)
    title: Mapped[str | None] = mapped_column(String(50))  # civilité d'exercice: "Docteur"
    civility: Mapped[str | None] = mapped_column(String(50))  # "Madame", "Monsieur"
    last_name: Mapped[str | None] = mapped_column(String(100))
    first_name: Mapped[str | None] = mapped_column(String(100))
    profession_code: Mapped[str | None] = mapped_column(String(8))
    profession: Mapped[str | None] = mapped_column(String(100))
    category_code: Mapped[str | None] = mapped_column(String(8))
    category: Mapped[str | None] = mapped_column(String(100))
    search: Mapped[str] = mapped_column(Text, default="")
    row_hash: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Activity(Base):
    """One row of PS_LibreAcces_Personne_activite: a professional practising at a site."""

    __tablename__ = "directory_activities"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    national_id: Mapped[str] = mapped_column(String(12), index=True)
    profession_code: Mapped[str | None] = mapped_column(String(8))
    profession: Mapped[str | None] = mapped_column(String(100))
    specialty_code: Mapped[str | None] = mapped_column(String(16))  # savoir-faire
    specialty: Mapped[str | None] = mapped_column(String(200))
    practice_mode: Mapped[str | None] = mapped_column(String(50))  # libéral, salarié...
    siret: Mapped[str | None] = mapped_column(String(14))
    finess_site: Mapped[str | None] = mapped_column(String(9))
    finess_legal: Mapped[str | None] = mapped_column(String(9))
    structure_id: Mapped[str | None] = mapped_column(String(32))
    organisation: Mapped[str | None] = mapped_column(String(200))
    street: Mapped[str | None] = mapped_column(String(300))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    city: Mapped[str | None] = mapped_column(String(100))
    phone: Mapped[str | None] = mapped_column(String(30))
    search: Mapped[str] = mapped_column(Text, default="")
    row_hash: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PublishedMailbox(Base):
    """One row of Extraction_Correspondance_MSSante: a secure mailbox published in the directory."""

    __tablename__ = "directory_mailboxes"

    address: Mapped[str] = mapped_column(String(320), primary_key=True)
    kind: Mapped[str] = mapped_column(String(3))  # PER, ORG, APP, CAB
    national_id: Mapped[str | None] = mapped_column(String(12), index=True)
    structure_id: Mapped[str | None] = mapped_column(String(32))
    service: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str | None] = mapped_column(String(50))
    last_name: Mapped[str | None] = mapped_column(String(100))
    first_name: Mapped[str | None] = mapped_column(String(100))
    profession_code: Mapped[str | None] = mapped_column(String(8))
    profession: Mapped[str | None] = mapped_column(String(100))
    specialty: Mapped[str | None] = mapped_column(String(200))
    dematerialised: Mapped[bool] = mapped_column(Boolean, default=False)
    organisation: Mapped[str | None] = mapped_column(String(200))
    street: Mapped[str | None] = mapped_column(String(300))
    postal_code: Mapped[str | None] = mapped_column(String(10))
    city: Mapped[str | None] = mapped_column(String(100))
    search: Mapped[str] = mapped_column(Text, default="")
    row_hash: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ConversationGrant(Base):
    """A patient may reply to a contact. No address is readable here (``crypto.metadata``): the row is found
    by keyed digests of the patient and of the pair, and the contact and who opened the grant are sealed."""

    __tablename__ = "conversation_grants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_digest: Mapped[bytes] = mapped_column(LargeBinary(32), index=True)
    pair_digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)  # {"patient", "contact", "granted_by"}, bound to pair_digest
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    refreshed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrustImport(Base):
    """A change of the whole trust space (a whitelist import or an undo), with the state it replaced."""

    __tablename__ = "trust_imports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # "import", "rollback"
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(320))
    source: Mapped[str | None] = mapped_column(String(500))  # the file's name
    sha256: Mapped[str | None] = mapped_column(String(64))
    generated_at: Mapped[dt.datetime | None]  # DateDeGeneration of the whitelist
    entries: Mapped[int] = mapped_column(Integer, default=0)
    added: Mapped[int] = mapped_column(Integer, default=0)
    removed: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    previous: Mapped[bytes | None] = mapped_column(LargeBinary)  # zlib(JSON) of the trust space before
