"""Patients: password plus a one-time code (issue 12, point 4), through the HTTPS enrolment page.

The code goes to the outbox (``[enrolment] notifier = "file"``); the server's clock is a FakeClock.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import imaplib
import json
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiosmtpd.controller import Controller

from directory.auth import Authenticator
from directory.enrolment import EnrolmentOff, EnrolmentService, Started
from directory.notifiers import Notifier, SmsNotifier, SmtpNotifier
from mailserver.context import Context
from mailserver.store.models import Account
from tests import support
from tests.auth.creds_harness import admin, creds_server, imaps, login_refused, outbox, patient, post
from tests.harness.server import ServerThread

srv = creds_server(security={"patient_second_factor": True}, enrolment={"notifier": "file"})


@pytest.fixture(autouse=True)
def _clean_throttle(srv: ServerThread) -> None:
    srv.reset_throttle()


def code_sent(srv: ServerThread, account: Account, before: set[Path]) -> str:
    """The code of the one new file of the outbox, which names ``account``."""
    (new,) = set(outbox(srv).glob("*.txt")) - before
    text = new.read_text(encoding="utf-8")
    assert f"To: {account.address}" in text
    assert new.stat().st_mode & 0o077 == 0
    (code,) = re.findall(r"\b(\d{6})\b", text)
    return code


def start(srv: ServerThread, pki: support.TestPKI, account: Account, device: str = "Téléphone") -> tuple[str, str]:
    """POST /enrol: the enrolment id and the code that reached the outbox."""
    before = set(outbox(srv).glob("*.txt")) if outbox(srv).exists() else set()
    status, body = post(
        srv, pki, "/enrol", {"address": account.address, "password": support.PASSWORD, "device": device}
    )
    assert status == 200, body
    assert body["sent_to"].startswith("the outbox")
    return body["enrolment"], code_sent(srv, account, before)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def test_a_patients_password_alone_does_not_open_imap(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, p.address, support.PASSWORD)
    fails = [e for e in srv.audit("login") if e.actor == p.address and e.outcome == "fail"]
    assert any("second-factor-required" in (e.detail or "") for e in fails)
    # a professional's password still does
    imaps(srv, pki, srv.make_pro().address, support.PASSWORD).logout()


def test_the_right_code_yields_an_app_password_that_opens_imap(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    nonce, code = start(srv, pki, p)
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    assert status == 200, body
    assert body["name"] == "Téléphone" and body["address"] == p.address
    m = imaps(srv, pki, p.address, body["password"])
    assert m.select("Documents")[0] == "OK"
    m.logout()
    # a used enrolment never opens again
    again = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    assert again[0] == 410
    # the code is in no audit entry
    for action in ("enrolment.start", "enrolment.verify", "device.create"):
        entries = srv.audit(action)
        assert entries, action
        assert all(code not in f"{e.detail}" and body["password"] not in f"{e.detail}" for e in entries)


def test_five_wrong_codes_lock_the_enrolment(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    nonce, code = start(srv, pki, p)
    for left in (4, 3, 2, 1):
        status, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": wrong(code)})
        assert status == 400 and body["tries_left"] == left, body
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": wrong(code)})
    assert status == 410 and "locked" in body["error"]
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    assert status == 410 and "locked" in body["error"]
    assert any("locked" in (e.detail or "") for e in srv.audit("enrolment.verify"))


def test_a_code_is_valid_ten_minutes(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    nonce, code = start(srv, pki, p)
    srv.advance(9 * 60)
    other_nonce, other_code = start(srv, pki, p, "Tablette")
    srv.advance(61)  # the first code is now 10 min 1 s old, the second 61 s
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    assert status == 410 and "expired" in body["error"]
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": other_nonce, "code": other_code})
    assert status == 200 and body["name"] == "Tablette"


def test_a_wrong_password_or_address_gets_the_same_answer_and_no_code(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    before = set(outbox(srv).glob("*.txt")) if outbox(srv).exists() else set()
    bad_password = post(srv, pki, "/enrol", {"address": p.address, "password": "nope", "device": "x"})
    srv.reset_throttle()
    unknown = post(srv, pki, "/enrol", {"address": "999@patient.masante.fr", "password": "nope", "device": "x"})
    assert bad_password[0] == unknown[0] == 401
    assert bad_password[1] == unknown[1]
    after = set(outbox(srv).glob("*.txt")) if outbox(srv).exists() else set()
    assert after == before


def test_an_app_password_does_not_enrol_another_device(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    nonce, code = start(srv, pki, p)
    _, body = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    status, _ = post(srv, pki, "/enrol", {"address": p.address, "password": body["password"], "device": "y"})
    assert status == 401


def test_the_page_is_served(srv: ServerThread, pki: support.TestPKI) -> None:
    import urllib.request

    from tests.auth.creds_harness import tls

    url = f"https://localhost:{srv.port('web')}/enrol"
    with urllib.request.urlopen(url, context=tls(pki), timeout=30) as resp:  # noqa: S310 - the test server
        page = resp.read().decode()
    assert resp.status == 200 and 'action="/enrol/verify"' in page


class _Gateway(http.server.BaseHTTPRequestHandler):
    """An SMS gateway's hook: keeps what it was sent."""

    received: ClassVar[list[dict[str, str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        length = int(self.headers["Content-Length"])
        self.received.append(json.loads(self.rfile.read(length)))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Mailbox:
    """An SMTP server's handler (aiosmtpd): keeps the messages."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"


def _start_with(srv: ServerThread, notifier: Notifier, account: Account) -> Started:
    async def go(ctx: Context) -> Started:
        service = EnrolmentService(ctx, Authenticator(ctx), notifier)
        return await service.start(account.address, support.PASSWORD, "Téléphone", peer="127.0.0.1")

    return srv.call(go)


def test_the_sms_hook_and_the_mail_notifier_carry_the_code_to_the_contact(
    srv: ServerThread, pki: support.TestPKI
) -> None:
    p = patient(srv)
    no_contact = pytest.raises(EnrolmentOff, match="no contact phone")
    with no_contact:
        _start_with(srv, SmsNotifier("http://127.0.0.1:9/"), p)
    r = admin(srv, "app-password", "contact", p.address, "--email", "p.durand@perso.test", "--phone", "+33612345678")
    assert r.returncode == 0, r.stderr

    _Gateway.received.clear()  # one list per class: the other database's run filled it
    gateway = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        started = _start_with(srv, SmsNotifier(f"http://127.0.0.1:{gateway.server_address[1]}/sms"), p)
    finally:
        gateway.shutdown()
        gateway.server_close()
    assert started.sent_to == "+33*******78"
    (sms,) = _Gateway.received
    assert sms["to"] == "+33612345678"
    (code,) = re.findall(r"\b(\d{6})\b", sms["text"])
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": started.nonce, "code": code})
    assert status == 200, body

    mailbox = _Mailbox()
    port = support.free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        started = _start_with(srv, SmtpNotifier("127.0.0.1", port, "no-reply@localhost"), p)
    finally:
        controller.stop()
    assert started.sent_to == "p***@perso.test"
    ((rcpts, raw),) = mailbox.messages
    assert rcpts == ["p.durand@perso.test"]
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body().get_content()  # type: ignore[union-attr]
    (code,) = re.findall(r"\b(\d{6})\b", text)
    status, body = post(srv, pki, "/enrol/verify", {"enrolment": started.nonce, "code": code})
    assert status == 200, body


def test_the_owner_lists_and_revokes_devices_with_the_account_password(srv: ServerThread, pki: support.TestPKI) -> None:
    p = patient(srv)
    nonce, code = start(srv, pki, p, "Vieux téléphone")
    _, enrolled = post(srv, pki, "/enrol/verify", {"enrolment": nonce, "code": code})
    m = imaps(srv, pki, p.address, enrolled["password"])
    status, body = post(srv, pki, "/enrol/devices", {"address": p.address, "password": support.PASSWORD})
    assert status == 200
    (device,) = body["devices"]
    assert device["name"] == "Vieux téléphone" and device["state"] == "active" and device["last_used_at"]
    assert enrolled["password"] not in json.dumps(body)
    # an app password does not manage the others
    refused = post(srv, pki, "/enrol/revoke", {"address": p.address, "password": enrolled["password"], "name": "x"})
    assert refused[0] == 401
    status, body = post(
        srv, pki, "/enrol/revoke", {"address": p.address, "password": support.PASSWORD, "name": "Vieux téléphone"}
    )
    assert status == 200 and body["revoked"] == 1
    with pytest.raises(imaplib.IMAP4.abort, match="revoked"):
        m.noop()
    m.shutdown()
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, p.address, enrolled["password"])
