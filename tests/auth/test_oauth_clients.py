"""Bearer tokens through clients nobody here wrote: msmtp (submission, with a token command) and curl (IMAP).

msmtp reads the token from ``passwordeval`` (the "token command" of a real
setup, here ``cat`` of a file); curl takes ``--oauth2-bearer`` and chooses
OAUTHBEARER, or XOAUTH2 with ``--login-options AUTH=XOAUTH2``, sending it as a
SASL-IR initial response. Missing tools skip with a reason (``apt-get install
msmtp curl``), except in CI (``CI=true``), where they must run.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailserver.store.models import Account
from tests import support
from tests.auth import idp as I
from tests.auth.test_oauth import _start, forget_failures, now, professional
from tests.harness.server import Databases, ServerThread

TIMEOUT = 60


def tool(name: str) -> str:
    return support.tool(name)


@pytest.fixture(scope="module")
def provider(pki: support.TestPKI) -> Iterator[I.IdP]:
    with I.IdP.serve(pki) as p:
        yield p


@pytest.fixture(scope="module")
def site(
    provider: I.IdP, dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    server = _start(dbs, pki, tmp_path_factory.mktemp("oauth-clients"), provider)
    yield server
    server.stop()


@pytest.fixture
def srv(site: ServerThread) -> Iterator[ServerThread]:
    yield site
    forget_failures(site)


def msmtp(
    srv: ServerThread, pki: support.TestPKI, tmp: Path, sender: Account, rcpt: str, token: str, auth: str
) -> subprocess.CompletedProcess[str]:
    token_file = tmp / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    cmd = [
        tool("msmtp"),
        "--host=127.0.0.1",
        f"--port={srv.port('submission')}",
        "--tls=on",
        "--tls-starttls=on",
        f"--tls-trust-file={pki.ca_file}",
        f"--auth={auth}",
        f"--user={sender.address}",
        f"--passwordeval=cat {token_file}",
        f"--from={sender.address}",
        "--timeout=30",
        rcpt,
    ]
    message = support.make_message(sender.address, rcpt, "Compte rendu", "Bonjour, voici le compte rendu.")
    return subprocess.run(  # noqa: S603
        cmd, input=message.decode(), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def curl_imap(
    srv: ServerThread, pki: support.TestPKI, account: Account, token: str, path: str, *options: str
) -> subprocess.CompletedProcess[str]:
    url = f"imaps://127.0.0.1:{srv.port('imaps')}/{path}"
    cmd = [tool("curl"), "-sS", "--max-time", "30", "--cacert", str(pki.ca_file), "--user", f"{account.address}:"]
    cmd += ["--oauth2-bearer", token, *options, "--url", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)  # noqa: S603


@pytest.mark.parametrize("auth", ["oauthbearer", "xoauth2"])
def test_msmtp_sends_with_a_token_and_curl_reads_it_back(
    srv: ServerThread, provider: I.IdP, pki: support.TestPKI, tmp_path: Path, auth: str
) -> None:
    sender, rcpt = professional(srv), professional(srv)
    tok = I.token(provider.key("rsa-1"), I.claims("8" + str(sender.rpps), now(srv)))
    r = msmtp(srv, pki, tmp_path, sender, rcpt.address, tok, auth)
    assert r.returncode == 0, r.stderr
    # the recipient reads it over IMAP with a token of their own (curl: OAUTHBEARER, then XOAUTH2)
    theirs = I.token(provider.key("ec-1"), I.claims("8" + str(rcpt.rpps), now(srv)))
    got = curl_imap(srv, pki, rcpt, theirs, "INBOX;UID=1")
    assert got.returncode == 0, got.stderr
    assert "Subject: Compte rendu" in got.stdout and "voici le compte rendu" in got.stdout
    got = curl_imap(srv, pki, rcpt, theirs, "INBOX;UID=1", "--login-options", "AUTH=XOAUTH2")
    assert got.returncode == 0 and "Subject: Compte rendu" in got.stdout, got.stderr
    rows = [e for e in srv.audit("login") if e.actor in (sender.address, rcpt.address)]
    assert [(e.actor, e.outcome) for e in rows] == [(sender.address, "ok")] + [(rcpt.address, "ok")] * 2
    assert all(tok not in e.detail and theirs not in e.detail for e in rows)


@pytest.mark.parametrize("auth", ["oauthbearer", "xoauth2"])
def test_msmtp_with_an_expired_token_is_refused(
    srv: ServerThread, provider: I.IdP, pki: support.TestPKI, tmp_path: Path, auth: str
) -> None:
    sender, rcpt = professional(srv), professional(srv)
    t = now(srv)
    tok = I.token(provider.key("rsa-1"), I.claims("8" + str(sender.rpps), t - 900, exp=int(t) - 600))
    r = msmtp(srv, pki, tmp_path, sender, rcpt.address, tok, auth)
    assert r.returncode != 0
    assert "5.7.8 Authentication credentials invalid" in r.stderr, r.stderr
    assert [e.detail.rsplit("; ", 1)[-1] for e in srv.audit("login") if e.actor == sender.address] == ["expired"]


def test_curl_with_a_token_for_another_mailbox_is_refused(
    srv: ServerThread, provider: I.IdP, pki: support.TestPKI
) -> None:
    mine, theirs = professional(srv), professional(srv)
    tok = I.token(provider.key("rsa-1"), I.claims("8" + str(mine.rpps), now(srv)))
    got = curl_imap(srv, pki, theirs, tok, "INBOX")
    assert got.returncode == 67, (got.returncode, got.stderr)  # CURLE_LOGIN_DENIED
    assert [e.detail.rsplit("; ", 1)[-1] for e in srv.audit("login") if e.actor == theirs.address] == ["not-owner"]
