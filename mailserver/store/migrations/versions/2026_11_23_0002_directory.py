"""Directory and policies: professionals, activities and published mailboxes (Annuaire Santé), conversation
grants, the history of trust-space imports, whitelist contacts and canonical certificate DNs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from directory.dn import dn_key

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "conversation_grants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient", sa.String(length=320), nullable=False),
        sa.Column("contact", sa.String(length=320), nullable=False),
        sa.Column("granted_by", sa.String(length=320), nullable=False),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversation_grants")),
        sa.UniqueConstraint("patient", "contact", name=op.f("uq_conversation_grants_patient_contact")),
    )
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversation_grants_patient"), ["patient"], unique=False)

    op.create_table(
        "directory_activities",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("national_id", sa.String(length=12), nullable=False),
        sa.Column("profession_code", sa.String(length=8), nullable=True),
        sa.Column("profession", sa.String(length=100), nullable=True),
        sa.Column("specialty_code", sa.String(length=16), nullable=True),
        sa.Column("specialty", sa.String(length=200), nullable=True),
        sa.Column("practice_mode", sa.String(length=50), nullable=True),
        sa.Column("siret", sa.String(length=14), nullable=True),
        sa.Column("finess_site", sa.String(length=9), nullable=True),
        sa.Column("finess_legal", sa.String(length=9), nullable=True),
        sa.Column("structure_id", sa.String(length=32), nullable=True),
        sa.Column("organisation", sa.String(length=200), nullable=True),
        sa.Column("street", sa.String(length=300), nullable=True),
        sa.Column("postal_code", sa.String(length=10), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("phone", sa.String(length=30), nullable=True),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_directory_activities")),
    )
    with op.batch_alter_table("directory_activities", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_activities_national_id"), ["national_id"], unique=False)

    op.create_table(
        "directory_mailboxes",
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("kind", sa.String(length=3), nullable=False),
        sa.Column("national_id", sa.String(length=12), nullable=True),
        sa.Column("structure_id", sa.String(length=32), nullable=True),
        sa.Column("service", sa.String(length=200), nullable=True),
        sa.Column("title", sa.String(length=50), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("profession_code", sa.String(length=8), nullable=True),
        sa.Column("profession", sa.String(length=100), nullable=True),
        sa.Column("specialty", sa.String(length=200), nullable=True),
        sa.Column("dematerialised", sa.Boolean(), nullable=False),
        sa.Column("organisation", sa.String(length=200), nullable=True),
        sa.Column("street", sa.String(length=300), nullable=True),
        sa.Column("postal_code", sa.String(length=10), nullable=True),
        sa.Column("city", sa.String(length=100), nullable=True),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_directory_mailboxes")),
    )
    with op.batch_alter_table("directory_mailboxes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_mailboxes_national_id"), ["national_id"], unique=False)

    op.create_table(
        "directory_professionals",
        sa.Column("national_id", sa.String(length=12), nullable=False),
        sa.Column("id_type", sa.String(length=2), nullable=False),
        sa.Column("identifier", sa.String(length=11), nullable=False),
        sa.Column("title", sa.String(length=50), nullable=True),
        sa.Column("civility", sa.String(length=50), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("profession_code", sa.String(length=8), nullable=True),
        sa.Column("profession", sa.String(length=100), nullable=True),
        sa.Column("category_code", sa.String(length=8), nullable=True),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("search", sa.Text(), nullable=False),
        sa.Column("row_hash", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("national_id", name=op.f("pk_directory_professionals")),
    )
    with op.batch_alter_table("directory_professionals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_directory_professionals_identifier"), ["identifier"], unique=False)

    op.create_table(
        "trust_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=320), nullable=False),
        sa.Column("source", sa.String(length=500), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("previous", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trust_imports")),
    )

    # existing DNs get their canonical key (the same function the server compares peers with)
    with op.batch_alter_table("trust_operator_dns", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dn_key", sa.String(length=1024), nullable=False, server_default=""))
        batch_op.create_index(batch_op.f("ix_trust_operator_dns_dn_key"), ["dn_key"], unique=False)
    dns = sa.table(
        "trust_operator_dns", sa.column("id", sa.Integer), sa.column("dn", sa.String), sa.column("dn_key", sa.String)
    )
    bind = op.get_bind()
    for row_id, dn in bind.execute(sa.select(dns.c.id, dns.c.dn)).all():
        bind.execute(sa.update(dns).where(dns.c.id == row_id).values(dn_key=dn_key(dn)))

    with op.batch_alter_table("trust_operators", schema=None) as batch_op:
        batch_op.add_column(sa.Column("responsible_contact", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("support_contact", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trust_operators", schema=None) as batch_op:
        batch_op.drop_column("listed_at")
        batch_op.drop_column("support_contact")
        batch_op.drop_column("responsible_contact")

    with op.batch_alter_table("trust_operator_dns", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trust_operator_dns_dn_key"))
        batch_op.drop_column("dn_key")

    op.drop_table("trust_imports")
    with op.batch_alter_table("directory_professionals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_professionals_identifier"))
    op.drop_table("directory_professionals")
    with op.batch_alter_table("directory_mailboxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_mailboxes_national_id"))
    op.drop_table("directory_mailboxes")
    with op.batch_alter_table("directory_activities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_activities_national_id"))
    op.drop_table("directory_activities")
    with op.batch_alter_table("conversation_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversation_grants_patient"))
    op.drop_table("conversation_grants")
