"""``masante-server``: process wiring, listeners, signals, start and stop.

Invariants:
- The server refuses to start on a database that is not at the newest
  migration (it says which command fixes it).
- SIGINT and SIGTERM stop it cleanly: listeners close first, sessions are told
  goodbye, then the database is released; exit status 0.
- Each front end (IMAP, SMTP) is a ``Service`` (``mailserver.endpoints``):
  ``start()`` binds and returns the endpoints it listens on, ``stop()`` undoes
  it. Front ends hold no state that matters: several processes may run against
  one PostgreSQL.
- This module is the top of the server: it imports the front ends, nothing
  below it imports it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from directory.auth import Authenticator
from directory.limits import ConnectionCaps
from mailserver import logs, supervisor
from mailserver.admission import Admission
from mailserver.config import Config, ConfigError, load
from mailserver.context import Context
from mailserver.endpoints import Endpoint, Service
from mailserver.imap.service import build as build_imap
from mailserver.notify import ModseqPoller, PgListener, SiblingRelay, relay_directory
from mailserver.reminders import ReminderScheduler
from mailserver.smtp.service import build as build_smtp
from mailserver.store import migrate
from mailserver.trustsync import TrustSyncScheduler
from mailserver.web.service import build as build_web

log = logging.getLogger("masante.server")


def build_services(ctx: Context, endpoints: Sequence[Endpoint] = ()) -> list[Service]:
    """The front ends this process runs, in start order; the web service last, advertising ``endpoints``."""
    admission = Admission(ctx)  # one per process, injected into every door
    reminders = ReminderScheduler(ctx)  # the agenda's reminders (mailserver.reminders)
    # one Authenticator (one set of login limits) and one set of connection caps for every door
    authenticator, caps = Authenticator(ctx), ConnectionCaps.for_context(ctx)
    return [
        *build_smtp(ctx, admission, authenticator, caps),
        *build_imap(ctx, admission, authenticator, caps),
        reminders,
        *([TrustSyncScheduler(ctx)] if TrustSyncScheduler.wanted(ctx) else []),  # the daily whitelist sync
        *build_web(ctx, endpoints, authenticator),
    ]


class StartupError(Exception):
    pass


@dataclass
class Server:
    ctx: Context
    services: list[Service] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    _listener: PgListener | ModseqPoller | None = None
    _relay: SiblingRelay | None = None

    def port(self, name: str) -> int:
        for e in self.endpoints:
            if e.name == name:
                return e.port
        raise KeyError(name)

    async def start(self) -> None:
        current = await migrate.current_revision(self.ctx.db)
        head = migrate.head_revision()
        if current != head:
            raise StartupError(
                f"the database is at revision {current or 'none'}, this server needs {head}: "
                "run `masante-admin db upgrade`"
            )
        if self.ctx.db.audit is None:
            raise StartupError(
                f"no audit key at {self.ctx.config.resolve(self.ctx.config.audit.key_file)}: "
                "run `masante-admin init` (it keeps what exists and creates the key)"
            )
        if self.ctx.db.is_postgresql:
            self._listener = PgListener(_asyncpg_dsn(self.ctx.db.url), self.ctx.db.notifier)
        else:
            interval = self.ctx.config.server.change_poll_interval
            self._listener = ModseqPoller(self._highest_modseqs, self.ctx.db.notifier, interval=interval)
            directory = relay_directory(self.ctx.db.sqlite_file)
            if directory is not None:
                self._relay = SiblingRelay(directory, self.ctx.db.notifier)
                await self._relay.start()
        await self._listener.start()
        if not self.services:
            self.services = build_services(self.ctx, self.endpoints)  # filled in place as services start
        try:
            for s in self.services:
                self.endpoints += await s.start()
        except BaseException:
            await self.stop()
            raise

    async def _highest_modseqs(self, mailbox_ids: list[int]) -> dict[int, int]:
        async with self.ctx.uow(readonly=True) as uow:
            return await uow.mailboxes.highest_modseqs(mailbox_ids)

    async def stop(self) -> None:
        for s in reversed(self.services):
            try:
                await s.stop()
            except Exception:
                log.exception("service.stop-failed", extra={"fields": {"service": s.name}})
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._relay is not None:
            await self._relay.stop()
            self._relay = None


def _asyncpg_dsn(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


@contextlib.asynccontextmanager
async def running(config: Config, **kwargs: object) -> AsyncIterator[Server]:
    """Start a whole server in this event loop (tests, benchmarks)."""
    ctx = Context.open(config, **kwargs)  # type: ignore[arg-type]
    server = Server(ctx)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()
        await ctx.close()


#: addresses a demo listens on that clients should call ``localhost``
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def banner(config: Config, endpoints: Sequence[Endpoint]) -> str:
    lines = [f"masante-server {config.server.hostname}: listening"]
    lines += [f"  {e.description:<44} {e.host}:{e.port}" for e in endpoints]
    if not endpoints:
        lines.append("  (no listener configured)")
    lines.append(f"  clients must trust the CA in {config.resolve(config.tls.ca)}")
    if any(e.host in LOOPBACK for e in endpoints):
        # the certificate names localhost: clients that check names (mbsync, fetchmail) refuse a bare address
        lines.append("  connect to localhost (the name in the server's certificate), not 127.0.0.1")
    lines.append("  stop with Ctrl-C (SIGINT) or SIGTERM")
    return "\n".join(lines)


async def serve(config: Config, ready_fd: int | None = None) -> int:
    """Run until SIGINT or SIGTERM. ``ready_fd``: a server process of a supervisor (``mailserver.supervisor``),
    which is given the banner through that pipe once this one listens, and prints it once for all."""
    ctx = Context.open(config)
    server = Server(ctx)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
        if ready_fd is None:
            print(banner(config, server.endpoints), flush=True)
        else:
            os.write(ready_fd, (banner(config, server.endpoints) + "\n").encode())  # a few hundred bytes
            os.close(ready_fd)
        log.info("server.started", extra={"fields": {"endpoints": [f"{e.name}:{e.port}" for e in server.endpoints]}})
        await stop.wait()
        log.info("server.stopping")
    finally:
        await server.stop()
        await ctx.close()
    if ready_fd is None:
        print("masante-server stopped", flush=True)
    return 0


#: allocations (net of frees) between two collections of the youngest generation, and collections of each
#: generation between two of the next. Python's (700, 10, 10) suits a script; a server that makes and drops
#: thousands of short-lived objects per command (SQLAlchemy's results and states, parsed commands) ran a young
#: collection every few statements, each walking every object that survived the last one
GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc() -> None:
    """Collect garbage cycles less often. Measured (SQLite, 2-core machine, two pairs each): bench/smtp_bench.py
    --letters 10.7, 10.3 -> 10.1, 9.7 ms of server CPU per message; bench/imap_bench.py 6.3, 6.1 -> 4.9, 5.3 ms per
    command. ``gc.freeze`` of what startup made was tried as well: no gain seen."""
    gc.set_threshold(*GC_THRESHOLDS)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="masante-server", description="Run the masante-mail server.")
    parser.add_argument(
        "--config", metavar="PATH", help="configuration file (default: $MASANTE_CONFIG or var/masante.toml)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        metavar="N",
        help="server processes sharing the ports (default: server.processes, 1); one per core uses the machine",
    )
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)  # a server process of a supervisor
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
        if args.processes is not None:
            config.server.processes = args.processes
        supervisor.check_ports(config)
        logs.setup(config.log.level)
        if config.server.processes > 1 and args.ready_fd is None:
            given = ["--config", args.config] if args.config else []
            sys.exit(supervisor.Supervisor(config.server.processes, given).run())
        tune_gc()
        sys.exit(asyncio.run(serve(config, args.ready_fd)))
    except (ConfigError, StartupError, OSError) as exc:
        print(f"masante-server: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:  # a second Ctrl-C during shutdown
        sys.exit(130)
