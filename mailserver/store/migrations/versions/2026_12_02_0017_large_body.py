"""Blobs: ``large_body``, the last column of the row, for a large sealed body written in pieces (SQLite).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02

- ``blobs.large_body`` (nullable): on SQLite, a sealed body past 1 MiB is kept here and
  ``body`` is empty. SQLite reserves a blob with ``zeroblob(n)`` without building it in
  memory only when it is the record's last column, which ``body`` is not; the body is then
  written through incremental blob I/O (``BlobRepository``), so storing a 49 MB message no
  longer costs SQLite two copies of it (issue 14 point 3). ``ADD COLUMN`` appends it to every
  record without rewriting the table; rows written before keep their body in ``body``, and
  PostgreSQL keeps using ``body``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("blobs", sa.Column("large_body", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_column("large_body")
