"""Sessions that agree with each other, IDLE, and the named bounds, with aioimaplib and imaplib.

- Two sessions on one mailbox see each other's EXPUNGE and flag changes.
- An IDLE session is woken at once by a delivery, a flag change or an expunge;
  on PostgreSQL also by a delivery made by a second process.
- MAX_LINE, MAX_LITERAL, the nesting depth, BAD_COMMAND_LIMIT and the idle
  timeouts are each crossed once.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Iterator

import aioimaplib
import pytest

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, imaps, message, raw_command


@contextlib.asynccontextmanager
async def aio(srv: ServerThread, tls: ssl.SSLContext, user: Account) -> AsyncIterator[aioimaplib.IMAP4_SSL]:
    client = aioimaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    await client.wait_hello_from_server()
    resp = await client.login(user.address, support.PASSWORD)
    assert resp.result == "OK", resp
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            await client.logout()
        # aioimaplib leaves the hang-up after LOGOUT to the server; the test's loop may end before it
        # happens, leaving a socket for the garbage collector: close it ourselves
        transport = client.protocol.transport if client.protocol else None
        if transport is not None:
            transport.abort()
            for _ in range(3):
                await asyncio.sleep(0)


async def pushed_until(client: aioimaplib.IMAP4_SSL, wanted: bytes, within: float = 15) -> list[bytes]:
    """Server pushes during IDLE until one holds ``wanted``."""
    seen: list[bytes] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        push = await client.wait_server_push(timeout=max(0.1, deadline - loop.time()))
        lines = push if isinstance(push, list) else [push]
        seen += [x if isinstance(x, bytes) else str(x).encode() for x in lines]
        if any(wanted in x for x in seen):
            return seen


# --- aioimaplib as a client ----------------------------------------------------------------------------


async def test_aioimaplib_session(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    async with aio(srv, tls_client, user) as client:
        assert client.has_capability("IDLE") and client.has_capability("UIDPLUS")
        resp = await client.append(message(user.address, user.address, "via aioimaplib", "hello\n"), mailbox="INBOX")
        assert resp.result == "OK" and b"APPENDUID" in resp.lines[-1]
        resp = await client.select("INBOX")
        assert resp.result == "OK" and b"1 EXISTS" in resp.lines
        resp = await client.uid("fetch", "1:*", "(FLAGS BODY.PEEK[TEXT])")
        assert resp.result == "OK" and any(b"hello" in x for x in resp.lines if isinstance(x, bytes | bytearray))
        resp = await client.uid_search("SUBJECT", "aioimaplib")
        assert resp.result == "OK" and resp.lines[0] == b"1"
        resp = await client.uid("store", "1", "+FLAGS", "(\\Flagged)")
        assert resp.result == "OK" and b"\\Flagged" in resp.lines[0]
        resp = await client.uid("copy", "1", "Sent")
        assert resp.result == "OK" and b"COPYUID" in resp.lines[-1]
        resp = await client.status("Sent", "(MESSAGES UNSEEN)")
        assert resp.lines[0] == b'"Sent" (MESSAGES 1 UNSEEN 1)'
        resp = await client.list('""', "*")
        assert resp.result == "OK" and any(b"\\Junk" in x for x in resp.lines)
        resp = await client.namespace()
        assert resp.result == "OK"
        resp = await client.select("Nowhere")
        assert resp.result == "NO" and b"NONEXISTENT" in resp.lines[-1]


# --- two sessions ------------------------------------------------------------------------------------------


def test_two_sessions_see_each_others_flags_expunges_and_new_mail(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    for i in range(3):
        srv.deliver(user, message("a@b.test", user.address, f"m{i}", "x"))
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    a.select("INBOX")
    b.select("INBOX")
    a.store("1", "+FLAGS", "(\\Seen)")
    assert raw_command(b, "NOOP")[:-1] == [b"* 1 FETCH (UID 1 FLAGS (\\Seen))"]
    assert raw_command(b, "NOOP")[:-1] == []  # said once
    a.store("2", "+FLAGS", "(\\Deleted)")
    a.expunge()
    # during FETCH, STORE and SEARCH an EXPUNGE would shift numbers under the client: it waits (RFC 3501 §7.4.1)
    lines = raw_command(b, "FETCH 3 (UID)")
    assert lines[:-1] == [b"* 3 FETCH (UID 3)"]
    assert raw_command(b, "SEARCH ALL")[0] == b"* SEARCH 1 2 3"
    assert raw_command(b, "NOOP")[:-1] == [b"* 2 EXPUNGE"]
    assert raw_command(b, "SEARCH ALL")[0] == b"* SEARCH 1 2"
    # new mail: EXISTS for both, \Recent for only one of them
    srv.deliver(user, message("a@b.test", user.address, "new", "x"))
    la, lb = raw_command(a, "NOOP"), raw_command(b, "NOOP")
    assert b"* 3 EXISTS" in la and b"* 3 EXISTS" in lb
    recents = [x for x in la + lb if x.endswith(b"RECENT")]
    assert sorted(recents) == [b"* 0 RECENT", b"* 3 RECENT"]  # a: 1, 3 and the new one; b: none
    # UID commands may carry EXPUNGE at once
    a.store("1", "+FLAGS", "(\\Deleted)")
    a.expunge()
    lines = raw_command(b, "UID FETCH 1:* (FLAGS)")
    assert b"* 1 EXPUNGE" in lines
    a.logout()
    b.logout()


def test_a_session_whose_mailbox_is_deleted_is_told(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    a.create("Temp")
    b.select("Temp")
    a.delete("Temp")
    lines = raw_command(b, "NOOP")
    assert lines[0].startswith(b"* BYE") and b"deleted" in lines[0]
    b.shutdown()
    a.logout()


# --- IDLE ------------------------------------------------------------------------------------------------


async def test_idle_is_woken_by_delivery_flags_and_expunge(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    srv.deliver(user, message("a@b.test", user.address, "first", "x"))
    async with aio(srv, tls_client, user) as client:
        await client.select("INBOX")
        idle = await client.idle_start(timeout=30)
        await asyncio.to_thread(srv.deliver, user, message("a@b.test", user.address, "second", "y"))
        assert b"2 EXISTS" in b" ".join(await pushed_until(client, b"EXISTS"))
        other = await asyncio.to_thread(imaps, srv, tls_client, user)
        await asyncio.to_thread(other.select, "INBOX")
        await asyncio.to_thread(other.store, "1", "+FLAGS", "(\\Deleted \\Seen)")
        got = b" ".join(await pushed_until(client, b"FETCH"))
        assert b"1 FETCH (UID 1 FLAGS (\\Deleted \\Recent \\Seen))" in got
        await asyncio.to_thread(other.expunge)
        assert b"1 EXPUNGE" in b" ".join(await pushed_until(client, b"EXPUNGE"))
        client.idle_done()
        resp = await asyncio.wait_for(idle, TIMEOUT)
        assert resp.result == "OK"
        resp = await client.search("ALL")
        assert resp.lines[0] == b"1"
        await asyncio.to_thread(other.logout)


async def test_idle_is_woken_by_a_delivery_from_another_process(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    async with aio(srv, tls_client, user) as client:
        await client.select("INBOX")
        idle = await client.idle_start(timeout=60)
        url = srv.config.database.url
        kek = srv.ctx.keyring.current.to_text().strip()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.imap.deliver_process",
            url,
            kek,
            user.address,
            "cross-process",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=support.audit_env(srv.config),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.strip() == b"1"
        assert b"1 EXISTS" in b" ".join(await pushed_until(client, b"EXISTS", within=20))
        client.idle_done()
        assert (await asyncio.wait_for(idle, TIMEOUT)).result == "OK"
        resp = await client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert any(b"cross-process" in x for x in resp.lines if isinstance(x, bytes | bytearray))


async def test_idle_without_a_selected_mailbox_and_bad_continuation(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    c = await asyncio.to_thread(imaps, srv, tls_client, user)
    c.send(b"i1 IDLE\r\n")
    assert c.readline().startswith(b"+ ")
    c.send(b"DONE\r\n")
    assert c.readline() == b"i1 OK IDLE terminated\r\n"
    c.send(b"i2 IDLE\r\n")
    assert c.readline().startswith(b"+ ")
    c.send(b"NOT-DONE\r\n")
    assert c.readline() == b"i2 BAD IDLE: Expected DONE to end IDLE\r\n"
    c.logout()


# --- bounds ------------------------------------------------------------------------------------------------


@pytest.fixture
def bounds(srv: ServerThread) -> Iterator[ServerThread]:
    """Lets a test lower the running server's bounds; restores them afterwards."""
    saved = [(lst, dict(vars(lst.cfg))) for lst in srv.listeners()]
    yield srv
    for lst, values in saved:
        vars(lst.cfg).update(values)


