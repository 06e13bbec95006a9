"""What each mailbox holds, kept on its row: the quota's usage read from a handful of rows, not summed over messages.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-04

- ``mailboxes.octets`` and ``mailboxes.message_count``: the sizes and the number of the mailbox's messages,
  filled from ``messages`` here, then kept by triggers on ``messages`` (insert, delete, an update of ``size``
  or ``mailbox_id``), in the transaction of the change itself: whatever writes messages (delivery, APPEND,
  COPY, MOVE, EXPUNGE, a cascade, an administrator's SQL) keeps them true.
- The quota (``mailserver.quota``) and RCPT's full-mailbox check read them: before, every delivery and every
  RCPT to a local account summed all of that account's messages (an account with 50,000 messages, 50,000 rows
  read for each message it received).
- Every writer of a mailbox's messages already holds the mailbox row's lock (``store.uow``): the triggers'
  UPDATE of that row takes no lock the writer did not have. PostgreSQL's are statement triggers over the
  transition tables (one UPDATE per statement and mailbox, an EXPUNGE of 10,000 messages included); SQLite's
  are row triggers (no transition tables there; each is an in-process update of a row already in the page
  cache).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_FILL = sa.text(
    "UPDATE mailboxes SET"
    " octets = (SELECT coalesce(sum(m.size), 0) FROM messages m WHERE m.mailbox_id = mailboxes.id),"
    " message_count = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id)"
)

#: a row trigger's two halves: the new row counted in its mailbox, the old one taken out of its own
_ADD_NEW = "UPDATE mailboxes SET octets = octets + NEW.size, message_count = message_count + 1 WHERE id = NEW.mailbox_id;"
_TAKE_OLD = "UPDATE mailboxes SET octets = octets - OLD.size, message_count = message_count - 1 WHERE id = OLD.mailbox_id;"
#: both, for a message's move or resize (rare: MOVE copies then expunges; nothing resizes today)
_MOVED = f"{_TAKE_OLD} {_ADD_NEW}"
#: PostgreSQL: inserts and deletes summed per mailbox over the statement's rows (transition tables)
_PG_STATEMENT = {
    "insert": ("NEW TABLE AS changed", "sum(size)", "count(*)"),
    "delete": ("OLD TABLE AS changed", "-sum(size)", "-count(*)"),
}
#: SQLite: a row trigger per change (no transition tables there)
_SQLITE = {
    "insert": ("AFTER INSERT ON messages", _ADD_NEW),
    "delete": ("AFTER DELETE ON messages", _TAKE_OLD),
    "update": (
        "AFTER UPDATE OF size, mailbox_id ON messages"
        " WHEN OLD.size IS NOT NEW.size OR OLD.mailbox_id IS NOT NEW.mailbox_id",
        _MOVED,
    ),
}


def upgrade() -> None:
    # plain ALTER TABLE on both (SQLite adds and, since 3.35, drops a column in place: a batch copy of the table
    # would drop the old one, and its messages with it, by their ON DELETE CASCADE)
    op.add_column("mailboxes", sa.Column("octets", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("mailboxes", sa.Column("message_count", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(_FILL)
    if op.get_bind().dialect.name != "postgresql":
        for change, (when, body) in _SQLITE.items():
            op.execute(f"CREATE TRIGGER messages_usage_{change} {when} BEGIN {body} END")
        return
    for change, (tables, octets, count) in _PG_STATEMENT.items():
        op.execute(
            f"CREATE FUNCTION masante_mailbox_usage_{change}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " UPDATE mailboxes SET octets = mailboxes.octets + d.o, message_count = mailboxes.message_count + d.n"
            f" FROM (SELECT mailbox_id, {octets} AS o, {count} AS n FROM changed GROUP BY mailbox_id) AS d"
            " WHERE mailboxes.id = d.mailbox_id; RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER messages_usage_{change} AFTER {change.upper()} ON messages REFERENCING {tables}"
            f" FOR EACH STATEMENT EXECUTE FUNCTION masante_mailbox_usage_{change}()"
        )
    # a row trigger, and only for a change of size or mailbox: a STORE (flags, modseq) costs it nothing
    op.execute(
        "CREATE FUNCTION masante_mailbox_usage_update() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        f" {_MOVED} RETURN NULL; END $$"
    )
    op.execute(
        "CREATE TRIGGER messages_usage_update AFTER UPDATE OF size, mailbox_id ON messages FOR EACH ROW"
        " WHEN (OLD.size IS DISTINCT FROM NEW.size OR OLD.mailbox_id IS DISTINCT FROM NEW.mailbox_id)"
        " EXECUTE FUNCTION masante_mailbox_usage_update()"
    )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for change in _SQLITE:
        op.execute(f"DROP TRIGGER IF EXISTS messages_usage_{change}" + (" ON messages" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION IF EXISTS masante_mailbox_usage_{change}()")
    op.drop_column("mailboxes", "message_count")
    op.drop_column("mailboxes", "octets")
