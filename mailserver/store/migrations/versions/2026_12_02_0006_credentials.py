"""Credentials: app passwords and app grants, device enrolments, second-factor contacts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

- ``app_credentials``: app passwords (``masante-admin app-password``), device
  passwords (the enrolment page) and app grants (``masante-admin app grant``),
  each kept as an HMAC under the credential key (never in the database).
- ``enrolments``: one-time code enrolments (the code's HMAC, tries, status).
- ``second_factor_contacts``: where an account's codes are sent.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("protocols", sa.String(length=64), nullable=False),
        sa.Column("folders", sa.Text(), nullable=True),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.Column("app", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_app_credentials_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_credentials")),
        sa.UniqueConstraint("digest", name=op.f("uq_app_credentials_digest")),
    )
    op.create_index(op.f("ix_app_credentials_account_id"), "app_credentials", ["account_id"], unique=False)
    op.create_table(
        "enrolments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("device", sa.String(length=100), nullable=False),
        sa.Column("code_digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_enrolments_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolments")),
        sa.UniqueConstraint("nonce", name=op.f("uq_enrolments_nonce")),
    )
    op.create_index(op.f("ix_enrolments_account_id"), "enrolments", ["account_id"], unique=False)
    op.create_table(
        "second_factor_contacts",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_second_factor_contacts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_second_factor_contacts")),
    )


def downgrade() -> None:
    op.drop_table("second_factor_contacts")
    op.drop_index(op.f("ix_enrolments_account_id"), table_name="enrolments")
    op.drop_table("enrolments")
    op.drop_index(op.f("ix_app_credentials_account_id"), table_name="app_credentials")
    op.drop_table("app_credentials")
