"""UIDVALIDITY high-water mark per account, so a mailbox made again never gets an old value back.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

- ``accounts.uidvalidity_high``: the largest UIDVALIDITY any mailbox of the account had, raised in the
  transaction that creates or deletes a mailbox (RFC 3501 §2.3.1.1), whatever process does it. Existing
  accounts start from the largest UIDVALIDITY of their mailboxes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("uidvalidity_high", sa.BigInteger(), server_default="0", nullable=False))
    op.execute(
        "UPDATE accounts SET uidvalidity_high = COALESCE("
        "(SELECT MAX(mailboxes.uidvalidity) FROM mailboxes WHERE mailboxes.account_id = accounts.id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("uidvalidity_high")
