"""Benchmark of the directory: importing a generated PS_LibreAcces extraction, opening patients in bulk.

    python -m bench.directory_bench                 # 100,000 then 1,000,000 lines; 100,000 patients
    python -m bench.directory_bench --lines 200000 --patients 0 --db postgresql://postgres@127.0.0.1:5432/test

Each import runs in a fresh process on a fresh database, so its peak memory (ru_maxrss) is its own:
memory must stay flat whatever the file size (the file is streamed, rows written in batches).
Targets: above 20,000 lines/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.data import generate as G


def write_ps(path: Path, lines: int) -> None:
    """``lines`` activity rows, about 1.4 activities per professional, in the national format."""
    with path.open("w", encoding="utf-8") as f:
        f.write("|".join(G.PS_HEADER + G.PS_APPENDED) + "|\n")
        person = 0
        for i in range(lines):
            if i % 7 not in (3, 6):
                person += 1
            f.write(G.ps_line(G.ps_row(person, site=i % 50_000)) + "\n")


def make_ins(n: int) -> str:
    first13 = f"2{n:012d}"
    return first13 + f"{97 - int(first13) % 97:02d}"


async def _context(url: str, tmp: Path) -> object:
    from mailserver.context import Context
    from mailserver.store import migrate
    from mailserver.store.db import Database
    from tests import support

    db = Database(support.sqlalchemy_pg_url(url) if url.startswith("postgresql") else url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    cfg = support.make_config(tmp, url, support.TestPKI.create(tmp))
    return Context.open(cfg)


async def _import(url: str, file: Path, tmp: Path) -> dict[str, float]:
    from directory.annuaire import DirectoryImporter

    ctx = await _context(url, tmp)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        report = await DirectoryImporter(ctx).import_file(file, actor="bench")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await ctx.close()
    return {
        "lines": report.lines,
        "seconds": seconds,
        "cpu": cpu,
        "professionals": report.counts["professionals"].added,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # the parsing worker process, if the file was large enough to get one
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


async def _patients(url: str, n: int, tmp: Path) -> dict[str, float]:
    from directory.patients import PatientService

    ctx = await _context(url, tmp)
    try:
        report = await PatientService(ctx).open_many((make_ins(i) for i in range(n)), actor="bench")
    finally:
        await ctx.close()
    return {"opened": report.opened, "seconds": report.seconds}


def fresh_url(kind: str, tmp: Path) -> str:
    if kind.startswith("postgresql"):
        import asyncpg  # noqa: F401 - fails early if the driver is missing

        from tests import support

        name = f"masante_bench_{os.getpid()}_{int(time.time())}"
        asyncio.run(support.pg_admin(kind, f'CREATE DATABASE "{name}"'))
        return support.pg_database_of(kind, name)
    return f"sqlite+aiosqlite:///{tmp / 'bench.db'}"


def drop(url: str, admin: str) -> None:
    if url.startswith("postgresql"):
        from tests import support

        support.drop_pg_database(admin, url)


def child(argv: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "bench.directory_bench", *argv]
    out = subprocess.run(cmd, capture_output=True, text=True)  # noqa: S603 - this very script
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(out.returncode)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--patients", type=int, default=100_000)
    ap.add_argument("--db", default="sqlite", help="sqlite, or the URL of a PostgreSQL server database to create in")
    ap.add_argument("--child", nargs=3, metavar=("WHAT", "URL", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        what, url, arg = args.child
        tmp = Path(tempfile.mkdtemp(prefix="masante-bench-"))
        if what == "import":
            print(json.dumps(asyncio.run(_import(url, Path(arg), tmp))))
        else:
            print(json.dumps(asyncio.run(_patients(url, int(arg), tmp))))
        return
    with tempfile.TemporaryDirectory(prefix="masante-bench-") as d:
        tmp = Path(d)
        print(f"directory import ({args.db}): PS_LibreAcces_Personne_activite lines, fresh process and database each")
        for n in args.lines:
            file = tmp / f"PS_LibreAcces_Personne_activite_{n}.txt"
            t0 = time.perf_counter()
            write_ps(file, n)
            gen = time.perf_counter() - t0
            run_dir = tmp / f"run{n}"
            run_dir.mkdir()
            url = fresh_url(args.db, run_dir)
            try:
                r = child(["--child", "import", url, str(file)])
            finally:
                drop(url, args.db)
            size = file.stat().st_size / 2**20
            file.unlink()
            print(
                f"  {int(r['lines']):>9,} lines ({size:,.0f} MB, generated in {gen:.1f} s): "
                f"{r['lines'] / r['seconds']:>8,.0f} lines/s ({r['lines'] / r['cpu']:,.0f} per CPU second), "
                f"{int(r['professionals']):,} professionals, "
                f"peak memory {r['peak_rss_mb']:.0f} MB (+ parsing worker {r['worker_rss_mb']:.0f} MB)"
            )
        if args.patients:
            run_dir = tmp / "patients"
            run_dir.mkdir()
            url = fresh_url(args.db, run_dir)
            try:
                r = child(["--child", "patients", url, str(args.patients)])
            finally:
                drop(url, args.db)
            print(
                f"patient open --file ({args.db}): {int(r['opened']):,} patients in {r['seconds']:.1f} s: "
                f"{r['opened'] / r['seconds']:,.0f} patients/s"
            )


if __name__ == "__main__":
    main()
