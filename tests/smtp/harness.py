"""Servers for the SMTP tests: a whole masante-server in a thread of its own, driven by real clients.

The tests are plain functions using smtplib, swaks and imaplib as a user would;
the server runs on its own event loop in a background thread (as in
production, on the application's loop, with real sockets on 127.0.0.1 and TLS
from the session's test CA). ``ServerThread.call`` runs a coroutine on that
loop with the server's context, for setting up accounts and looking into the store.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import smtplib
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from crypto.tls import client_context
from mailserver.app import Server, running
from mailserver.bodies import read_body
from mailserver.config import Config
from mailserver.context import Context
from mailserver.store.models import Account
from tests import support

T = TypeVar("T")
CALL_TIMEOUT = 60


class ServerThread:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="smtp-test-server")

    def _main(self) -> None:
        async def serve() -> None:
            self._stop = asyncio.Event()
            try:
                async with running(self.config) as server:
                    self._server = server
                    self._ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                self._ready.set()
                raise

        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(serve())
        except BaseException:  # noqa: S110 - reported through self._error
            pass
        finally:
            loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the server did not start within 60 s")
        if self._error is not None:
            raise RuntimeError(f"the server did not start: {self._error!r}") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def server(self) -> Server:
        assert self._server is not None
        return self._server

    @property
    def ctx(self) -> Context:
        return self.server.ctx

    def port(self, name: str) -> int:
        return self.server.port(name)

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, timeout: float = CALL_TIMEOUT) -> T:
        """Run ``fn(ctx, *args)`` on the server's loop and return its result."""
        assert self._loop is not None
        fut: Future[T] = asyncio.run_coroutine_threadsafe(fn(self.ctx, *args), self._loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def worker(self) -> Any:
        from mailserver.smtp.queue import QueueWorker

        for s in self.server.services:
            if isinstance(s, QueueWorker):
                return s
        raise LookupError("no queue worker")


# --- databases ---------------------------------------------------------------------------------------------------


@dataclass
class Databases:
    """Fresh migrated databases for one test module (SQLite files, or PostgreSQL databases)."""

    kind: str
    tmp: Path
    template: Path | None
    created: list[str]

    def new(self) -> str:
        if self.kind == "sqlite":
            assert self.template is not None
            target = self.tmp / f"db-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.template, target)
            return f"sqlite+aiosqlite:///{target}"
        from tests.conftest import PG_ADMIN_DSN

        dsn = support.new_pg_database(PG_ADMIN_DSN, "masante_smtp")
        self.created.append(dsn)
        return support.sqlalchemy_pg_url(dsn)

    def drop_all(self) -> None:
        from tests.conftest import PG_ADMIN_DSN

        for dsn in self.created:
            support.drop_pg_database(PG_ADMIN_DSN, dsn)


def databases(request: pytest.FixtureRequest, tmp: Path) -> Iterator[Databases]:
    if request.param == "sqlite":
        yield Databases("sqlite", tmp, request.getfixturevalue("sqlite_template"), [])
        return
    request.getfixturevalue("pg_database")  # skips (or fails in CI) when PostgreSQL is not there
    dbs = Databases("postgresql", tmp, None, [])
    try:
        yield dbs
    finally:
        dbs.drop_all()


# --- clients -----------------------------------------------------------------------------------------------------


def tls_client(pki: support.TestPKI, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    return client_context(pki.ca_file, cert_file=cert, key_file=key)


def submission(
    server: ServerThread, pki: support.TestPKI, user: str | None = None, password: str = support.PASSWORD
) -> smtplib.SMTP:
    """A logged-in submission session on port 587-style STARTTLS."""
    s = smtplib.SMTP("127.0.0.1", server.port("submission"), timeout=30, local_hostname="client.test")
    s.starttls(context=tls_client(pki))
    s.ehlo()
    if user is not None:
        s.login(user, password)
    return s


def inbox(server: ServerThread, address: str, mailbox: str = "INBOX") -> list[bytes]:
    """The messages of ``address``'s ``mailbox``, decrypted from the store, in UID order."""

    async def read(ctx: Context) -> list[bytes]:
        async with ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(address)
            assert account is not None, address
            mb = await uow.mailboxes.get(account.id, mailbox)
            assert mb is not None
            from sqlalchemy import select

            from mailserver.store.models import Message

            rows = (
                (await uow.session.execute(select(Message).where(Message.mailbox_id == mb.id).order_by(Message.uid)))
                .scalars()
                .all()
            )
            return [await read_body(uow, ctx.keyring, account, m) for m in rows]

    return server.call(read)


async def account(ctx: Context, address: str) -> Account:
    async with ctx.uow(readonly=True) as uow:
        found = await uow.accounts.by_address(address)
    assert found is not None
    return found


def message(sender: str, rcpt: str, subject: str, body: str = "Bonjour.\n", **headers: str) -> bytes:
    """A message as a mail client sends it: CRLF line endings."""
    raw = support.make_message(sender, rcpt, subject, body, **headers)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def find(server: ServerThread, address: str, marker: str, mailbox: str = "INBOX") -> list[bytes]:
    """The messages of ``address`` containing ``marker``."""
    return [m for m in inbox(server, address, mailbox) if marker.encode() in m]


def require_tool(name: str) -> None:
    """Skip when a Debian tool is missing, except in CI (``CI=true``), where that is a failure."""
    if shutil.which(name) is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{name} is required in CI (apt-get install {name})")
        pytest.skip(f"{name} is not installed (apt-get install {name})")


def marker() -> str:
    return uuid.uuid4().hex