def set_bounds(srv: ServerThread, **values: float) -> None:
    for lst in srv.listeners():
        for k, v in values.items():
            setattr(lst.cfg, k, v)


def tls_socket(srv: ServerThread, tls: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection((HOST, srv.port("imaps")), timeout=TIMEOUT)
    s = tls.wrap_socket(sock, server_hostname="localhost")
    assert s.recv(4096).startswith(b"* OK [CAPABILITY")
    return s


def read_all(s: ssl.SSLSocket) -> bytes:
    """Everything until the server closes the connection (then closed here too)."""
    out = b""
    with s:
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionError, ssl.SSLError):
                return out
            if not chunk:
                return out
            out += chunk


def test_bad_command_limit_ends_with_bye(bounds: ServerThread, tls_client: ssl.SSLContext) -> None:
    set_bounds(bounds, bad_command_limit=3)
    s = tls_socket(bounds, tls_client)
    s.sendall(b"a1 FROB\r\na2 FETCH\r\na3 NOOP x\r\na4 NOOP\r\n")
    out = read_all(s)
    assert out.count(b" BAD ") == 3
    assert out.endswith(b"* BYE Too many invalid commands\r\n")
    assert b"a4" not in out


def test_max_line_is_answered_bad_and_the_session_goes_on(bounds: ServerThread, tls_client: ssl.SSLContext) -> None:
    set_bounds(bounds, max_line=1000)
    c = imaps(bounds, tls_client)
    lines = raw_command(c, b"NOOP " + b"x" * 5000)
    assert lines[-1].endswith(b"BAD Line too long (the limit is 1000 bytes)")
    assert raw_command(c, "NOOP")[-1].endswith(b"OK NOOP completed")
    c.logout()


