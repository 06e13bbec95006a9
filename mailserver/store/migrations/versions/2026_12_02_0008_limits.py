"""Limits: shared login failure counts and the last login of each account.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

- ``login_counters``: failures per source address and per account name (a
  digest), the lockout in force and how many there were lately; shared by every
  process on the database (``directory.limits``).
- ``account_activity``: the last successful login of each account and the last
  inactivity warning sent to its owner (``masante-admin retention inactive``).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_counters",
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lockouts", sa.Integer(), nullable=False),
        sa.Column("last_lockout_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_login_counters")),
    )
    op.create_table(
        "account_activity",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_activity_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_activity")),
    )


def downgrade() -> None:
    op.drop_table("account_activity")
    op.drop_table("login_counters")
