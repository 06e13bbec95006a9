"""Agenda: the index of event messages in ``Agenda`` mailboxes and their pending reminders.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

- ``agenda_events``: one row per (mailbox, iCalendar UID), pointing at the one
  event message of that UID (its IMAP UID), with SEQUENCE, STATUS, start and
  reminder times; no event content (that stays sealed in the message).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agenda_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("event_uid", sa.String(length=512), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message_uid", sa.BigInteger(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remind_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_agenda_events_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_agenda_events_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agenda_events")),
        sa.UniqueConstraint("mailbox_id", "event_uid", name=op.f("uq_agenda_events_mailbox_id_event_uid")),
    )
    op.create_index(op.f("ix_agenda_events_account_id"), "agenda_events", ["account_id"], unique=False)
    op.create_index("ix_agenda_events_remind_at", "agenda_events", ["remind_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_agenda_events_remind_at", table_name="agenda_events")
    op.drop_index(op.f("ix_agenda_events_account_id"), table_name="agenda_events")
    op.drop_table("agenda_events")
