"""Mailbox names kept under the metadata key: a folder named after a diagnosis is not readable at rest.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-02

- ``name_digest``: a keyed digest of the account and the name (``crypto.metadata``),
  unique per account, for lookups; ``name_sealed``: the name, sealed and bound
  to that digest. ``name`` is dropped.
- Existing names are sealed first, with the credential key of the
  configuration (``masante-admin db upgrade`` passes it); without it, a
  database that holds mailboxes stops here with a sentence saying so.
- Downgrading opens every name again, with the same key.
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KIND = "mailbox"


def _need_key(rows: int) -> Any:
    loader: Callable[[], Any] | None = context.config.attributes.get("metadata_key")
    try:
        key = loader() if loader else None
    except RuntimeError:
        key = None
    if key is None:
        raise RuntimeError(
            f"{rows} mailbox names are sealed or opened with the credential key: "
            "migrate with `masante-admin db upgrade` and the server's configuration, which holds that key"
        )
    return key


def upgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name_digest", sa.LargeBinary(length=32), nullable=True))
        batch_op.add_column(sa.Column("name_sealed", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, account_id, name FROM mailboxes")).all()
    if rows:
        key = _need_key(len(rows))
        for id_, account_id, name in rows:
            digest = key.digest(KIND, str(account_id), name)
            bind.execute(
                sa.text("UPDATE mailboxes SET name_digest = :d, name_sealed = :s WHERE id = :i"),
                {"d": digest, "s": key.seal(name.encode("utf-8"), kind=KIND, bound_to=digest), "i": id_},
            )
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_mailboxes_account_id_name"), type_="unique")
        batch_op.drop_column("name")
        batch_op.alter_column("name_digest", existing_type=sa.LargeBinary(length=32), nullable=False)
        batch_op.alter_column("name_sealed", existing_type=sa.LargeBinary(), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_mailboxes_account_id_name_digest"), ["account_id", "name_digest"]
        )


def downgrade() -> None:
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("name", sa.String(length=512), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, name_digest, name_sealed FROM mailboxes")).all()
    if rows:
        key = _need_key(len(rows))
        for id_, digest, sealed in rows:
            name = key.open(sealed, kind=KIND, bound_to=digest).decode("utf-8")
            bind.execute(sa.text("UPDATE mailboxes SET name = :n WHERE id = :i"), {"n": name, "i": id_})
    with op.batch_alter_table("mailboxes", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_mailboxes_account_id_name_digest"), type_="unique")
        batch_op.drop_column("name_digest")
        batch_op.drop_column("name_sealed")
        batch_op.alter_column("name", existing_type=sa.String(length=512), nullable=False)
        batch_op.create_unique_constraint(batch_op.f("uq_mailboxes_account_id_name"), ["account_id", "name"])
