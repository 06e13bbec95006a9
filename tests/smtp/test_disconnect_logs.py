"""Every SMTP disconnection and every refusal leaves a JSON log line that says why, with ids only (issue 13).

Real clients on real sockets against the module's server: one that QUITs, one that just closes, one that
goes silent (idle timeout), one that trickles a line past its deadline, one that fails the STARTTLS
handshake, one that sends too many unknown commands, and a logged-in client whose RCPT is refused. The
server's log is captured through ``mailserver.logs.JsonFormatter``, as ``masante-server`` writes it: each
case finds its ``smtp.disconnect`` reason (one of ``engine.DISCONNECT_REASONS``) with the session id, the
refusal its code, enhanced code, stage and reason; and no line carries an address or the login name.
"""

from __future__ import annotations

import io
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailserver import logs
from mailserver.smtp import replies as R
from mailserver.smtp.engine import DISCONNECT_REASONS
from tests import support
from tests.smtp.conftest import PRO, PRO2, site_fixture
from tests.smtp.harness import ServerThread, marker, read_reply, submission, tls_client

IDLE = 3  # seconds of silence before the server hangs up (an int, as the configuration has it)
LINE_DEADLINE = 1.0
#: how long a test waits for a line the server logs once the client is done (a loaded machine)
WAIT = 20.0

#: the engine's timers run on the event loop's real time
site_server = site_fixture(smtp={"command_timeout": IDLE, "command_line_deadline": LINE_DEADLINE})


