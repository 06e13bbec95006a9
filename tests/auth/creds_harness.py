"""What the app-password, enrolment and grant tests share: a server with IMAP, submission and HTTPS, clients.

The server runs on a ``FakeClock`` (it starts at the real now, so credentials made by a ``masante-admin``
process on the system clock are valid on it) with its configuration on disk for ``masante-admin``.
"""

from __future__ import annotations

import imaplib
import itertools
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from directory.ins import ins_key
from mailserver.store.models import Account
from tests import support
from tests.harness.server import ServerThread, server_fixture

HOST = "127.0.0.1"
TIMEOUT = 30
ADMIN = support.ADMIN_SCRIPT
_serial = itertools.count(1)


def domains(server: ServerThread, request: Any) -> None:
    server.call(support.add_domains)


def creds_server(**sections: dict[str, object]) -> Any:
    """A module-scoped ``srv`` fixture: IMAP, submission and the HTTPS service on ephemeral ports."""
    base: dict[str, dict[str, object]] = {"ports": {"mx": -1, "submissions": -1, "imap": -1, "web": 0}}
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    return server_fixture(domains, name="srv", config_on_disk=True, **base)


def new_ins() -> str:
    """A valid INS of its own for each call (NIR-shaped, key computed)."""
    first = f"2800175{os.getpid() % 1000:03d}{next(_serial):03d}"
    return f"{first}{ins_key(first):02d}"


def patient(srv: ServerThread) -> Account:
    return srv.make_patient(new_ins())


def admin(srv: ServerThread, *args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """``masante-admin`` against the live server's store (its audit key and anchors in the environment): in this
    process (``support.run_admin``), or with ``process`` by the real console script."""
    env = {k: v for k, v in support.audit_env(srv.config).items() if not k.startswith("MASANTE_CREDENTIAL")}
    return support.run_admin(*args, config=srv.config.path, env=env, process=process)


def secret_of(r: subprocess.CompletedProcess[str]) -> str:
    """The password a create/grant printed: alone on the last line of standard output."""
    assert r.returncode == 0, r.stderr
    return r.stdout.rstrip("\n").splitlines()[-1]


def tls(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def imaps(srv: ServerThread, pki: support.TestPKI, address: str | None = None, password: str = "") -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls(pki), timeout=TIMEOUT)
    if address is not None:
        m.login(address, password)
    return m


def login_refused(srv: ServerThread, pki: support.TestPKI, address: str, password: str) -> str:
    """The text of the NO that answers LOGIN (fails the test if the login succeeds)."""
    m = imaps(srv, pki)
    try:
        m.login(address, password)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        m.shutdown()
    raise AssertionError("the login succeeded")


def tagged(m: imaplib.IMAP4, line: str) -> bytes:
    """Send one command line as is; the tagged response line."""
    tag = m._new_tag()  # type: ignore[attr-defined]
    m.send(tag + b" " + line.encode() + b"\r\n")
    while True:
        resp = m.readline()
        if resp.startswith(tag + b" ") or not resp:
            return resp.rstrip(b"\r\n")


def post(srv: ServerThread, pki: support.TestPKI, path: str, body: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A JSON POST to the HTTPS service: status and decoded answer."""
    req = urllib.request.Request(  # noqa: S310 - https to the test server
        f"https://localhost:{srv.port('web')}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, context=tls(pki), timeout=TIMEOUT) as resp:  # noqa: S310
            assert resp.headers["Cache-Control"] == "no-store"
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def outbox(srv: ServerThread) -> Path:
    return srv.config.resolve(srv.config.enrolment.outbox_dir)


def smtp_refused(srv: ServerThread, pki: support.TestPKI, address: str, password: str) -> int:
    """The reply code that refuses AUTH on submission (fails the test if AUTH succeeds)."""
    import smtplib

    from tests.smtp.harness import submission

    s = submission(srv, pki)
    try:
        s.login(address, password)
    except smtplib.SMTPAuthenticationError as exc:
        return exc.smtp_code
    finally:
        s.close()
    raise AssertionError("AUTH succeeded")
