"""Clients and store peeks for the SMTP tests; the server itself is ``tests.harness.ServerThread``.

The tests are plain functions using smtplib, swaks and imaplib as a user would,
against a whole server on its own loop in a background thread
(``tests.harness.server``). ``ServerThread.call`` runs a coroutine on that loop
with the server's context, for setting up accounts and looking into the store.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from crypto.tls import client_context
from mailserver.bodies import read_body
from mailserver.context import Context
from mailserver.smtp.gate import LargeMessageGate
from mailserver.smtp.service import SmtpListener
from mailserver.store.models import Account
from tests import support
from tests.harness.messages import message
from tests.harness.server import Databases, ServerThread, databases
from tests.smtp.conftest import PRO, PRO2

__all__ = [
    "Databases",
    "ServerThread",
    "account",
    "copies",
    "databases",
    "find",
    "holding_the_gate",
    "inbox",
    "listener",
    "marker",
    "message",
    "mx",
    "read_reply",
    "require_tool",
    "send",
    "submission",
    "text",
    "tls_client",
]

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


def send(server: ServerThread, pki: support.TestPKI, raw: bytes) -> dict[str, tuple[int, bytes]]:
    """``raw`` submitted by the professional ``PRO`` to ``PRO2`` in a session of its own: the refused recipients."""
    s = submission(server, pki, PRO)
    try:
        return s.sendmail(PRO, [PRO2], raw)
    finally:
        s.quit()


def mx(server: ServerThread, pki: support.TestPKI, cert: tuple[Path, Path] | None) -> smtplib.SMTP:
    """An operator's session on the MX port: STARTTLS with the client certificate ``cert`` (None: none)."""
    s = smtplib.SMTP("127.0.0.1", server.port("mx"), timeout=30, local_hostname="mx.peer.test")
    s.starttls(context=tls_client(pki, *cert) if cert else tls_client(pki))
    s.ehlo()
    return s


def text(reply: tuple[int, bytes]) -> tuple[int, str]:
    """An smtplib reply with its text decoded."""
    return reply[0], reply[1].decode()


def read_reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Read from a raw socket up to the end of a reply line (or until the server closes)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


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


def find(server: ServerThread, address: str, marker: str, mailbox: str = "INBOX") -> list[bytes]:
    """The messages of ``address`` containing ``marker``."""
    return [m for m in inbox(server, address, mailbox) if marker.encode() in m]


def copies(server: ServerThread, marker: str) -> int:
    """How many copies of the messages holding ``marker`` the store keeps: in any mailbox, or queued.

    A test's own messages carry its marker: counting them, rather than everything stored, keeps the
    assertion true whatever the module's other tests left in the store.
    """
    needle = marker.encode()

    async def count(ctx: Context) -> int:
        from mailserver.smtp import spool

        found = 0
        async with ctx.uow(readonly=True) as uow:
            found += sum(needle in spool.open_body(ctx.keyring, q) for q in await uow.queue.list())
            for a in await uow.accounts.list():
                if a.key_destroyed_at is not None:
                    continue  # crypto-shredded: nothing of it can be read, nor delivered to it
                for mb in await uow.mailboxes.list(a.id):
                    for m in await uow.messages.list(mb.id):
                        found += needle in await read_body(uow, ctx.keyring, a, m)
        return found

    return server.call(count)


def require_tool(name: str) -> None:
    """Skip when a Debian tool is missing, except in CI (``CI=true``), where that is a failure."""
    support.tool(name)


def marker() -> str:
    return uuid.uuid4().hex


def listener(server: ServerThread, door: str = "submission") -> SmtpListener:
    """The server's SMTP listener of ``door``."""
    return next(s for s in server.server.services if isinstance(s, SmtpListener) and s.name == door)


@contextlib.contextmanager
def holding_the_gate(server: ServerThread) -> Iterator[tuple[LargeMessageGate, Callable[[], None]]]:
    """The submission door's large-message gate with its only slot held by the test until it calls
    ``release()`` (or leaves the block): a large message waits at the gate, where the test looks at it."""
    gate = listener(server).rt.gate

    async def take() -> None:
        assert await gate.enter()

    async def give() -> None:
        gate.leave()

    server.call(take)
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            server.call(give)

    try:
        yield gate, release
    finally:
        release()
