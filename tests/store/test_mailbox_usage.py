"""What each mailbox holds (``mailboxes.octets``, ``message_count``), kept by the database's triggers on ``messages``
(migration 0021): true after every kind of change, on SQLite and PostgreSQL; filled by the upgrade from the
messages already there; the downgrade drops the columns and keeps every message."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from mailserver.store import migrate
from mailserver.store.db import Database
from tests.store.test_sealed_grants import bare_url

__all__ = ["bare_url"]

_HELD = text("SELECT id, octets, message_count FROM mailboxes ORDER BY id")
_TRUE = text(
    "SELECT b.id, coalesce(sum(m.size), 0), count(m.id) FROM mailboxes b LEFT JOIN messages m ON m.mailbox_id = b.id"
    " GROUP BY b.id ORDER BY b.id"
)


async def _account_with_boxes(conn: AsyncConnection, boxes: int) -> list[int]:
    await conn.execute(
        text("INSERT INTO domains (name, kind, created_at) VALUES ('h.test', 'professional', CURRENT_TIMESTAMP)")
    )
    await conn.execute(
        text(
            "INSERT INTO accounts (address, domain_id, kind, status, created_at) "
            "SELECT 'dr@h.test', id, 'PER', 'active', CURRENT_TIMESTAMP FROM domains"
        )
    )
    for i in range(boxes):
        await conn.execute(
            text(
                "INSERT INTO mailboxes (account_id, name_digest, name_sealed, uidvalidity, uidnext, "
                "highestmodseq, first_recent_uid, subscribed, created_at) "
                "SELECT id, :d, :s, 7, 1, 1, 1, true, CURRENT_TIMESTAMP FROM accounts"
            ),
            {"d": bytes([i]) * 32, "s": b"s"},
        )
    await conn.execute(
        text(
            "INSERT INTO blobs (id, account_id, body, size, created_at)"
            " SELECT 'b1', id, :x, 1, CURRENT_TIMESTAMP FROM accounts"
        ),
        {"x": b"x"},
    )
    return [int(r[0]) for r in (await conn.execute(text("SELECT id FROM mailboxes ORDER BY id"))).all()]


_ADD = text(
    "INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id) "
    "VALUES (:mb, :uid, 1, '', CURRENT_TIMESTAMP, :size, 'b1')"
)


async def _held(conn: AsyncConnection) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    held = [(int(a), int(b), int(c)) for a, b, c in (await conn.execute(_HELD)).all()]
    true = [(int(a), int(b), int(c)) for a, b, c in (await conn.execute(_TRUE)).all()]
    return held, true


async def test_every_change_of_messages_keeps_what_each_mailbox_holds(bare_url: str) -> None:
    db = Database(bare_url)
    try:
        await migrate.upgrade(db)
        async with db.engine.begin() as conn:
            a, b, c = await _account_with_boxes(conn, 3)
            # one statement adding several messages to two mailboxes (a delivery to many), then one more
            await conn.execute(
                _ADD, [{"mb": a, "uid": u, "size": 100 * u} for u in (1, 2, 3)] + [{"mb": b, "uid": 1, "size": 7}]
            )
            await conn.execute(_ADD, {"mb": c, "uid": 1, "size": 1000})
            held, true = await _held(conn)
            assert held == true == [(a, 600, 3), (b, 7, 1), (c, 1000, 1)]
            await conn.execute(text("UPDATE messages SET flags = '\\Seen', modseq = 2"))  # a STORE: nothing moves
            await conn.execute(
                text("UPDATE messages SET mailbox_id = :b, uid = 9 WHERE mailbox_id = :a AND uid = 1"), {"a": a, "b": b}
            )
            await conn.execute(text("UPDATE messages SET size = 50 WHERE mailbox_id = :c"), {"c": c})
            await conn.execute(
                text("DELETE FROM messages WHERE mailbox_id = :a AND uid IN (2, 3)"), {"a": a}
            )  # EXPUNGE
            held, true = await _held(conn)
            assert held == true == [(a, 0, 0), (b, 107, 2), (c, 50, 1)]
            await conn.execute(text("DELETE FROM mailboxes WHERE id = :b"), {"b": b})  # its messages by the cascade
            held, true = await _held(conn)
            assert held == true == [(a, 0, 0), (c, 50, 1)]
        async with db.engine.connect() as conn:  # a rolled back change leaves nothing behind
            trans = await conn.begin()
            await conn.execute(_ADD, {"mb": a, "uid": 5, "size": 5})
            await trans.rollback()
            held, true = await _held(conn)
            assert held == true == [(a, 0, 0), (c, 50, 1)]
    finally:
        await db.dispose()


async def test_the_upgrade_fills_them_and_the_downgrade_keeps_every_message(bare_url: str) -> None:
    db = Database(bare_url)
    try:
        await migrate.upgrade(db, "0020")
        async with db.engine.begin() as conn:
            a, b = await _account_with_boxes(conn, 2)
            await conn.execute(_ADD, [{"mb": a, "uid": 1, "size": 10}, {"mb": a, "uid": 2, "size": 20}])
        await migrate.upgrade(db)
        async with db.engine.connect() as conn:
            held, true = await _held(conn)
        assert held == true == [(a, 30, 2), (b, 0, 0)]
        await migrate.downgrade(db, "0020")
        async with db.engine.begin() as conn:
            assert int((await conn.execute(text("SELECT count(*) FROM messages"))).scalar_one()) == 2
            await conn.execute(_ADD, {"mb": b, "uid": 1, "size": 1})  # no trigger left behind
            with pytest.raises(Exception, match="octets"):
                await conn.execute(text("SELECT octets FROM mailboxes"))
    finally:
        await db.dispose()
