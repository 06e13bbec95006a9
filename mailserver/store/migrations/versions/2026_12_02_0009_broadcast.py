"""Broadcast: information messages sent to every active patient mailbox, resumable after an interruption.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

- ``broadcasts``: one row per broadcast; ``cursor`` (the largest account id served) is committed
  with the copies it covers, so a resumed broadcast neither repeats nor skips a patient. The body
  is not kept (``content_sha256`` checks the file given on resume).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "broadcasts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("audience", sa.String(length=32), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=250), nullable=False),
        sa.Column("date", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("delivered", sa.Integer(), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broadcasts")),
    )
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_broadcasts_content_sha256"), ["content_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_broadcasts_content_sha256"))
    op.drop_table("broadcasts")
