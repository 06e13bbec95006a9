"""``make bench-crash``: the full crash campaign (issue 14 point 11) on SQLite and PostgreSQL.

On each database (PostgreSQL when ``--pg`` answers, else it says so and goes on), a real
``masante-server`` under 20 SMTP submission clients and 20 IMAP clients (APPEND, STORE, EXPUNGE) is
SIGKILLed ``--kills`` times (default 10) at a number of acknowledgements drawn from a seeded
generator, and restarted on the same store; after each restart every message that got ``250`` is
there once, every APPEND ``OK`` too, ``audit verify`` passes; at the end the outbound queue has
relayed every acknowledged message to the other operator and is empty (``tests/crash/campaign.py``).
Then ``masante-admin keys rotate`` and ``trust import`` are each killed ``--admin-kills`` times
(``tests/crash/admin.py``). Prints what it checked, kill by kill; exits 1 on any problem.

    .venv/bin/python bench/crash_bench.py [--kills 10] [--admin-kills 3] [--seed N] [--pg postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import support  # noqa: E402
from tests.crash.admin import import_campaign, populate, rotation_campaign  # noqa: E402
from tests.crash.campaign import Campaign, Sink, make_site  # noqa: E402


def campaign(
    name: str, new_url: Callable[[], str], tmp: Path, pki: support.TestPKI, args: argparse.Namespace
) -> list[str]:
    t0 = time.monotonic()
    print(f"\n{name}: {args.kills} kills under 20 SMTP + {args.imap_clients} IMAP clients (seed {args.seed})")
    with Sink(pki) as sink:
        site = make_site(tmp / "load", new_url(), pki, sink.port)
        load = Campaign(site, args.seed, smtp_clients=20, imap_clients=args.imap_clients)
        problems = load.run(args.kills, sink=sink, report=print)
    print(f"{name}: {args.admin_kills} kills of each of keys rotate and trust import")
    admin = make_site(tmp / "admin", new_url(), pki, None)
    populate(admin)
    rng = random.Random(args.seed)
    problems += rotation_campaign(admin, rng, args.admin_kills, print)
    problems += import_campaign(admin, tmp / "admin", rng, args.admin_kills, print)
    print(f"{name}: {'no problem' if not problems else f'{len(problems)} PROBLEMS'} in {time.monotonic() - t0:.0f} s")
    for p in problems:
        print(f"  {p}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="server kills per database (default 10)")
    parser.add_argument("--admin-kills", type=int, default=3, help="kills of each admin command per database")
    parser.add_argument("--imap-clients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="PostgreSQL admin DSN")
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    problems: list[str] = []
    created: list[str] = []
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as d:
        tmp = Path(d)
        pki = support.TestPKI.create(tmp)
        template = tmp / "template.db"
        asyncio.run(support.migrate_url(f"sqlite+aiosqlite:///{template}"))
        counter = iter(range(1_000))

        def sqlite_url() -> str:
            target = tmp / f"db-{next(counter)}.db"
            target.write_bytes(template.read_bytes())
            return f"sqlite+aiosqlite:///{target}"

        def pg_url() -> str:
            dsn = support.new_pg_database(args.pg, "masante_crash")
            created.append(dsn)
            return support.sqlalchemy_pg_url(dsn)

        for sub in ("sqlite/load", "sqlite/admin", "postgresql/load", "postgresql/admin"):
            (tmp / sub).mkdir(parents=True)
        try:
            problems += campaign("SQLite", sqlite_url, tmp / "sqlite", pki, args)
            if not args.sqlite_only:
                try:
                    ready = [pg_url()]  # the first database, and the proof that PostgreSQL answers
                except (OSError, support.PgUnavailable) as exc:
                    print(f"\nPostgreSQL: not reachable at {args.pg} ({exc}): skipped")
                else:
                    problems += campaign(
                        "PostgreSQL", lambda: ready.pop() if ready else pg_url(), tmp / "postgresql", pki, args
                    )
        finally:
            for dsn in created:
                support.drop_pg_database(args.pg, dsn)
    print(f"\ncrash campaign: {'every check passed' if not problems else f'{len(problems)} problems'}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
