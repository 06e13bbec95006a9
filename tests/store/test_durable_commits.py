"""A 250 or an APPEND OK means the message is on disk: every writing connection commits durably.

SQLite in WAL mode fsyncs the WAL at each commit only with ``synchronous=FULL``
(2); with NORMAL (1) the last commits before a power cut can be lost.
PostgreSQL waits for the WAL flush when ``synchronous_commit`` is ``on``.
"""

from __future__ import annotations

from sqlalchemy import text

from mailserver.context import Context


async def test_writing_connections_commit_durably(ctx: Context) -> None:
    async with ctx.uow() as uow:
        if ctx.db.is_sqlite:
            mode = (await uow.session.execute(text("PRAGMA journal_mode"))).scalar_one()
            level = (await uow.session.execute(text("PRAGMA synchronous"))).scalar_one()
            assert (str(mode).lower(), int(level)) == ("wal", 2)  # 2 = FULL
        else:
            setting = (await uow.session.execute(text("SHOW synchronous_commit"))).scalar_one()
            assert setting == "on"
