"""Foundation: domains, accounts, mailboxes, messages, encrypted blobs, outbound queue, audit log, trust space.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("object_id", sa.String(length=512), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_log")),
    )
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column(
            "kind", sa.Enum("professional", "patient", name="domain_kind", native_enum=False, length=16), nullable=False
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("name", name=op.f("uq_domains_name")),
    )
    op.create_table(
        "trust_operators",
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("mta_host", sa.String(length=253), nullable=True),
        sa.Column("mta_port", sa.Integer(), nullable=True),
        sa.Column("dkim_signing", sa.Boolean(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("active", "suspended", name="operator_status", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_trust_operators")),
    )
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("domain_id", sa.Integer(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum("PER", "ORG", "APP", "PATIENT", name="account_kind", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "disabled",
                "suspended",
                "opposed",
                "closed",
                name="account_status",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("ins", sa.String(length=15), nullable=True),
        sa.Column("rpps", sa.String(length=11), nullable=True),
        sa.Column("profession_code", sa.String(length=8), nullable=True),
        sa.Column("password_hash", sa.String(length=200), nullable=True),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("key_destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retention_until", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["domain_id"], ["domains.id"], name=op.f("fk_accounts_domain_id_domains")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("address", name=op.f("uq_accounts_address")),
        sa.UniqueConstraint("ins", name=op.f("uq_accounts_ins")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_domain_id"), ["domain_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_accounts_rpps"), ["rpps"], unique=False)

    op.create_table(
        "trust_operator_dns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("dn", sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(
            ["domain"],
            ["trust_operators.domain"],
            name=op.f("fk_trust_operator_dns_domain_trust_operators"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_operator_dns")),
        sa.UniqueConstraint("domain", "dn", name=op.f("uq_trust_operator_dns_domain_dn")),
    )
    with op.batch_alter_table("trust_operator_dns", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trust_operator_dns_domain"), ["domain"], unique=False)

    op.create_table(
        "blobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("meta", sa.LargeBinary(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_blobs_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blobs")),
    )
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_blobs_account_id"), ["account_id"], unique=False)

    op.create_table(
        "mailboxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("special_use", sa.String(length=32), nullable=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uidnext", sa.BigInteger(), nullable=False),
        sa.Column("highestmodseq", sa.BigInteger(), nullable=False),
        sa.Column("first_recent_uid", sa.BigInteger(), nullable=False),
        sa.Column("subscribed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_mailboxes_account_id_accounts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mailboxes")),
        sa.UniqueConstraint("account_id", "name", name=op.f("uq_mailboxes_account_id_name")),
    )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mailboxes_account_id"), ["account_id"], unique=False)

    op.create_table(
        "outbound_queue",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("mail_from", sa.String(length=320), nullable=False),
        sa.Column("rcpt_to", sa.String(length=320), nullable=False),
        sa.Column("rcpt_domain", sa.String(length=253), nullable=False),
        sa.Column("orcpt", sa.String(length=500), nullable=True),
        sa.Column("notify", sa.String(length=64), nullable=True),
        sa.Column("ret", sa.String(length=8), nullable=True),
        sa.Column("envid", sa.String(length=100), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum("queued", "sending", "delivered", "failed", name="queue_status", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_outbound_queue_account_id_accounts"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_queue")),
    )
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbound_queue_rcpt_domain"), ["rcpt_domain"], unique=False)
        batch_op.create_index("ix_outbound_queue_status_next", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "expunged_messages",
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_expunged_messages_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("mailbox_id", "uid", name=op.f("pk_expunged_messages")),
    )
    with op.batch_alter_table("expunged_messages", schema=None) as batch_op:
        batch_op.create_index("ix_expunged_messages_mailbox_modseq", ["mailbox_id", "modseq"], unique=False)

    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("flags", sa.Text(), nullable=False),
        sa.Column("internal_date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("blob_id", sa.String(length=36), nullable=False),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name=op.f("fk_messages_blob_id_blobs")),
        sa.ForeignKeyConstraint(
            ["mailbox_id"], ["mailboxes.id"], name=op.f("fk_messages_mailbox_id_mailboxes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("mailbox_id", "uid", name=op.f("uq_messages_mailbox_id_uid")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_blob_id"), ["blob_id"], unique=False)
        batch_op.create_index("ix_messages_mailbox_modseq", ["mailbox_id", "modseq"], unique=False)

    # the audit chain starts from a head at entry 0 with the all-zero hash
    op.bulk_insert(
        sa.table(
            "audit_head", sa.column("id", sa.Integer), sa.column("seq", sa.BigInteger), sa.column("hash", sa.String)
        ),
        [{"id": 1, "seq": 0, "hash": "0" * 64}],
    )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_mailbox_modseq")
        batch_op.drop_index(batch_op.f("ix_messages_blob_id"))

    op.drop_table("messages")
    with op.batch_alter_table("expunged_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_expunged_messages_mailbox_modseq")

    op.drop_table("expunged_messages")
    with op.batch_alter_table("outbound_queue", schema=None) as batch_op:
        batch_op.drop_index("ix_outbound_queue_status_next")
        batch_op.drop_index(batch_op.f("ix_outbound_queue_rcpt_domain"))

    op.drop_table("outbound_queue")
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mailboxes_account_id"))

    op.drop_table("mailboxes")
    with op.batch_alter_table("blobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_blobs_account_id"))

    op.drop_table("blobs")
    with op.batch_alter_table("trust_operator_dns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trust_operator_dns_domain"))

    op.drop_table("trust_operator_dns")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_rpps"))
        batch_op.drop_index(batch_op.f("ix_accounts_domain_id"))

    op.drop_table("accounts")
    op.drop_table("trust_operators")
    op.drop_table("domains")
    op.drop_table("audit_log")
    op.drop_table("audit_head")