def test_max_literal_synchronising_is_toobig_and_non_synchronising_ends_the_session(
    bounds: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    set_bounds(bounds, max_literal=1000)
    c = imaps(bounds, tls_client, user)
    c.send(b"t1 APPEND INBOX {5000}\r\n")
    assert c.readline() == b"t1 NO [TOOBIG] Literal too big (the limit is 1000 bytes)\r\n"
    c.send(b"t2 APPEND INBOX {10}\r\n")
    assert c.readline().startswith(b"+ ")
    c.send(b"Subject: x\r\nt3 NOOP\r\n")
    assert c.readline().startswith(b"t2 OK [APPENDUID")
    assert c.readline() == b"t3 OK NOOP completed\r\n"
    c.logout()
    s = tls_socket(bounds, tls_client)
    s.sendall(b"a1 LOGIN {5000+}\r\n" + b"x" * 5000)
    assert read_all(s).startswith(b"* BYE [TOOBIG] Literal too big")


def test_nesting_depth_bound(bounds: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    set_bounds(bounds, max_depth=5)
    c = imaps(bounds, tls_client, user)
    c.select("INBOX")
    assert raw_command(c, "SEARCH ((((ALL))))")[-1].endswith(b"OK SEARCH completed")
    assert b"BAD Too deeply nested (the limit is 5)" in raw_command(c, "SEARCH ((((((ALL))))))")[-1]
    c.logout()


def test_idle_timeouts(bounds: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    set_bounds(bounds, login_timeout=1, idle_timeout=2)
    s = tls_socket(bounds, tls_client)
    assert read_all(s) == b"* BYE Autologout: idle for too long\r\n"
    c = imaps(bounds, tls_client, user)  # logged in: the longer timeout, IDLE included
    c.send(b"i1 IDLE\r\n")
    assert c.readline().startswith(b"+ ")
    c.send(b"DONE\r\n")
    assert c.readline() == b"i1 OK IDLE terminated\r\n"
    c.send(b"i2 IDLE\r\n")  # a client restarts IDLE before the timeout; one that does not is logged out
    assert c.readline().startswith(b"+ ")
    assert c.readline() == b"* BYE Autologout: idle for too long\r\n"
    c.shutdown()


def test_plain_connection_without_tls_cannot_see_mail(srv: ServerThread, user: Account) -> None:
    c = imaplib.IMAP4(HOST, srv.port("imap"), timeout=TIMEOUT)
    assert raw_command(c, f'LOGIN {user.address} "{support.PASSWORD}"')[-1].endswith(
        b"NO [PRIVACYREQUIRED] Log in only over TLS: use STARTTLS first"
    )
    assert raw_command(c, 'LIST "" *')[-1].endswith(b"BAD LIST: Log in first")
    c.logout()
