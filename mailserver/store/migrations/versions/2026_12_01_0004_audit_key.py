"""Audit: the chain is keyed from here on; entries written before are legacy.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- ``audit_head.keyed_from``: the first entry chained with HMAC-SHA256 under the
  audit key (kept beside the KEK, never in the database). Existing entries were
  chained with plain SHA-256, which anyone able to write the database could
  recompute: they are kept as they are and verified as legacy, up to this
  marker (``seq + 1`` of the current head; ``1`` on an empty log). The first
  anchor written outside the database records the marker, so moving it later
  is detected.
- ``audit_pending``: on PostgreSQL, entries committed with what they describe
  and not chained yet; one sealer (an advisory lock) chains them in batches
  after the commit, so writers no longer queue on the ``audit_head`` row.
- Downgrading drops the marker (and the pending entries: seal them first): keyed entries then no longer verify with the
  unkeyed code of revision 0003.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keyed_from", sa.BigInteger(), nullable=False, server_default="1"))
    op.execute("UPDATE audit_head SET keyed_from = seq + 1")
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=512), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )


def downgrade() -> None:
    op.drop_table("audit_pending")
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("keyed_from")
