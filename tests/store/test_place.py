"""A delivery's new messages (``MessageRepository.place``): PostgreSQL writes the blobs, the mailboxes' next UIDs and
the message rows in one statement, SQLite in three; on both, copies into one mailbox take consecutive UIDs in
their order, each mailbox one new modseq, and what each mailbox holds stays true (the usage triggers). A large body
(written in pieces afterwards) takes the statements of its own."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from mailserver.store import migrate
from mailserver.store.db import Database
from mailserver.store.models import Blob
from mailserver.store.repositories.mail import LARGE_BODY, MessageRepository
from tests.store.test_mailbox_usage import _account_with_boxes, _held
from tests.store.test_sealed_grants import bare_url

__all__ = ["bare_url"]

WHEN = dt.datetime(2026, 12, 4, 20, 0, tzinfo=dt.UTC)
_ROWS = text("SELECT mailbox_id, uid, modseq, size, blob_id FROM messages ORDER BY mailbox_id, uid")
_NEXT = text("SELECT id, uidnext, highestmodseq FROM mailboxes ORDER BY id")


def _blob(name: str, account_id: int, body: bytes) -> Blob:
    return Blob(id=name, account_id=account_id, body=body, meta=b"m", size=len(body))


async def test_copies_take_consecutive_uids_and_one_modseq_per_mailbox(bare_url: str) -> None:
    db = Database(bare_url)
    try:
        await migrate.upgrade(db)
        async with db.engine.begin() as conn:
            a, b, _ = await _account_with_boxes(conn, 3)
            account = int((await conn.execute(text("SELECT id FROM accounts"))).scalar_one())
        async with db.writer() as session:
            repo = MessageRepository(session)
            copies = [(_blob("x1", account, b"one"), a, 10), (_blob("x2", account, b"two"), a, 20)]
            copies.append((_blob("x3", account, b"three"), b, 30))
            assert await repo.place(copies, flags="", when=WHEN, locked=False) == [(1, 2), (2, 2), (1, 2)]
            # the next delivery into a: after the first two; a large body alone
            big = _blob("x4", account, b"z" * (LARGE_BODY + 1))
            assert await repo.place([(big, a, 40)], flags="", when=WHEN, locked=False) == [(3, 3)]
            await session.commit()
        async with db.engine.begin() as conn:
            rows = [tuple(r) for r in (await conn.execute(_ROWS)).all()]
            assert rows == [(a, 1, 2, 10, "x1"), (a, 2, 2, 20, "x2"), (a, 3, 3, 40, "x4"), (b, 1, 2, 30, "x3")]
            moved = {int(r[0]): (int(r[1]), int(r[2])) for r in (await conn.execute(_NEXT)).all()}
            assert moved[a] == (4, 3) and moved[b] == (2, 2)
            bodies = dict((await conn.execute(text("SELECT id, size FROM blobs WHERE id LIKE 'x%'"))).all())
            assert bodies == {"x1": 3, "x2": 3, "x3": 5, "x4": LARGE_BODY + 1}
            held, true = await _held(conn)
            assert held == true
    finally:
        await db.dispose()