class Captured(logging.Handler):
    """The ``masante`` loggers' lines, formatted as the server writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logs.JsonFormatter())
        self.text = io.StringIO()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._changed:
            self.text.write(line + "\n")
            self._changed.notify_all()

    def lines(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(line) for line in self.text.getvalue().splitlines()]

    def raw(self) -> str:
        with self._lock:
            return self.text.getvalue()

    def wait_for(self, event: str, **fields: object) -> dict[str, Any]:
        """The first line of ``event`` with ``fields``, waiting (on the condition, not a sleep) until it comes."""
        deadline = time.monotonic() + WAIT
        with self._changed:
            while True:
                for line in (json.loads(x) for x in self.text.getvalue().splitlines()):
                    if line["event"] == event and all(line.get(k) == v for k, v in fields.items()):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {event} {fields} logged; got:\n{self.text.getvalue()}")
                self._changed.wait(left)


@pytest.fixture
def captured(site: ServerThread) -> Iterator[Captured]:
    handler = Captured()
    logger = logging.getLogger("masante")
    saved = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)
    # whatever the case, the log names no one: no address, no login name
    text = handler.raw()
    assert "@" not in text, text
    assert PRO.split("@")[0] not in text, text


def disconnect(captured: Captured, reason: str) -> dict[str, Any]:
    assert reason in DISCONNECT_REASONS
    line = captured.wait_for("smtp.disconnect", reason=reason)
    assert line.get("session"), line  # the session id ties it to the connection's other lines
    connects = [x for x in captured.lines() if x["event"] == "smtp.connect" and x.get("session") == line["session"]]
    assert connects, captured.raw()
    return line


def greeted(site: ServerThread) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", site.port("submission")), timeout=30)
    assert read_reply(sock).startswith(b"220 ")
    return sock


def test_quit_is_logged_as_quit(site: ServerThread, captured: Captured) -> None:
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30, local_hostname="client.test")
    assert s.ehlo()[0] == 250
    assert s.quit()[0] == 221
    disconnect(captured, "quit")
    assert not [x for x in captured.lines() if x["event"] == "smtp.disconnect" and x["reason"] != "quit"]


def test_a_client_that_just_closes_is_logged_as_client_closed(site: ServerThread, captured: Captured) -> None:
    sock = greeted(site)
    sock.sendall(b"EHLO client.test\r\n")
    assert read_reply(sock).startswith(b"250")
    sock.close()
    disconnect(captured, "client-closed")


def test_silence_is_logged_as_idle_timeout(site: ServerThread, captured: Captured) -> None:
    sock = greeted(site)
    sock.sendall(b"NOOP\r\n")
    assert read_reply(sock).startswith(b"250 ")
    sock.settimeout(IDLE + WAIT)
    assert sock.recv(100) == b""  # the server hangs up, after IDLE seconds of silence
    sock.close()
    disconnect(captured, "idle-timeout")


def test_a_line_past_its_deadline_is_logged_as_too_slow(site: ServerThread, captured: Captured) -> None:
    sock = greeted(site)
    sock.sendall(b"EHLO half-a-line")  # and never the CRLF: the line deadline comes before the idle timer
    sock.settimeout(LINE_DEADLINE + WAIT)
    said = read_reply(sock)
    assert said.startswith(b"421 4.4.2 "), said
    sock.close()
    line = disconnect(captured, "too-slow")
    assert captured.wait_for("smtp.too-slow", session=line["session"])


def test_a_failed_starttls_handshake_is_logged_as_tls_failed(site: ServerThread, captured: Captured) -> None:
    sock = greeted(site)
    sock.sendall(b"EHLO client.test\r\n")
    assert read_reply(sock).startswith(b"250")
    sock.sendall(b"STARTTLS\r\n")
    assert read_reply(sock).startswith(b"220 ")
    # a client that does not trust our CA aborts the handshake (alert unknown_ca)
    context = ssl.create_default_context()
    with pytest.raises(ssl.SSLError):
        context.wrap_socket(sock, server_hostname="localhost")
    sock.close()
    disconnect(captured, "tls-failed")


def test_a_handshake_of_garbage_is_logged_as_tls_failed(site: ServerThread, captured: Captured) -> None:
    sock = greeted(site)
    sock.sendall(b"EHLO client.test\r\n")
    assert read_reply(sock).startswith(b"250")
    sock.sendall(b"STARTTLS\r\n")
    assert read_reply(sock).startswith(b"220 ")
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not a ClientHello
    sock.settimeout(WAIT)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    sock.close()
    disconnect(captured, "tls-failed")


def test_too_many_unknown_commands_are_logged_as_too_many_errors(
    site: ServerThread, pki: support.TestPKI, captured: Captured
) -> None:
    plain = greeted(site)
    plain.sendall(b"STARTTLS\r\n")  # commands before TLS are refused with 530, not counted as unknown
    assert read_reply(plain).startswith(b"220 ")
    sock = tls_client(pki).wrap_socket(plain, server_hostname="localhost")
    said = b""
    for _ in range(10):
        sock.sendall(b"XYZZY\r\n")
        said = read_reply(sock)
        if not said.startswith(b"500"):
            break
    assert said.startswith(b"502 5.5.1 "), said
    sock.settimeout(WAIT)
    assert sock.recv(100) == b""
    sock.close()
    disconnect(captured, "too-many-errors")


def test_a_refused_rcpt_logs_its_codes_and_reason_but_not_the_address(
    site: ServerThread, pki: support.TestPKI, captured: Captured
) -> None:
    nobody = f"nobody-{marker()}@{support.PRO_DOMAIN}"
    s = submission(site, pki, PRO)
    assert s.mail(PRO)[0] == 250
    code, _ = s.rcpt(nobody)
    assert code == 550
    assert s.quit()[0] == 221
    refused = captured.wait_for("smtp.refused", stage="rcpt")
    assert refused["code"] == 550
    assert refused["enhanced"].startswith("5.")
    assert refused["reason"], refused
    assert refused.get("session"), refused
    assert disconnect(captured, "quit")["session"] == refused["session"]
    assert nobody.split("@")[0] not in captured.raw()


def test_a_refusal_of_the_engine_logs_its_codes_and_reason(
    site: ServerThread, pki: support.TestPKI, captured: Captured
) -> None:
    s = submission(site, pki, PRO)
    assert s.mail(PRO)[0] == 250
    assert s.rcpt(PRO2)[0] == 250
    assert s.docmd("DATA")[0] == 354
    s.send(b"Subject: x\r\n\r\none\nbare line feed\r\n.\r\n")  # RFC 5321 §2.3.8: refused (SMTP smuggling)
    code, _ = s.getreply()
    assert code == 554
    assert s.quit()[0] == 221
    refused = captured.wait_for("smtp.refused", stage="data")
    assert (refused["code"], refused["enhanced"], refused["reason"]) == (554, R.BARE_LINEFEED.enhanced, "bare-linefeed")
    assert disconnect(captured, "quit")["session"] == refused["session"]


def test_a_failed_implicit_tls_handshake_on_465_is_logged(site: ServerThread, captured: Captured) -> None:
    """Port 465 (submissions) starts TLS at once: a client that speaks plain SMTP there, or does not trust
    our CA, fails the handshake, and that is logged with the door and the error's type (issue 13 point 9)."""
    sock = socket.create_connection(("127.0.0.1", site.port("submissions")), timeout=WAIT)
    sock.sendall(b"EHLO client.test\r\n")  # not a ClientHello
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    sock.close()
    line = captured.wait_for("smtp.tls-failed", door="submissions")
    assert line["error"] and "EHLO" not in captured.raw()
    captured.wait_for("smtp.disconnect", reason="tls-failed", door="submissions")


def test_implicit_tls_on_465_still_serves_a_session(site: ServerThread) -> None:
    context = ssl.create_default_context(cafile=str(site.config.resolve(site.config.tls.ca)))
    with socket.create_connection(("127.0.0.1", site.port("submissions")), timeout=WAIT) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert read_reply(tls).startswith(b"220 ")
            tls.sendall(b"EHLO client.test\r\n")
            reply = read_reply(tls)
            assert reply.startswith(b"250") and b"AUTH" in reply
