"""App passwords (issue 12, point 3): made by ``masante-admin``, shown once, scoped, listed, revoked at once."""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import re

import pytest

from crypto.credentials import CredentialKey
from mailserver.context import Context
from mailserver.store.models import AppCredential
from tests import support
from tests.auth.creds_harness import admin, creds_server, imaps, login_refused, secret_of, smtp_refused, tagged
from tests.harness.server import ServerThread
from tests.smtp.harness import submission

srv = creds_server(security={"patient_second_factor": True})

SHAPE = re.compile(r"^[a-z2-7]{8}(-[a-z2-7]{8}){3}$")


@pytest.fixture(autouse=True)
def _clean_throttle(srv: ServerThread) -> None:
    srv.reset_throttle()


def rows(srv: ServerThread, account_id: int) -> list[AppCredential]:
    async def go(ctx: Context) -> list[AppCredential]:
        async with ctx.uow(readonly=True) as uow:
            return list(await uow.credentials.list(account_id))

    return srv.call(go)


def test_create_prints_the_password_once_on_the_last_line_and_it_opens_imap_and_smtp(
    srv: ServerThread, pki: support.TestPKI
) -> None:
    user = srv.make_pro()
    r = admin(srv, "app-password", "create", user.address, "--name", "Téléphone", process=True)
    password = secret_of(r)
    assert SHAPE.match(password), r.stdout
    assert len(password.replace("-", "")) * 5 >= 128  # base32: 5 bits a letter
    assert r.stdout.count(password) == 1 and password not in r.stderr

    m = imaps(srv, pki, user.address, password)
    assert m.select("INBOX")[0] == "OK"
    m.logout()
    s = submission(srv, pki, user.address, password)
    s.quit()

    listed = admin(srv, "app-password", "list", user.address)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if "Téléphone" in x)
    assert "imap,smtp" in line and "active" in line
    assert line.count("-") < 6  # "last used" is a date now, not "-"
    assert password not in listed.stdout


def test_authenticate_plain_takes_an_app_password(srv: ServerThread, pki: support.TestPKI) -> None:
    user = srv.make_pro()
    password = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Thunderbird"))
    m = imaps(srv, pki)
    typ, _ = m.authenticate("PLAIN", lambda _: f"\0{user.address}\0{password}".encode())
    assert typ == "OK"
    m.logout()


def test_the_scope_limits_the_doors(srv: ServerThread, pki: support.TestPKI) -> None:
    user = srv.make_pro()
    imap_only = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Lecture", "--scope", "imap"))
    smtp_only = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Scanner", "--scope", "smtp"))
    imaps(srv, pki, user.address, imap_only).logout()
    assert smtp_refused(srv, pki, user.address, imap_only) == 535
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, user.address, smtp_only)
    submission(srv, pki, user.address, smtp_only).quit()


def test_revoke_fails_new_logins_at_once_and_ends_open_sessions(srv: ServerThread, pki: support.TestPKI) -> None:
    user = srv.make_pro()
    password = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Tablette"))
    open_session = imaps(srv, pki, user.address, password)
    assert open_session.select("INBOX")[0] == "OK"

    r = admin(srv, "app-password", "revoke", user.address, "Tablette")
    assert r.returncode == 0, r.stderr

    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, user.address, password)
    with pytest.raises(imaplib.IMAP4.abort, match="revoked"):
        open_session.noop()
    open_session.shutdown()
    assert smtp_refused(srv, pki, user.address, password) == 535
    # the account password is untouched
    imaps(srv, pki, user.address, support.PASSWORD).logout()
    listed = admin(srv, "app-password", "list", user.address).stdout
    assert "revoked" in next(x for x in listed.splitlines() if "Tablette" in x)


def test_stored_only_as_a_keyed_hash_and_never_audited(srv: ServerThread, pki: support.TestPKI) -> None:
    user = srv.make_pro()
    password = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Montre"))
    imaps(srv, pki, user.address, password).logout()
    (row,) = [c for c in rows(srv, user.id) if c.name == "Montre"]
    key_file = srv.config.resolve(srv.config.keys.credential_key_file)
    assert key_file.stat().st_mode & 0o077 == 0
    key = CredentialKey(base64.b64decode(key_file.read_text()))
    assert row.digest == key.app_password_digest(password)
    assert row.digest != hashlib.sha256(password.replace("-", "").encode()).digest()  # keyed, not a bare hash
    assert not hmac.compare_digest(row.digest, key.app_password_digest(password.upper() + "x"))
    for action in ("app-password.create", "login"):
        for e in srv.audit(action):
            assert password not in f"{e.actor} {e.object_id} {e.detail}"
            assert password.replace("-", "") not in f"{e.detail}"
    logins = [e for e in srv.audit("login") if e.actor == user.address and e.outcome == "ok"]
    assert any("via app-password Montre" in (e.detail or "") for e in logins)


def test_names_are_unique_among_live_credentials_and_errors_are_one_line(srv: ServerThread) -> None:
    user = srv.make_pro()
    secret_of(admin(srv, "app-password", "create", user.address, "--name", "Ordinateur"))
    again = admin(srv, "app-password", "create", user.address, "--name", "Ordinateur")
    assert again.returncode != 0 and again.stderr.startswith("error: ") and "already has" in again.stderr
    bad = admin(srv, "app-password", "create", user.address, "--name", "x", "--scope", "pop3")
    assert bad.returncode != 0 and "--scope" in bad.stderr
    unknown = admin(srv, "app-password", "revoke", user.address, "Nothing")
    assert unknown.returncode != 0 and "no live credential" in unknown.stderr
    assert "Traceback" not in again.stderr + bad.stderr + unknown.stderr


def test_a_login_name_of_another_account_does_not_take_my_app_password(srv: ServerThread, pki: support.TestPKI) -> None:
    mine, other = srv.make_pro(), srv.make_pro()
    password = secret_of(admin(srv, "app-password", "create", mine.address, "--name", "Téléphone"))
    assert "AUTHENTICATIONFAILED" in login_refused(srv, pki, other.address, password)
    m = imaps(srv, pki)
    assert b"OK" in tagged(m, f'LOGIN "{mine.address}" "{password.upper()}"')  # typed in capitals: same letters
    m.logout()


def test_an_app_password_session_appends_into_its_selected_mailbox(srv: ServerThread, pki: support.TestPKI) -> None:
    """The scoped store takes the APPEND's claim of \\Recent for the mailbox selected read-write
    (``MailStore.append_many(recent_for=...)``) as the plain one does."""
    user = srv.make_pro()
    password = secret_of(admin(srv, "app-password", "create", user.address, "--name", "Poste", process=True))
    m = imaps(srv, pki, user.address, password)
    try:
        assert m.select("INBOX")[0] == "OK"
        typ, data = m.append("INBOX", "", None, b"From: a@b.test\r\nSubject: kept\r\n\r\nbody\r\n")
        assert typ == "OK" and b"APPENDUID" in data[0], data
        m.noop()
        assert m.untagged_responses.pop("RECENT")[-1] == b"1"
    finally:
        m.logout()
