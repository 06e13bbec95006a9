"""Conversation grants kept under the metadata key: no readable address left in the table.

Revision ID: 0015
Revises: 0010
Create Date: 2026-12-02

- ``patient_digest`` and ``pair_digest``: keyed digests (``crypto.metadata``)
  of the patient and of the (patient, contact) pair, for lookups and the unique
  constraint; ``sealed``: the contact and who opened the grant, sealed.
- ``patient``, ``contact`` and ``granted_by`` are dropped. Existing rows are
  sealed first, which needs the credential key: ``masante-admin db upgrade``
  (and every command that opens the configuration) passes it; a bare migration
  of a database that holds grants stops with a sentence saying so.
- Downgrading opens every row again (the same key) and restores the columns.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0015"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = "grant"


def _key() -> Any:
    loader: Callable[[], Any] | None = context.config.attributes.get("metadata_key")
    try:
        return loader() if loader else None
    except RuntimeError:
        return None


def _need_key(rows: int) -> Any:
    key = _key()
    if key is None:
        raise RuntimeError(
            f"{rows} conversation grants are sealed or opened with the credential key: "
            "migrate with `masante-admin db upgrade` and the server's configuration, which holds that key"
        )
    return key


def upgrade() -> None:
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient_digest", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("pair_digest", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, patient, contact, granted_by FROM conversation_grants")).all()
    if rows:
        key = _need_key(len(rows))
        for id_, patient, contact, granted_by in rows:
            pair = key.digest(KIND, patient.lower(), contact.lower())
            sealed = key.seal(
                json.dumps({"patient": patient.lower(), "contact": contact.lower(), "granted_by": granted_by}).encode(),
                kind=KIND,
                bound_to=pair,
            )
            bind.execute(
                sa.text("UPDATE conversation_grants SET patient_digest = :p, pair_digest = :d, sealed = :s WHERE id = :i"),
                {"p": key.digest(KIND, patient.lower()), "d": pair, "s": sealed, "i": id_},
            )
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_grants_patient"))
        batch_op.drop_constraint(batch_op.f("uq_conversation_grants_patient_contact"), type_="unique")
        batch_op.drop_column("patient")
        batch_op.drop_column("contact")
        batch_op.drop_column("granted_by")
        batch_op.alter_column("patient_digest", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch_op.alter_column("pair_digest", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch_op.alter_column("sealed", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.create_index(batch_op.f("ix_conversation_grants_patient_digest"), ["patient_digest"], unique=False)
        batch_op.create_unique_constraint(batch_op.f("uq_conversation_grants_pair_digest"), ["pair_digest"])


def downgrade() -> None:
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("contact", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("granted_by", sa.String(length=320), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, pair_digest, sealed FROM conversation_grants")).all()
    if rows:
        key = _need_key(len(rows))
        for id_, pair, sealed in rows:
            opened = json.loads(key.open(sealed, kind=KIND, bound_to=pair))
            bind.execute(
                sa.text("UPDATE conversation_grants SET patient = :p, contact = :c, granted_by = :g WHERE id = :i"),
                {"p": opened["patient"], "c": opened["contact"], "g": opened["granted_by"], "i": id_},
            )
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_conversation_grants_pair_digest"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_conversation_grants_patient_digest"))
        batch_op.drop_column("patient_digest")
        batch_op.drop_column("pair_digest")
        batch_op.drop_column("sealed")
        batch_op.alter_column("patient", existing_type=sa.String(length=320), nullable=False)
        batch_op.alter_column("contact", existing_type=sa.String(length=320), nullable=False)
        batch_op.alter_column("granted_by", existing_type=sa.String(length=320), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_conversation_grants_patient_contact"), ["patient", "contact"])
        batch_op.create_index(batch_op.f("ix_conversation_grants_patient"), ["patient"], unique=False)
