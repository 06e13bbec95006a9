"""Migration 0020: the keywords already in ``messages.flags`` are sealed, and opened again on the way down.

Checked in the bytes the database holds (the SQLite file and its WAL, ``pg_dump`` of PostgreSQL).
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from crypto.credentials import CredentialKey
from crypto.metadata import MetadataKey
from mailserver.flags import FlagCodec
from mailserver.store import migrate
from mailserver.store.db import Database
from tests.store.test_sealed_grants import bare_url, database_bytes, readable

__all__ = ["bare_url"]  # the fixture

KEYWORD = "Sclerose-en-plaques"
PLAIN = "$MDNSent \\Seen"


async def _flags(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text("SELECT flags FROM messages ORDER BY uid"))).scalars().all())


async def test_upgrading_seals_the_keywords_already_there_and_downgrading_opens_them(bare_url: str) -> None:
    key = MetadataKey(CredentialKey.generate())
    db = Database(bare_url)
    try:
        await migrate.upgrade(db, "0019")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO domains (name, kind, created_at) VALUES ('h.test', 'professional', CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO accounts (address, domain_id, kind, status, created_at) "
                    "SELECT 'dr@h.test', id, 'PER', 'active', CURRENT_TIMESTAMP FROM domains"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO mailboxes (account_id, name_digest, name_sealed, uidvalidity, uidnext, "
                    "highestmodseq, first_recent_uid, subscribed, created_at) "
                    "SELECT id, :d, :s, 7, 3, 1, 1, true, CURRENT_TIMESTAMP FROM accounts"
                ),
                {"d": b"d" * 32, "s": b"s"},
            )
            await conn.execute(
                text(
                    "INSERT INTO blobs (id, account_id, body, size, created_at) "
                    "SELECT 'b1', id, :x, 1, CURRENT_TIMESTAMP FROM accounts"
                ),
                {"x": b"x"},
            )
            for uid, flags in ((1, f"$MDNSent {KEYWORD} \\Seen"), (2, PLAIN)):
                await conn.execute(
                    text(
                        "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id) "
                        "SELECT id, :u, 1, :f, CURRENT_TIMESTAMP, 1, 'b1' FROM mailboxes"
                    ),
                    {"u": uid, "f": flags},
                )
        with pytest.raises(RuntimeError, match="the keywords of 1 messages are sealed or opened with the credential"):
            await migrate.upgrade(db)
        db.metadata_key_loader = lambda: key
        await migrate.upgrade(db)
        sealed, plain = await _flags(db)
        assert plain == PLAIN and sealed.split()[::2] == ["$MDNSent", "\\Seen"] and sealed.split()[1][0] == "%"
        async with db.engine.connect() as conn:
            account_id = (await conn.execute(text("SELECT id FROM accounts"))).scalar_one()
        assert FlagCodec(lambda: key, account_id).decode(sealed) == {"$MDNSent", "\\Seen", KEYWORD}
        assert readable(database_bytes(bare_url), KEYWORD, "Sclerose") == []
        await migrate.downgrade(db, "0019")
        assert await _flags(db) == [f"$MDNSent {KEYWORD} \\Seen", PLAIN]
    finally:
        await db.dispose()
