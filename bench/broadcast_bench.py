"""Benchmark of a broadcast: one information message to every active patient mailbox.

    python -m bench.broadcast_bench                    # 100,000 patients on SQLite
    python -m bench.broadcast_bench --patients 20000 --db postgresql://postgres@127.0.0.1:5432/test

Prints the time to open the patients (not counted), the time and rate of the broadcast, and the
storage it took (SQLite: file growth, WAL included; PostgreSQL: database growth). Every copy is
sealed with its patient's key: the storage is one sealed copy per patient.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

from bench.directory_bench import _context, drop, fresh_url, make_ins

TEXT = ("La campagne de vaccination contre la grippe commence le 15 octobre. " * 20 + "\n").encode()


async def _size(ctx: object, url: str) -> int:
    if url.startswith("postgresql"):
        from sqlalchemy import text

        async with ctx.uow(readonly=True) as uow:  # type: ignore[attr-defined]
            return int((await uow.session.execute(text("SELECT pg_database_size(current_database())"))).scalar_one())
    path = Path(url.split("///", 1)[1])
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def run(url: str, n: int, page: int, tmp: Path) -> None:
    from directory.patients import PatientService
    from mailserver.broadcast import BroadcastService

    ctx = await _context(url, tmp)
    try:
        t0 = time.perf_counter()
        report = await PatientService(ctx).open_many((make_ins(i) for i in range(n)), actor="bench")  # type: ignore[arg-type]
        opened = time.perf_counter() - t0
        before = await _size(ctx, url)
        t0, cpu = time.perf_counter(), time.process_time()
        done = await BroadcastService(ctx, page=page).send(subject="Grippe", text=TEXT, actor="bench")  # type: ignore[arg-type]
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu
        after = await _size(ctx, url)
    finally:
        await ctx.close()  # type: ignore[attr-defined]
    kind = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"broadcast ({kind}, {page} patients per commit, message {len(TEXT):,} bytes of text)")
    print(f"  {report.opened:,} patients opened in {opened:.1f} s (not counted)")
    print(
        f"  {done.delivered:,} copies in {seconds:.1f} s: {done.delivered / seconds:,.0f} copies/s "
        f"({done.delivered / cpu:,.0f} per CPU second)"
    )
    print(
        f"  storage: +{(after - before) / 2**20:,.1f} MB "
        f"({(after - before) / max(done.delivered, 1):,.0f} bytes per copy), "
        f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--page", type=int, default=500)
    ap.add_argument("--db", default="sqlite", help="sqlite, or the URL of a PostgreSQL server database to create in")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="masante-bench-") as d:
        tmp = Path(d)
        url = fresh_url(args.db, tmp)
        try:
            asyncio.run(run(url, args.patients, args.page, tmp))
        finally:
            drop(url, args.db)


if __name__ == "__main__":
    main()
