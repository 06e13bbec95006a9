"""IMAP test fixtures: one server per test module and database (``imap_server``), driven by real clients.

The server is ``tests.harness.ServerThread`` (its own thread and event loop), so
that blocking clients (imaplib, mbsync) and asyncio clients (aioimaplib) can
both talk to it over real sockets and TLS. Each test makes fresh accounts on it.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator

import pytest

from mailserver.store.models import Account
from tests import support
from tests.harness.messages import crlf, message
from tests.harness.server import ServerThread, server_fixture

__all__ = ["HOST", "TIMEOUT", "ServerThread", "crlf", "imaps", "message", "raw_command"]

HOST = "127.0.0.1"
TIMEOUT = 30


def domains(server: ServerThread, request: pytest.FixtureRequest) -> None:
    """The IMAP site: the professional and patient domains; each test makes its own accounts."""
    server.call(support.add_domains)


#: one IMAP server per module and database: IMAP and IMAPS only
imap_server = server_fixture(domains, name="imap_server", ports={"mx": -1, "submission": -1, "submissions": -1})


@pytest.fixture
def srv(imap_server: ServerThread) -> Iterator[ServerThread]:
    """The module's IMAP server; failed logins from 127.0.0.1 must not slow the next test down."""
    yield imap_server
    imap_server.reset_throttle()


@pytest.fixture
def user(srv: ServerThread) -> Account:
    """A professional of the module's server, new for each test."""
    return srv.make_pro()


@pytest.fixture(scope="session")
def tls_client(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def imaps(srv: ServerThread, tls: ssl.SSLContext, user: Account | None = None) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    if user is not None:
        m.login(user.address, support.PASSWORD)
    return m


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


def logged_in(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> Iterator[imaplib.IMAP4_SSL]:
    """A client logged in over IMAPS as ``user`` for a fixture to yield, logged out after (if it still can be)."""
    client = imaps(srv, tls_client, user)
    yield client
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


@pytest.fixture
def m(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> Iterator[imaplib.IMAP4_SSL]:
    """A client logged in over IMAPS as ``user``, logged out after the test (if it still can be)."""
    yield from logged_in(srv, tls_client, user)
