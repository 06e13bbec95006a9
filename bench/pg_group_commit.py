"""Does group commit pay on PostgreSQL? Units of work as concurrent transactions vs grouped in one.

The question ``mailserver.store.groupcommit`` answers for SQLite: there, one writer and one fsync per
COMMIT make a shared transaction worth it. On PostgreSQL, writers run at once on separate connections
and the WAL flush of concurrent commits is shared already. This measures both shapes with the same unit
(an INSERT of a 200-byte row and an UPDATE of one of 50 shared rows, as a message and its mailbox's
counters): 20 connections committing their units each, and one connection running them 20 at a time in
one transaction, a SAVEPOINT each (what a group-committing writer would do). ``synchronous_commit`` is
printed: the figures mean something only with it ``on``.

    .venv/bin/python bench/pg_group_commit.py [postgresql://postgres@127.0.0.1:5432/test]

Works in two tables of its own (random names), dropped at the end.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
from typing import Any

import asyncpg

DSN = "postgresql://postgres@127.0.0.1:5432/test"
UNITS = 2000
CLIENTS = 20
BATCH = 20
ROWS = 50


async def unit(conn: Any, table: str, i: int) -> None:
    await conn.execute(f"INSERT INTO {table} (n, body) VALUES ($1, $2)", i, "x" * 200)  # noqa: S608 - our names
    await conn.execute(f"UPDATE {table}_head SET seq = seq + 1 WHERE id = $1", i % ROWS)  # noqa: S608


async def separate(pool: Any, table: str) -> float:
    todo = iter(range(UNITS))

    async def worker() -> None:
        async with pool.acquire() as conn:
            for i in todo:
                async with conn.transaction():
                    await unit(conn, table, i)

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return UNITS / (time.perf_counter() - t)


async def grouped(pool: Any, table: str) -> float:
    async with pool.acquire() as conn:
        t = time.perf_counter()
        for start in range(0, UNITS, BATCH):
            async with conn.transaction():
                for i in range(start, min(UNITS, start + BATCH)):
                    async with conn.transaction():  # nested: a SAVEPOINT
                        await unit(conn, table, i)
        return UNITS / (time.perf_counter() - t)


async def main(dsn: str) -> None:
    table = f"bench_gc_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    create = (
        "CREATE TABLE {t} (id bigserial PRIMARY KEY, n int, body text);"
        "CREATE TABLE {t}_head (id int PRIMARY KEY, seq int);"
        "INSERT INTO {t}_head SELECT g, 0 FROM generate_series(0, {last}) g"
    )
    await admin.execute(create.format(t=table, last=ROWS - 1))
    try:
        print(f"PostgreSQL, synchronous_commit={await admin.fetchval('SHOW synchronous_commit')}, {UNITS} units")
        pool = await asyncpg.create_pool(dsn, min_size=CLIENTS, max_size=CLIENTS)
        try:
            for _ in range(2):
                print(f"  a transaction per unit, {CLIENTS} connections: {await separate(pool, table):6.0f} units/s")
                print(f"  {BATCH} units per transaction, 1 connection:   {await grouped(pool, table):6.0f} units/s")
        finally:
            await pool.close()
    finally:
        await admin.execute(f"DROP TABLE {table}; DROP TABLE {table}_head")
        await admin.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else DSN))
