"""``make bench-imap``: the IMAP server under a mail client's load, and its memory per idle connection.

Starts ``masante-server`` in a subprocess on a throw-away SQLite database (a
fresh PKI, KEK and accounts in a temporary directory), then:

1. N concurrent clients (default 20), each logged in over IMAPS, loop for a
   fixed time over a mail client's mix: SELECT, UID FETCH FLAGS, UID FETCH
   BODY.PEEK[], UID STORE, APPEND, UID SEARCH, UID STORE \\Deleted + UID
   EXPUNGE; each client also keeps a second connection in IDLE and times how
   long after its APPEND the IDLE connection hears EXISTS ("IDLE wake-up").
   With ``--copy`` the mix also copies a message (UID COPY) and moves the
   APPENDed one (UID MOVE) into another mailbox, instead of its STORE
   \\Deleted + UID EXPUNGE.
   Prints operations per second and p50/p99 latency per command.
2. One client logs in ``--logins`` times in a row, a new connection each
   time: the first LOGIN of a user, then the following ones.
3. Opens 1,000 then 10,000 idle authenticated IMAPS connections and prints the
   server's resident memory (VmRSS) and the bytes per connection.

With ``--pg [DSN]`` the database is a fresh one on that PostgreSQL server (dropped at the end) instead
of SQLite; with ``--processes N`` N ``masante-server`` processes serve the one database (SQLite or
PostgreSQL) on ports of their own, the clients spread over them (each client's IDLE connection on
another process than its own, so the wake-up crosses processes), and the mix runs first against one
process, then against the N, printing both and the ratio.

    .venv/bin/python bench/imap_bench.py [--clients 20] [--seconds 20] [--idle 1000,10000] [--logins 20]
                                         [--pg [postgresql://...]] [--processes N] [--copy]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import resource
import ssl
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.site import start_server  # noqa: E402 - after the checkout is on the path

PASSWORD = "bench-password"  # noqa: S105 - a throw-away account on a throw-away database
DOMAIN = "bench.test"
SEED_MESSAGES = 50
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


# --- setup ---------------------------------------------------------------------------------------------


def prepare(
    tmp: Path, clients: int, scrypt_log_n: int = 10, database_url: str = "sqlite:///bench.db"
) -> tuple[Path, Path, int]:
    """Config, database, PKI, accounts and seed mail. Returns (config file, CA file, IMAPS port)."""
    from bench.site import write_site

    cfg, port = write_site(
        tmp,
        listener="imaps",
        database_url=database_url,
        security={"scrypt_log_n": scrypt_log_n},
        # every client comes from 127.0.0.1, and the idle connections share one account: no cap in the way
        limits={
            "connections_per_source": 50_000,
            "unauthenticated_per_source": 50_000,
            "connections_per_account": 50_000,
            "login_failures_per_source": 50_000,  # it also bounds the logins in flight at once
        },
    )
    asyncio.run(_seed(cfg, clients))
    return tmp / "masante.toml", tmp / "ca.pem", port


def another_process(cfg: Path, port: int, n: int) -> tuple[Path, int]:
    """The configuration of process ``n``: ``cfg`` with an IMAPS port of its own, beside it."""
    from bench.site import free_port

    mine = free_port()
    text = cfg.read_text()
    assert f"imaps = {port}\n" in text
    path = cfg.with_name(f"masante-{n}.toml")
    path.write_text(text.replace(f"imaps = {port}\n", f"imaps = {mine}\n"))
    return path, mine


async def _seed(cfg: object, clients: int) -> None:
    from directory.accounts import AccountService
    from mailserver.context import Context
    from mailserver.delivery import deliver
    from mailserver.store import migrate
    from mailserver.store.models import AccountKind, DomainKind

    ctx = Context.open(cfg)  # type: ignore[arg-type]
    try:
        await migrate.upgrade(ctx.db)
        svc = AccountService(ctx)
        await svc.add_domain(DOMAIN, DomainKind.PROFESSIONAL, actor="bench")
        for i in range(clients + 1):  # the last one holds the idle connections
            account = await svc.create(f"user{i}@{DOMAIN}", AccountKind.PER, actor="bench", password=PASSWORD)
            async with ctx.uow() as uow:
                for j in range(SEED_MESSAGES):
                    raw = _message(f"seed {j}", 2000 + 37 * j)
                    await deliver(uow, ctx.keyring, raw, [account], flags=("\\Seen",) if j % 2 else ())
                await uow.commit()
    finally:
        await ctx.close()


def _message(subject: str, size: int) -> bytes:
    body = ("Lorem ipsum dolor sit amet, resultats biologiques. " * (size // 50 + 1))[:size]
    lines = "\r\n".join(body[i : i + 76] for i in range(0, len(body), 76))
    return (
        f"From: lab@lab.test\r\nTo: user@{DOMAIN}\r\nSubject: {subject}\r\n"
        f"Date: Mon, 23 Nov 2026 09:30:00 +0100\r\nMessage-ID: <{random.random()}@lab.test>\r\n\r\n{lines}\r\n"
    ).encode()


# --- a minimal IMAP client -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An IMAPS server to measure: where it listens, its TLS name, and its users' domain and password."""

    host: str
    port: int
    server_hostname: str = "localhost"
    domain: str = DOMAIN
    password: str = PASSWORD

    def user(self, i: int) -> str:
        return f"user{i}@{self.domain}"


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.n = 0

    @classmethod
    async def open(
        cls, target: Target, tls: ssl.SSLContext, user: str, lat: dict[str, list[float]] | None = None
    ) -> Client:
        reader, writer = await asyncio.open_connection(
            target.host, target.port, ssl=tls, server_hostname=target.server_hostname
        )
        c = cls(reader, writer)
        await reader.readline()
        t0 = time.perf_counter()
        await c.command(f'LOGIN {user} "{target.password}"')
        if lat is not None:
            lat["LOGIN"].append(time.perf_counter() - t0)
        return c

    async def read_response(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                line += await self.reader.readexactly(int(m.group(1)))
                line += await self.reader.readline()
            lines.append(line)
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return lines

    async def command(self, text: str, literal: bytes | None = None) -> list[bytes]:
        self.n += 1
        tag = f"b{self.n}".encode()
        if literal is None:
            self.writer.write(tag + b" " + text.encode() + b"\r\n")
        else:
            self.writer.write(tag + b" " + text.encode() + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        await self.writer.drain()
        return await self.read_response(tag)

    async def close(self) -> None:
        try:
            self.writer.write(b"z LOGOUT\r\n")
            await self.writer.drain()
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        except (OSError, TimeoutError, ssl.SSLError):
            self.writer.transport.abort()


# --- the mix -------------------------------------------------------------------------------------------------


async def worker(
    i: int,
    target: Target,
    tls: ssl.SSLContext,
    until: float,
    lat: dict[str, list[float]],
    watch: Target | None = None,
    copy: bool = False,
) -> None:
    """Client ``i`` on ``target``, its IDLE connection on ``watch`` (default: the same server); with ``copy``,
    UID COPY and UID MOVE into ``Kept`` in the mix."""
    user = target.user(i)
    c = await Client.open(target, tls, user, lat)
    if copy:
        await c.command("CREATE Kept")  # NO if another run made it: either way it is there
    watcher = await Client.open(watch or target, tls, user, lat)
    await watcher.command("SELECT INBOX")
    watcher.writer.write(b"w1 IDLE\r\n")
    await watcher.writer.drain()
    await watcher.reader.readline()  # "+ idling"

    async def timed(name: str, text: str, literal: bytes | None = None) -> list[bytes]:
        t0 = time.perf_counter()
        out = await c.command(text, literal)
        lat[name].append(time.perf_counter() - t0)
        return out

    while time.monotonic() < until:
        lines = await timed("SELECT", "SELECT INBOX")
        uidnext = int(next(re.search(rb"UIDNEXT (\d+)", x).group(1) for x in lines if b"UIDNEXT" in x))  # type: ignore[union-attr]
        await timed("FETCH FLAGS", "UID FETCH 1:* (FLAGS)")
        uid = random.randint(max(1, uidnext - SEED_MESSAGES), uidnext - 1)
        await timed("FETCH BODY[]", f"UID FETCH {uid} (BODY.PEEK[])")
        if copy:
            await timed("COPY", f"UID COPY {uid} Kept")
        await timed("STORE", f"UID STORE {uid} {random.choice('+-')}FLAGS.SILENT (\\Flagged)")
        t_append = time.perf_counter()
        lines = await timed("APPEND", "APPEND INBOX (\\Seen)", _message(f"bench {i}", 3000))
        new_uid = int(re.search(rb"APPENDUID \d+ (\d+)", lines[-1]).group(1))  # type: ignore[union-attr]
        while True:  # the IDLE connection hears of it
            line = await asyncio.wait_for(watcher.reader.readline(), 30)
            if line.endswith(b"EXISTS\r\n"):
                lat["IDLE wake-up"].append(time.perf_counter() - t_append)
                break
        await timed("SEARCH", "UID SEARCH SUBJECT bench")
        if copy:
            await timed("MOVE", f"UID MOVE {new_uid} Kept")
            continue
        await timed("STORE", f"UID STORE {new_uid} +FLAGS.SILENT (\\Deleted)")
        await timed("EXPUNGE", f"UID EXPUNGE {new_uid}")
    watcher.writer.write(b"DONE\r\n")
    await watcher.writer.drain()
    await watcher.close()
    await c.close()


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def hold_idle(target: Target, tls: ssl.SSLContext, user: str, count: int, held: list[Client]) -> None:
    sem = asyncio.Semaphore(100)

    async def one() -> None:
        async with sem:
            for attempt in range(5):
                try:
                    held.append(await Client.open(target, tls, user))
                    return
                except (OSError, ssl.SSLError, ConnectionError):
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("could not open an idle connection")

    await asyncio.gather(*(one() for _ in range(count)))


MIX = ("SELECT", "FETCH FLAGS", "FETCH BODY[]", "COPY", "STORE", "APPEND", "SEARCH", "EXPUNGE", "MOVE")
NOT_IN_MIX = ("LOGIN", "IDLE wake-up")  # timed, but not counted as operations of the mix


@dataclass
class MixResult:
    clients: int
    elapsed: float
    lat: dict[str, list[float]]

    @property
    def ops(self) -> int:
        return sum(len(v) for k, v in self.lat.items() if k not in NOT_IN_MIX)

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.elapsed

    def table(self) -> list[str]:
        out = [f"  {'command':<14} {'count':>7} {'p50 ms':>8} {'p99 ms':>8}"]
        for name in (*MIX, "IDLE wake-up", "LOGIN"):
            v = self.lat.get(name, [])
            if v:
                out.append(
                    f"  {name:<14} {len(v):>7} {percentile(v, 0.5) * 1000:>8.1f} {percentile(v, 0.99) * 1000:>8.1f}"
                )
        return out


async def run_mix(
    target: Target,
    tls: ssl.SSLContext,
    clients: int,
    seconds: float,
    others: Sequence[Target] = (),
    *,
    copy: bool = False,
) -> MixResult:
    """``clients`` workers (users 0..clients-1 of ``target``) loop over the mix for ``seconds``; with
    ``others`` (more processes on the same store), worker ``i`` uses server ``i`` mod N of them all and
    keeps its IDLE connection on the next one."""
    servers = [target, *others]
    lat: dict[str, list[float]] = defaultdict(list)
    t0 = time.monotonic()
    await asyncio.gather(
        *(
            worker(i, servers[i % len(servers)], tls, t0 + seconds, lat, servers[(i + 1) % len(servers)], copy)
            for i in range(clients)
        )
    )
    return MixResult(clients, time.monotonic() - t0, lat)


async def seed_over_imap(target: Target, tls: ssl.SSLContext, users: int, messages: int = SEED_MESSAGES) -> None:
    """The seed mail of ``_seed``, APPENDed over IMAP (for a server this process cannot write into)."""

    async def one(i: int) -> None:
        c = await Client.open(target, tls, target.user(i))
        try:
            for j in range(messages):
                flags = "(\\Seen)" if j % 2 else "()"
                await c.command(f"APPEND INBOX {flags}", _message(f"seed {j}", 2000 + 37 * j))
        finally:
            await c.close()

    sem = asyncio.Semaphore(8)

    async def bounded(i: int) -> None:
        async with sem:
            await one(i)

    await asyncio.gather(*(bounded(i) for i in range(users)))


async def reconnect_logins(target: Target, tls: ssl.SSLContext, user: str, count: int) -> list[float]:
    """One client logging in ``count`` times in a row, a new connection each time: LOGIN latencies."""
    lat: dict[str, list[float]] = defaultdict(list)
    for _ in range(count):
        c = await Client.open(target, tls, user, lat)
        await c.close()
    return lat["LOGIN"]


async def run(args: argparse.Namespace, cfg: Path, ca: Path, port: int, pid: int, more: Sequence[int] = ()) -> None:
    tls = ssl.create_default_context(cafile=str(ca))
    target = Target("127.0.0.1", port)
    database = "PostgreSQL" if args.pg else "SQLite"
    from bench.smtp_bench import cpu_seconds

    cpu = cpu_seconds(pid)
    result = await run_mix(target, tls, args.clients, args.seconds, copy=args.copy)
    cpu = cpu_seconds(pid) - cpu
    print(f"\nIMAP mix: {args.clients} clients for {result.elapsed:.1f} s on {database}, one process")
    print(
        f"  {result.ops} commands, {result.ops_per_s:.0f} ops/s; server CPU {cpu * 1000 / max(result.ops, 1):.2f} ms "
        "per command (its threads' user and system time: steadier than a rate on a shared machine)"
    )
    print("\n".join(result.table()))
    if more:
        others = [Target("127.0.0.1", p) for p in more]
        spread = await run_mix(target, tls, args.clients, args.seconds, others, copy=args.copy)
        n = 1 + len(more)
        print(
            f"\nIMAP mix: {args.clients} clients for {spread.elapsed:.1f} s on {database}, {n} processes "
            "(IDLE on another process than the client's)"
        )
        print(
            f"  {spread.ops} commands, {spread.ops_per_s:.0f} ops/s: "
            f"{spread.ops_per_s / result.ops_per_s:.2f}x one process"
        )
        print("\n".join(spread.table()))
    if args.logins:
        # the user of the idle connections: not logged in by the mix, so the first login is a cold one
        logins = await reconnect_logins(target, tls, target.user(args.clients), args.logins)
        warm = logins[1:] or logins
        print(
            f"\nLOGIN, one client reconnecting {len(logins)} times (scrypt ln={args.scrypt_log_n}): "
            f"first {logins[0] * 1000:.1f} ms, then p50 {percentile(warm, 0.5) * 1000:.1f} ms, "
            f"p99 {percentile(warm, 0.99) * 1000:.1f} ms"
        )

    levels = [int(x) for x in args.idle.split(",") if x.strip() and int(x)]
    if not levels:
        return
    await asyncio.sleep(1)
    base = rss(pid)
    print(f"\nIdle authenticated IMAPS connections (server RSS at rest: {base / 2**20:.1f} MiB)")
    held: list[Client] = []
    user = f"user{args.clients}@{DOMAIN}"
    try:
        for level in levels:
            t = time.monotonic()
            await hold_idle(target, tls, user, level - len(held), held)
            took = time.monotonic() - t
            await asyncio.sleep(1)
            now = rss(pid)
            print(
                f"  {level:>6} connections: RSS {now / 2**20:7.1f} MiB, "
                f"{(now - base) / level / 1024:6.1f} KiB per connection (opened in {took:.1f} s)"
            )
    finally:
        await asyncio.gather(*(c.close() for c in held), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=int(os.environ.get("BENCH_CLIENTS", 20)))
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 20)))
    parser.add_argument("--idle", default=os.environ.get("BENCH_IDLE", "1000,10000"))
    parser.add_argument("--logins", type=int, default=20, help="LOGINs in a row by one client after the mix (0: none)")
    parser.add_argument("--scrypt-log-n", type=int, default=10, help="the password hash's cost (production: 15)")
    parser.add_argument(
        "--pg",
        nargs="?",
        const=PG_ADMIN,
        metavar="DSN",
        help=f"a fresh database on this PostgreSQL server instead of SQLite (default {PG_ADMIN})",
    )
    parser.add_argument("--processes", type=int, default=1, help="masante-server processes on the one store")
    parser.add_argument("--copy", action="store_true", help="UID COPY and UID MOVE in the mix (see above)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    idle = [int(x) for x in args.idle.split(",") if x.strip()]
    want = max(idle, default=0) + 2 * args.clients + 200
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if want > soft:
            print(f"note: ulimit -n is {soft}: fewer idle connections than asked can be held")
    with tempfile.TemporaryDirectory(prefix="masante-bench-") as d:
        tmp = Path(d)
        t = time.monotonic()
        dsn = None
        if args.pg:
            from tests import support

            dsn = support.new_pg_database(args.pg, "masante_bench")
        procs: list[subprocess.Popen[str]] = []
        try:
            url = support.sqlalchemy_pg_url(dsn).replace("+asyncpg", "") if dsn else "sqlite:///bench.db"
            cfg, ca, port = prepare(tmp, args.clients, args.scrypt_log_n, url)
            print(f"setup: {args.clients + 1} accounts, {SEED_MESSAGES} messages each, in {time.monotonic() - t:.1f} s")
            configs = [cfg] + [another_process(cfg, port, n)[0] for n in range(1, args.processes)]
            for c in configs:
                procs.append(start_server(c))
            more = [imaps_port(c) for c in configs[1:]]
            asyncio.run(run(args, cfg, ca, port, procs[0].pid, more))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if dsn is not None:
                support.drop_pg_database(args.pg, dsn)


def imaps_port(cfg: Path) -> int:
    m = re.search(r"^imaps = (\d+)$", cfg.read_text(), re.MULTILINE)
    assert m is not None
    return int(m.group(1))


if __name__ == "__main__":
    main()
