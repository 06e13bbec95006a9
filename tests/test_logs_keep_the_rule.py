"""What the network sends never reaches a log, the audit log or a terminal raw; DEBUG logs no data.

A real ``masante-server`` process at ``[log] level = "DEBUG"``, driven by real
clients: a login name holding CR LF, NUL and ``ESC [2J`` (an IMAP literal, and
SMTP AUTH PLAIN), a real IMAP login, a real SMTP submission to a patient. Its
JSON log on standard error carries no address, INS, password, subject or body,
no SQL, and no raw control character; ``masante-admin audit tail`` shows the
hostile names escaped. Both databases.
"""

from __future__ import annotations

import base64
import imaplib
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from admin_cli.main import cli
from tests import support
from tests.conftest import PG_ADMIN_DSN

PRO = "dr.martin@hopital.demo.masante.fr"
INS = "279035121518989"
PATIENT = f"{INS}@patient.masante.fr"
PASSWORD = "Pw-" + uuid.uuid4().hex  # noqa: S105 - a throw-away demo password, to look for in the log
SUBJECT = "Subj-" + uuid.uuid4().hex
BODY_MARKER = "Body-" + uuid.uuid4().hex
HOSTILE_IMAP = b"evil\r\nname\x00\x1b[2J"
HOSTILE_SMTP = "smtp\r\nevil\x1b[2J"
CONTROLS = [chr(c) for c in (*range(0x20), 0x7F)]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASANTE_")}
    env.update(extra)
    return env


class Stderr:
    """Collects a process's standard error in a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.data = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._lock:
                self.data += line

    def wait_for(self, needle: bytes, proc: subprocess.Popen[bytes], timeout: float = 60) -> bytes:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if needle in self.data:
                    return self.data
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"{needle!r} not logged (exit {proc.poll()}); got:\n{self.data.decode(errors='replace')}")

    def finish(self) -> bytes:
        self._thread.join(10)
        return self.data


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A demo set up by ``masante-admin init --demo``: its configuration and the environment to run it in."""
    env = clean_env(MASANTE_DEMO_PASSWORD=PASSWORD, MASANTE_LOG_LEVEL="DEBUG")
    dsn = None
    if request.param == "postgresql":
        request.getfixturevalue("pg_database")  # skips (or fails in CI) without PostgreSQL
        dsn = support.new_pg_database(PG_ADMIN_DSN, "masante_logs")
        env["MASANTE_DATABASE_URL"] = dsn
    cfg = tmp_path / "masante.toml"
    r = support.run_admin("init", "--demo", config=cfg, env=env)  # in this process
    assert r.returncode == 0, r.stderr
    yield cfg, env
    if dsn is not None:
        support.drop_pg_database(PG_ADMIN_DSN, dsn)


def endpoints(log: bytes) -> dict[str, int]:
    for line in log.splitlines():
        obj = json.loads(line)
        if obj.get("event") == "server.started":
            return {name: int(port) for name, port in (e.split(":") for e in obj["endpoints"])}
    raise AssertionError("no server.started line")


def tls_client(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx


def imap_literal_login(port: int, ca: Path, user: bytes, password: str) -> bytes:
    """``a1 LOGIN {n}`` with the user name as a synchronising literal (RFC 9051 §4.3): the tagged answer."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        tls_client(ca).wrap_socket(raw, server_hostname="localhost") as s,
    ):
        f = s.makefile("rb")
        assert f.readline().startswith(b"* OK")
        s.sendall(b"a1 LOGIN {%d}\r\n" % len(user))
        assert f.readline().startswith(b"+")
        s.sendall(user + b' "' + password.encode() + b'"\r\n')
        while True:
            line = f.readline()
            if line.startswith(b"a1 ") or not line:
                return line


def test_hostile_names_are_escaped_and_debug_logs_no_data(site: tuple[Path, dict[str, str]]) -> None:
    cfg, env = site
    ca = cfg.parent / "tls" / "ca.pem"
    env = {**env, **{f"MASANTE_PORTS_{p}": "0" for p in ("MX", "SUBMISSION", "SUBMISSIONS", "IMAP", "IMAPS", "WEB")}}
    with subprocess.Popen(
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        try:
            err = Stderr(proc)
            ports = endpoints(err.wait_for(b'"server.started"', proc))

            # hostile login names, refused, audited
            assert b"NO" in imap_literal_login(ports["imaps"], ca, HOSTILE_IMAP, "wrong")
            with smtplib.SMTP_SSL("127.0.0.1", ports["submissions"], context=tls_client(ca), timeout=30) as smtp:
                smtp.ehlo("client.test")
                plain = base64.b64encode(f"\0{HOSTILE_SMTP}\0wrong".encode()).decode()
                code, _ = smtp.docmd("AUTH", f"PLAIN {plain}")
                assert code == 535

            # a professional writes to a patient; the patient reads it over IMAP
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = PRO, PATIENT, SUBJECT
            msg.set_content(f"Bonjour,\n{BODY_MARKER}\n")
            with smtplib.SMTP_SSL("127.0.0.1", ports["submissions"], context=tls_client(ca), timeout=30) as smtp:
                smtp.login(PRO, PASSWORD)
                assert smtp.send_message(msg) == {}
            imap = imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=tls_client(ca), timeout=30)
            try:
                assert imap.login(PATIENT, PASSWORD)[0] == "OK"
                imap.select("INBOX")
                typ, data = imap.fetch("1:*", "(BODY[])")
                assert typ == "OK" and BODY_MARKER.encode() in b"".join(p[1] for p in data if isinstance(p, tuple))
            finally:
                imap.logout()
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
        log = err.finish().decode("utf-8")
    assert proc.returncode == 0, log

    lines = [json.loads(line) for line in log.splitlines()]
    assert any(obj["level"] == "debug" for obj in lines), "the server did not log at DEBUG"
    assert any(obj["event"] == "imap.login" for obj in lines)
    for secret in (PRO, "hopital.demo.masante.fr", INS, PASSWORD, SUBJECT, BODY_MARKER, "evil", "smtp\\"):
        assert secret not in log, f"{secret!r} is in the log"
    for sql in (" FROM ", "INSERT INTO", "UPDATE ", "BEGIN (implicit)", "[generated in", "[cached since"):
        assert sql not in log, f"SQL ({sql}) is in the log"
    # not even JSON-escaped: a control character would come back raw through ``jq -r``
    for value in (json.dumps(obj, ensure_ascii=False) for obj in lines):
        decoded = json.loads(value)
        for field in decoded.values():
            if isinstance(field, str):
                assert not any(c in field for c in CONTROLS), (field, value)

    # the audit log holds the attempts, escaped, and audit tail prints them escaped
    r = CliRunner().invoke(cli, ["--config", str(cfg), "audit", "tail", "-n", "50"], env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = r.output.lower()  # addresses are canonicalised to lower case before they are audited
    assert "evil\\r\\nname\\x00\\x1b[2j" in out, out
    assert "smtp\\r\\nevil\\x1b[2j" in out, out
    assert not any(c in out for c in CONTROLS if c != "\n"), repr(out)
    r = CliRunner().invoke(cli, ["--config", str(cfg), "audit", "verify"], env=env, catch_exceptions=False)
    assert r.exit_code == 0 and "intact" in r.output, r.output
