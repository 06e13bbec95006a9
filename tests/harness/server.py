"""The one server runner and the one server fixture factory of the suite.

Invariants:
- ``ServerThread`` runs a whole server (``mailserver.app.running``) on its own
  event loop in a background thread, as in production: real sockets on
  127.0.0.1, TLS from the session's test CA. Blocking clients (smtplib,
  imaplib, swaks, mbsync) and asyncio clients (aioimaplib) talk to it alike.
- Its clock and its DNS are injected: the fixtures give it a ``FakeClock``
  (time moves only by ``advance``) and every server a ``MemoryResolver`` (no
  test asks public DNS); a ``ServerThread`` built by hand without a clock runs
  on the system clock, as the server does in production. A test never sleeps for time to pass: it advances
  the clock, then ``settle()``s, which waits (with a timeout) for the work that
  became due to be done.
- ``server_fixture(...)`` makes a module-scoped fixture of such a server on
  each database (``sqlite``, ``postgresql``) from config overrides and
  populate steps; the per-test fixtures built on it (``site`` for SMTP)
  ``settle()`` first, so no test starts while another's mail is in flight.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import shutil
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from mailserver.app import Server, running
from mailserver.clock import Clock, FakeClock, SystemClock
from mailserver.config import Config
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.flags import FlagCodec
from mailserver.resolver import DnsResolver, MemoryResolver, Resolver
from mailserver.store.models import Account
from tests import support
from tests.harness.messages import crlf

if TYPE_CHECKING:
    from mailserver.imap.service import ImapListener
    from mailserver.smtp.queue import QueueWorker

T = TypeVar("T")
#: seconds a test waits for the server to do something (start, answer a call, settle) before failing
CALL_TIMEOUT = 60.0
_counter = itertools.count(1)


class ServerThread:
    """A whole server in a thread; ``call`` runs a coroutine on its loop with its context."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        resolver: Resolver | None = None,
        name: str = "test-server",
    ) -> None:
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        if resolver is None:  # real DNS only where the test serves a zone of its own (``[dns] nameservers``)
            resolver = DnsResolver.for_config(config) if config.dns.nameservers else MemoryResolver()
        self.resolver: Resolver = resolver
        self.loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    # --- life ---------------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            self._error = exc
            self._ready.set()
        finally:
            leftovers = asyncio.all_tasks(self.loop)
            for task in leftovers:
                task.cancel()
            if leftovers:
                self.loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with running(self.config, clock=self.clock, resolver=self.resolver) as server:
            self._server = server
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(CALL_TIMEOUT):
            raise RuntimeError(f"the server did not start within {CALL_TIMEOUT} s")
        if self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def server(self) -> Server:
        assert self._server is not None, "the server is not running"
        return self._server

    @property
    def ctx(self) -> Context:
        return self.server.ctx

    def port(self, name: str) -> int:
        return self.server.port(name)

    # --- driving it ---------------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = CALL_TIMEOUT) -> T:
        """Run ``fn(ctx, *args)`` on the server's loop and return its result.

        A coroutine function of no parameter (``lambda: coro``) is called without the context.
        """
        takes_ctx = bool(args) or bool(inspect.signature(fn).parameters)

        async def go() -> T:
            return await (fn(self.ctx, *args) if takes_ctx else fn())

        fut: Future[T] = asyncio.run_coroutine_threadsafe(go(), self.loop)
        return fut.result(timeout)

    def worker(self) -> QueueWorker:
        from mailserver.smtp.queue import QueueWorker

        for s in self.server.services:
            if isinstance(s, QueueWorker):
                return s
        raise LookupError("no queue worker")

    def settle(self, timeout: float = CALL_TIMEOUT) -> None:
        """Wait until the queue has attempted everything due at the clock's present (nothing in flight)."""
        try:
            worker = self.worker()
        except LookupError:
            return
        self.call(lambda: worker.settle(), timeout=timeout)

    def advance(self, seconds: float) -> None:
        """Move the server's clock ``seconds`` forward, then let it do what became due."""
        if not isinstance(self.clock, FakeClock):
            raise TypeError("this server runs on the system clock; give it a FakeClock to move time")
        self.clock.advance(seconds)
        self.settle()

    def listeners(self) -> list[ImapListener]:
        from mailserver.imap.service import ImapListener

        return [s for s in self.server.services if isinstance(s, ImapListener)]

    def reset_throttle(self) -> None:
        """Forget failed logins and lockouts (``directory.limits``, in the store, shared by every door), so
        that one test's wrong passwords do not lock the next test out."""
        from directory.limits import LoginLimits

        self.call(lambda: LoginLimits(self.ctx).reset())  # one table for every door and process

    # --- data ---------------------------------------------------------------------------------------------

    def make_pro(self, prefix: str = "dr") -> Account:
        """A professional of its own (a fresh address) at ``support.PRO_DOMAIN``."""
        local = f"{prefix}.{next(_counter)}.{uuid.uuid4().hex[:6]}"
        return self.call(support.make_pro, local)

    def make_patient(self, ins: str) -> Account:
        return self.call(support.make_patient, ins)

    def deliver(self, account: Account, raw: bytes, mailbox: str | None = None, flags: tuple[str, ...] = ()) -> int:
        """Deliver ``raw`` straight into ``account``'s mailbox (as SMTP DATA would); its UID."""
        raw = crlf(raw)

        async def go(ctx: Context) -> int:
            async with ctx.uow() as uow:
                acct = await uow.accounts.get(account.id)
                assert acct is not None
                stored = FlagCodec(lambda: ctx.db.metadata_key, acct.id).encode(flags).split()  # keywords sealed
                result = await deliver(uow, ctx.keyring, raw, [acct], mailbox=mailbox, flags=stored)
                await uow.commit()
            return result.delivered[0].uid

        return self.call(go)

    def audit(self, action: str) -> list[Any]:
        """The audit entries of ``action``."""

        async def go(ctx: Context) -> list[Any]:
            from sqlalchemy import select

            from mailserver.store.models import AuditEntry

            async with ctx.uow(readonly=True) as uow:
                await uow.audit_log.caught_up()  # PostgreSQL: what the server committed and has not sealed yet
                rows = await uow.session.execute(select(AuditEntry).where(AuditEntry.action == action))
                return list(rows.scalars().all())

        return self.call(go)


