"""Certificates: client certificates bound to accounts (SASL EXTERNAL).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

- ``account_certificates``: one row per (account, certificate), the
  certificate named by the SHA-256 of its DER (``fingerprint``) with its
  subject and issuer DNs and its end of validity; removed with its account.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("subject_dn", sa.String(length=1024), nullable=False),
        sa.Column("issuer_dn", sa.String(length=1024), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=320), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_certificates_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_certificates")),
        sa.UniqueConstraint("account_id", "fingerprint", name=op.f("uq_account_certificates_account_id_fingerprint")),
    )
    with op.batch_alter_table("account_certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_certificates_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_account_certificates_fingerprint"), ["fingerprint"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("account_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_certificates_fingerprint"))
        batch_op.drop_index(batch_op.f("ix_account_certificates_account_id"))
    op.drop_table("account_certificates")
