"""Broadcasts count the mailboxes they skipped because their quota was full.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-02

- ``broadcasts.skipped``: patients whose account quota (``mailserver.quota``) left no room for the copy when
  their page came; counted with the page's copies and cursor, so a resumed broadcast still reports every run's.
  Existing rows start at 0 (no broadcast skipped anyone before this revision).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skipped", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("broadcasts", schema=None) as batch_op:
        batch_op.drop_column("skipped")