# --- databases ---------------------------------------------------------------------------------------------------


@dataclass
class Databases:
    """Migrated databases for one test module: SQLite copies of the template, or PostgreSQL databases.

    On PostgreSQL the first ``new()`` of a module is the session's database emptied (``support.pg_reset``,
    cheap); a second one in the same module (two servers) is a database of its own, dropped at the end.
    """

    kind: str
    tmp: Path
    template: Path | None
    shared: str | None = None
    created: list[str] = field(default_factory=list)

    def new(self) -> str:
        if self.kind == "sqlite":
            assert self.template is not None
            target = self.tmp / f"db-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, target)
            return f"sqlite+aiosqlite:///{target}"
        if self.shared is not None:
            dsn, self.shared = self.shared, None
            asyncio.run(support.pg_reset(dsn))
            return support.sqlalchemy_pg_url(dsn)
        from tests.conftest import PG_ADMIN_DSN

        dsn = support.new_pg_database(PG_ADMIN_DSN, "masante_mod")
        self.created.append(dsn)
        return support.sqlalchemy_pg_url(dsn)

    def drop_all(self) -> None:
        from tests.conftest import PG_ADMIN_DSN

        for dsn in self.created:
            support.drop_pg_database(PG_ADMIN_DSN, dsn)


def databases(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Databases]:
    """The ``dbs`` fixture's body (``request.param`` is ``sqlite`` or ``postgresql``)."""
    if request.param == "sqlite":
        yield Databases("sqlite", tmp, request.getfixturevalue("sqlite_template"))
        return
    shared: str = request.getfixturevalue("pg_database")  # skips (or fails in CI) without PostgreSQL
    dbs = Databases("postgresql", tmp, None, shared)
    try:
        yield dbs
    finally:
        dbs.drop_all()


# --- the fixture factory -------------------------------------------------------------------------------------------

#: a populate step: runs in the test thread once the server is up (``server.call`` reaches its loop)
Populate = Callable[[ServerThread, pytest.FixtureRequest], None]


def merge(*layers: dict[str, dict[str, object]]) -> dict[str, dict[str, object]]:
    """Config sections merged key by key, later layers winning."""
    out: dict[str, dict[str, object]] = {}
    for layer in layers:
        for name, values in layer.items():
            out.setdefault(name, {}).update(values)
    return out


def start_server(
    tmp: Path,
    db_url: str,
    pki: support.TestPKI,
    *,
    sections: dict[str, dict[str, object]],
    clock: Clock | None = None,
    resolver: Resolver | None = None,
    config_on_disk: bool = False,
) -> ServerThread:
    """A started server on ``db_url`` with ``sections`` over the test configuration."""
    cfg = support.make_config(tmp, db_url, pki, **sections)
    if config_on_disk:  # for masante-admin, run against the live server's store
        cfg.path.write_text(cfg.to_toml())
    return ServerThread(cfg, clock=clock, resolver=resolver).start()


def server_fixture(
    *populate: Populate,
    name: str = "site_server",
    clock: Callable[[], Clock] = FakeClock,
    resolver: Callable[[], Resolver] = MemoryResolver,
    config_on_disk: bool = False,
    **sections: dict[str, object],
) -> Any:
    """A module-scoped fixture ``name``: a server on each database (``dbs``), configured with ``sections``
    over the test configuration, then set up by each ``populate`` step in turn; stopped after the module.

    ``clock`` and ``resolver`` make the server's clock (``FakeClock`` by default; ``SystemClock`` where a
    separate process such as ``masante-admin`` shares its notion of now) and its DNS.
    """

    def fixture(
        request: pytest.FixtureRequest,
        dbs: Databases,
        pki: support.TestPKI,
        tmp_path_factory: pytest.TempPathFactory,
    ) -> Iterator[ServerThread]:
        tmp = tmp_path_factory.mktemp(name)
        server = start_server(
            tmp,
            dbs.new(),
            pki,
            sections=dict(sections),
            clock=clock(),
            resolver=resolver(),
            config_on_disk=config_on_disk,
        )
        try:
            for step in populate:
                step(server, request)
            yield server
        finally:
            server.stop()

    return pytest.fixture(scope="module", name=name)(fixture)
