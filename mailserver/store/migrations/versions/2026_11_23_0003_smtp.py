"""SMTP: the DKIM key table of the trust space, and what the outbound queue carries to the next hop.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23

- ``dkim_keys``: operators' DKIM public keys (and ours), for verification without DNS.
- ``outbound_queue``: ``msg_id`` (rows of one accepted message), ``body_8bit`` and
  ``smtputf8`` (the MAIL FROM parameters to repeat), ``remote_mta`` (for the DSN),
  ``delay_notified`` (a "delayed" DSN is sent once).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dkim_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("selector", sa.String(length=63), nullable=False),
        sa.Column("record", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dkim_keys")),
        sa.UniqueConstraint("domain", "selector", name=op.f("uq_dkim_keys_domain_selector")),
    )
    with op.batch_alter_table("dkim_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dkim_keys_domain"), ["domain"], unique=False)

    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.add_column(sa.Column("msg_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("body_8bit", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("smtputf8", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("remote_mta", sa.String(length=253), nullable=True))
        batch_op.add_column(sa.Column("delay_notified", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f("ix_outbound_queue_msg_id"), ["msg_id"], unique=False)
    # the defaults only filled existing rows: the models set every value themselves
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.alter_column("body_8bit", server_default=None)
        batch_op.alter_column("smtputf8", server_default=None)
        batch_op.alter_column("delay_notified", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_queue_msg_id"))
        batch_op.drop_column("delay_notified")
        batch_op.drop_column("remote_mta")
        batch_op.drop_column("smtputf8")
        batch_op.drop_column("body_8bit")
        batch_op.drop_column("msg_id")

    with op.batch_alter_table("dkim_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dkim_keys_domain"))

    op.drop_table("dkim_keys")
