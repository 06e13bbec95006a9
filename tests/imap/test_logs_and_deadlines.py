"""Why a client left is in the log (issue 11 point 5); a trickled command line ends (issue 14 point 2).

Real sockets, real TLS, imaplib: a failed TLS handshake is logged as
``imap.tls-failed`` with OpenSSL's short reason, a tagged BAD as ``imap.bad``
(command name only), a tagged NO as ``imap.no`` (command name and code), and
each connection ends with one ``imap.disconnect`` and its reason. None of these
lines carries the mailbox name, the login name or the password. With
``[imap] line_deadline = 0.5`` a client that sends a command line one byte at a
time is answered ``BYE Too slow`` and closed (``too-slow``) although it is never
silent for long, while an authenticated APPEND's literal may take longer.
"""

from __future__ import annotations

import imaplib
import json
import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mailserver import logs
from mailserver.store.models import Account
from tests import support
from tests.harness.server import ServerThread, server_fixture
from tests.imap.conftest import HOST, TIMEOUT, domains, imaps, raw_command

DEADLINE = 0.5
TRICKLE_GAP = 0.1  # a byte every 0.1 s: never silent for long, always too slow in total

#: this module's server: a half-second command line deadline
imap_server = server_fixture(
    domains,
    name="imap_server",
    ports={"mx": -1, "submission": -1, "submissions": -1},
    imap={"line_deadline": DEADLINE},
)

Line = dict[str, Any]

#: a TLS record of type handshake whose message is no ClientHello (a cleartext line would read as a
#: record header announcing kilobytes, and OpenSSL would wait for them until the handshake timeout)
NOT_A_CLIENT_HELLO = b"\x16\x03\x01\x00\x10" + b"not-tls at-all!!"


