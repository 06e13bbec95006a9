"""Is the database there? One round trip, for the HTTPS service's ``/readyz``.

Invariants:
- ``ping`` opens a connection from the process's engine and runs ``SELECT 1``;
  any failure (refused, timed out, authentication) raises, and the caller
  answers 503. Nothing is read or written.
"""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from mailserver.store.db import Database

#: longer than this, the database counts as unreachable
PING_TIMEOUT = 5.0


async def ping(db: Database) -> None:
    """``SELECT 1`` on ``db``; raises if the database does not answer within ``PING_TIMEOUT`` seconds."""
    async with asyncio.timeout(PING_TIMEOUT), db.engine.connect() as conn:
        value = (await conn.execute(select(1))).scalar_one()
    if value != 1:
        raise RuntimeError(f"SELECT 1 returned {value!r}")
