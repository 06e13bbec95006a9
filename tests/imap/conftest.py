"""IMAP test fixtures: one in-process server per test module and database, driven by real clients.

The server runs in its own thread with its own event loop (``mailserver.app.running``),
so that blocking clients (imaplib, mbsync) and asyncio clients (aioimaplib) can both
talk to it over real sockets and TLS. Each test gets fresh accounts on it.
"""

from __future__ import annotations

import asyncio
import imaplib
import itertools
import shutil
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mailserver.app import Server, running
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.imap.service import ImapListener
from mailserver.store.models import Account
from tests import support

T = TypeVar("T")
HOST = "127.0.0.1"
TIMEOUT = 30
_counter = itertools.count(1)


class ServerThread:
    """A whole server (``running(config)``) in a thread; ``call`` runs a coroutine on its loop."""

    def __init__(self, config: support.Config) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.server: Server | None = None
        self._thread = threading.Thread(target=self._run, name="imap-test-server", daemon=True)

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
        async with running(self.config) as server:
            self.server = server
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def ctx(self) -> Context:
        assert self.server is not None
        return self.server.ctx

    def port(self, name: str) -> int:
        assert self.server is not None
        return self.server.port(name)

    def call(self, fn: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        async def wrapper() -> T:
            return await fn()

        fut: Future[T] = asyncio.run_coroutine_threadsafe(wrapper(), self.loop)
        return fut.result(timeout)

    def listeners(self) -> list[ImapListener]:
        assert self.server is not None
        return [s for s in self.server.services if isinstance(s, ImapListener)]

    def reset_throttle(self) -> None:
        for listener in self.listeners():
            listener.cfg.authenticator.throttle._failures.clear()

    # --- data -----------------------------------------------------------------------------------

    def make_pro(self, prefix: str = "dr") -> Account:
        local = f"{prefix}.{next(_counter)}.{uuid.uuid4().hex[:6]}"
        return self.call(lambda: support.make_pro(self.ctx, local))

    def make_patient(self, ins: str) -> Account:
        return self.call(lambda: support.make_patient(self.ctx, ins))

    def deliver(self, account: Account, raw: bytes, mailbox: str | None = None, flags: tuple[str, ...] = ()) -> int:
        raw = crlf(raw)

        async def go() -> int:
            async with self.ctx.uow() as uow:
                acct = await uow.accounts.get(account.id)
                assert acct is not None
                result = await deliver(uow, self.ctx.keyring, raw, [acct], mailbox=mailbox, flags=flags)
                await uow.commit()
            return result.delivered[0].uid

        return self.call(go)

    def audit(self, action: str) -> list[Any]:
        async def go() -> list[Any]:
            from sqlalchemy import select

            from mailserver.store.models import AuditEntry

            async with self.ctx.uow(readonly=True) as uow:
                rows = await uow.session.execute(select(AuditEntry).where(AuditEntry.action == action))
                return list(rows.scalars().all())

        return self.call(go)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def imap_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path_factory.mktemp("imap-db") / "masante.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    dsn: str = request.getfixturevalue("pg_database")  # modules run one after the other: one database will do
    asyncio.run(support.pg_reset(dsn))
    return support.sqlalchemy_pg_url(dsn)


def server_config(url: str, tmp: Path, pki: support.TestPKI, **imap: object) -> support.Config:
    sections: dict[str, dict[str, object]] = {"ports": {"mx": -1, "submission": -1, "submissions": -1}}
    if imap:
        sections["imap"] = dict(imap)
    return support.make_config(tmp, url, pki, **sections)


@pytest.fixture(scope="module")
def imap_server(
    imap_db_url: str, tmp_path_factory: pytest.TempPathFactory, pki: support.TestPKI
) -> Iterator[ServerThread]:
    tmp = tmp_path_factory.mktemp("imap-server")
    config = server_config(imap_db_url, tmp, pki)

    async def seed() -> None:
        ctx = Context.open(config)
        try:
            await support.add_domains(ctx)
        finally:
            await ctx.close()

    asyncio.run(seed())
    srv = ServerThread(config).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def tls_client(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def imaps(srv: ServerThread, tls: ssl.SSLContext, user: Account | None = None) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    if user is not None:
        m.login(user.address, support.PASSWORD)
    return m


def crlf(raw: bytes) -> bytes:
    """Line ends as on the wire (SMTP and IMAP speak CRLF)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def message(sender: str, rcpt: str, subject: str, body: str, **headers: str) -> bytes:
    return crlf(support.make_message(sender, rcpt, subject, body, **headers))


def raw_command(m: imaplib.IMAP4, line: str | bytes) -> list[bytes]:
    """Send one command line as is, return every line up to and including its tagged response."""
    tag = m._new_tag()  # type: ignore[attr-defined]
    data = line.encode() if isinstance(line, str) else line
    m.send(tag + b" " + data + b"\r\n")
    out = []
    while True:
        resp = m.readline()
        out.append(resp.rstrip(b"\r\n"))
        if resp.startswith(tag + b" "):
            return out
        if m.state == "LOGOUT" or not resp:
            return out
