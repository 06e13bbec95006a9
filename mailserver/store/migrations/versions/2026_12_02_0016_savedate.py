"""SAVEDATE (RFC 8514): when each message was saved in its mailbox.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02

- ``messages.saved_at``: set by the database when the row is inserted (delivery, APPEND, and the
  new row COPY and MOVE make in the destination), so no insert path names it. Rows older than
  this revision take their internal date (RFC 8514 §3: the best the server knows).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "saved_at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"), nullable=True
            )
        )
    op.execute("UPDATE messages SET saved_at = internal_date")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("saved_at")