class LogCapture(logging.Handler):
    """The JSON lines the server's IMAP logger writes (its thread), parsed."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.JsonFormatter())
        self.raw: list[str] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._lock:
            self.raw.append(line)

    def lines(self) -> list[Line]:
        with self._lock:
            return [json.loads(x) for x in self.raw]

    def wait_for(self, match: Callable[[Line], bool], timeout: float = TIMEOUT) -> Line:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if match(line):
                    return line
            time.sleep(0.02)
        pytest.fail(f"no such log line; got {self.lines()}")


@pytest.fixture
def captured(imap_server: ServerThread) -> Iterator[LogCapture]:
    logger = logging.getLogger("masante.imap")
    handler, level = LogCapture(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        imap_server.reset_throttle()


def event(name: str, **fields: Any) -> Callable[[Line], bool]:
    return lambda line: line["event"] == name and all(line.get(k) == v for k, v in fields.items())


def session_of(capture: LogCapture, match: Callable[[Line], bool]) -> list[Line]:
    """Every line of the session that wrote the first line ``match`` accepts."""
    sid = capture.wait_for(match)["session"]
    return [x for x in capture.lines() if x.get("session") == sid]


@pytest.fixture(scope="module")
def tls_client(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


@pytest.fixture
def user(imap_server: ServerThread) -> Account:
    return imap_server.make_pro()


def greeted(srv: ServerThread) -> socket.socket:
    """A plain IMAP (STARTTLS port) connection, past the greeting."""
    sock = socket.create_connection((HOST, srv.port("imap")), timeout=TIMEOUT)
    assert sock.recv(4096).startswith(b"* OK")
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(4096):
        out += chunk
    return out


# --- issue 11 point 5: why a client left ------------------------------------------------------------------


def test_a_failed_imaps_handshake_is_logged_with_its_reason(imap_server: ServerThread, captured: LogCapture) -> None:
    with socket.create_connection((HOST, imap_server.port("imaps")), timeout=TIMEOUT) as sock:
        sock.sendall(NOT_A_CLIENT_HELLO)
        assert read_until_closed(sock) == b""
    failed = captured.wait_for(event("imap.tls-failed", endpoint="imaps"))
    assert failed["reason"] and failed["reason"].isupper()  # OpenSSL's short name, e.g. WRONG_VERSION_NUMBER
    captured.wait_for(event("imap.disconnect", reason="tls-failed"))
    assert "not-tls" not in "".join(captured.raw)


def test_a_failed_starttls_handshake_is_logged_with_its_reason(imap_server: ServerThread, captured: LogCapture) -> None:
    with greeted(imap_server) as sock:
        sock.sendall(b"a1 STARTTLS\r\n")
        assert sock.recv(4096).startswith(b"a1 OK")
        sock.sendall(NOT_A_CLIENT_HELLO)
        assert read_until_closed(sock) == b""
    sid = captured.wait_for(event("imap.tls-failed", endpoint="starttls"))["session"]
    # the server logs the disconnect after the socket is closed: waited for, not assumed written by now
    captured.wait_for(event("imap.disconnect", session=sid))
    lines = [x for x in captured.lines() if x.get("session") == sid]
    failed = [x for x in lines if x["event"] == "imap.tls-failed"]
    assert len(failed) == 1 and failed[0]["reason"].isupper()
    assert [x["reason"] for x in lines if x["event"] == "imap.disconnect"] == ["tls-failed"]


def test_a_tls_client_refused_by_the_profile_is_logged(imap_server: ServerThread, captured: LogCapture) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.set_ciphers("AES128-SHA256")  # not an ECDHE suite: the MSSanté profile has no cipher in common
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection((HOST, imap_server.port("imaps")), timeout=TIMEOUT) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname=HOST)
    failed = captured.wait_for(event("imap.tls-failed", endpoint="imaps"))
    assert failed["reason"] == "NO_SHARED_CIPHER"


def test_bad_and_no_are_logged_by_command_name_and_code_only(
    imap_server: ServerThread, captured: LogCapture, user: Account, tls_client: ssl.SSLContext
) -> None:
    secret = "Diagnosis-" + uuid.uuid4().hex
    m = imaps(imap_server, tls_client, user)
    assert raw_command(m, f'SELECT "{secret}"')[-1].split()[1] == b"NO"
    assert raw_command(m, "FETCH 1 (FLAGS)")[-1].split()[1] == b"BAD"  # no mailbox selected
    assert raw_command(m, f"FROB {secret}")[-1].split()[1] == b"BAD"  # not a command
    m.logout()
    lines = session_of(captured, event("imap.disconnect", reason="logout"))
    got = [(x["event"], x.get("command"), x.get("code")) for x in lines if x["event"] in ("imap.bad", "imap.no")]
    assert got == [("imap.no", "SELECT", "NONEXISTENT"), ("imap.bad", "FETCH", None), ("imap.bad", "unparsed", None)]
    text = "".join(captured.raw)
    assert secret not in text and user.address not in text and support.PASSWORD not in text


def test_a_failed_login_is_a_logged_no(
    imap_server: ServerThread, captured: LogCapture, tls_client: ssl.SSLContext
) -> None:
    m = imaps(imap_server, tls_client)
    with pytest.raises(imaplib.IMAP4.error):
        m.login("nobody@hopital.demo.masante.fr", "wrong-password")
    m.logout()
    lines = session_of(captured, event("imap.no", command="LOGIN"))
    assert [x["code"] for x in lines if x["event"] == "imap.no"] == ["AUTHENTICATIONFAILED"]
    assert "nobody" not in "".join(captured.raw)


def test_too_many_bad_commands_end_with_their_reason(imap_server: ServerThread, captured: LogCapture) -> None:
    limit = imap_server.config.imap.bad_command_limit
    with greeted(imap_server) as sock:
        sock.sendall(b"".join(b"t%d FROB\r\n" % i for i in range(limit)))
        assert b"* BYE Too many invalid commands" in read_until_closed(sock)
    lines = session_of(captured, event("imap.disconnect", reason="too-many-bad"))
    assert sum(x["event"] == "imap.bad" for x in lines) == limit


def test_a_client_that_closes_is_logged_as_client_closed(imap_server: ServerThread, captured: LogCapture) -> None:
    with greeted(imap_server) as sock:
        sock.sendall(b"a1 NOOP\r\n")
        assert sock.recv(4096).startswith(b"a1 OK")
    captured.wait_for(event("imap.disconnect", reason="client-closed"))


# --- issue 14 point 2: an absolute deadline for a command line ----------------------------------------------


def test_a_trickled_command_line_is_cut_at_the_deadline(imap_server: ServerThread, captured: LogCapture) -> None:
    line = b"a1 LOGIN " + b"x" * 200 + b"\r\n"  # 200 bytes at 10 a second would take 20 s
    with greeted(imap_server) as sock:
        started = time.monotonic()
        reply = b""
        for byte in line:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            sock.settimeout(TRICKLE_GAP)
            try:
                reply += sock.recv(4096)
            except TimeoutError:
                continue
            if reply:
                break
        sock.settimeout(TIMEOUT)
        reply += read_until_closed(sock)
        elapsed = time.monotonic() - started
    assert reply == b"* BYE Too slow: a command line must arrive within 0.5 seconds\r\n"
    assert DEADLINE <= elapsed < 5
    captured.wait_for(event("imap.disconnect", reason="too-slow"))


def test_a_client_still_sending_when_cut_gets_the_goodbye_and_a_clean_end(imap_server: ServerThread) -> None:
    """Closing a socket with input unread sends a reset, which can destroy the BYE before the client reads it
    (the trickle test above met it). The server sends the end of the stream, drops what still comes, then closes."""
    for _ in range(3):
        with greeted(imap_server) as sock:
            sock.sendall(b"a1 NOOP")  # a line begun, never ended
            assert select.select([sock], [], [], TIMEOUT)[0]  # the BYE is here, unread
            sock.sendall(b"x" * 1000)  # the client, not listening, goes on
            assert read_until_closed(sock) == (
                b"* BYE Too slow: a command line must arrive within 0.5 seconds\r\n"
            )  # and then the end of the stream, not a reset


def test_the_deadline_counts_from_the_first_byte_not_from_the_last_answer(imap_server: ServerThread) -> None:
    with greeted(imap_server) as sock:
        sock.sendall(b"a1 NOOP\r\n")
        assert sock.recv(4096).startswith(b"a1 OK")
        time.sleep(DEADLINE * 2)  # silence between commands is the idle timeout's, not the deadline's
        sock.sendall(b"a2 NOOP\r\n")
        assert sock.recv(4096).startswith(b"a2 OK")


def test_an_authenticated_append_literal_is_exempt(
    imap_server: ServerThread, user: Account, tls_client: ssl.SSLContext
) -> None:
    body = b"Subject: slow\r\n\r\n" + b"y" * 20 + b"\r\n"
    m = imaps(imap_server, tls_client, user)
    sock = m.socket()
    m.send(b"a1 APPEND INBOX {%d}\r\n" % len(body))
    assert m.readline().startswith(b"+")
    for i in range(0, len(body), 4):  # about 1 s in all: twice the deadline
        sock.sendall(body[i : i + 4])
        time.sleep(TRICKLE_GAP)
    m.send(b"\r\n")
    assert m.readline().startswith(b"a1 OK")
    m.logout()
