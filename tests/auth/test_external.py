"""SASL EXTERNAL with a client certificate (RFC 4422 appendix A) on IMAP and submission, after TLS.

The server trusts an account CA of this module (``[tls] account_ca``) for client
certificates on submission and IMAP; the certificate is bound to its mailbox by
``masante-admin account certificate add`` (a real process on the live server's
configuration). Clients: imaplib and smtplib presenting the certificate.
"""

from __future__ import annotations

import base64
import imaplib
import itertools
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.pki import CertificateAuthority
from crypto.tls import certificate_facts, load_certificate
from directory.accounts import AccountService
from mailserver.clock import SystemClock
from mailserver.context import Context
from mailserver.store.models import Account, AccountCertificate, AccountKind
from tests import support
from tests.harness.server import Databases, ServerThread, start_server

HOST = "127.0.0.1"
TIMEOUT = 30
_numbers = itertools.count(1)


@dataclass
class Site:
    server: ServerThread
    ca: CertificateAuthority
    dir: Path
    pki: support.TestPKI

    def issue(self, cn: str, ca: CertificateAuthority | None = None) -> tuple[Path, Path]:
        issued = (ca or self.ca).issue(f"CN={cn},O=Hopital test,C=FR", server=False, client=True)
        cert, key = self.dir / f"{cn}.pem", self.dir / f"{cn}.key"
        issued.write(cert, key)
        return cert, key

    def tls(self, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if cert is not None:
            ctx.load_cert_chain(str(cert[0]), str(cert[1]))
        return ctx

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in support.audit_env(self.server.config).items() if k.startswith("MASANTE_AUDIT")}
        env.update(support.admin_env())
        return support.run_admin(*args, config=self.server.config.path, env=env)

    def account(self, kind: AccountKind) -> Account:
        n = next(_numbers)

        async def go(ctx: Context) -> Account:
            return await AccountService(ctx).create(
                f"{kind.value.lower()}-{n}@{support.PRO_DOMAIN}", kind, actor="test", password=support.PASSWORD
            )

        return self.server.call(go)

    def bind(self, account: Account, cert: tuple[Path, Path]) -> None:
        r = self.admin("account", "certificate", "add", account.address, "--cert", str(cert[0]))
        assert r.returncode == 0, r.stderr
        fingerprint = certificate_facts(load_certificate(cert[0])).fingerprint
        assert r.stdout.strip() == (
            f"certificate {certificate_facts(load_certificate(cert[0])).subject_dn} (SHA-256 {fingerprint}) "
            f"bound to {account.address}"
        )


@pytest.fixture(scope="module")
def site(dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("external")
    ca = CertificateAuthority.create("masante account CA")
    ca.write(tmp / "account-ca.pem", tmp / "account-ca.key")
    server = start_server(
        tmp,
        dbs.new(),
        pki,
        sections={"ports": {"mx": -1}, "tls": {"account_ca": str(tmp / "account-ca.pem")}},
        clock=SystemClock(),  # masante-admin, another process, shares its notion of now
        config_on_disk=True,
    )
    server.call(support.add_domains)
    try:
        yield Site(server, ca, tmp, pki)
    finally:
        server.stop()


@pytest.fixture
def s(site: Site) -> Iterator[Site]:
    yield site
    site.server.reset_throttle()  # one test's refusals must not lock the next one out


def imap_external(s: Site, cert: tuple[Path, Path] | None, authzid: str = "", *, starttls: bool = False) -> str:
    """AUTHENTICATE EXTERNAL over IMAPS (or IMAP + STARTTLS): "OK" or the NO text."""
    if starttls:
        m: imaplib.IMAP4 = imaplib.IMAP4(HOST, s.server.port("imap"), timeout=TIMEOUT)
        assert "AUTH=EXTERNAL" not in m.capabilities  # nothing before TLS
        m.starttls(ssl_context=s.tls(cert))
    else:
        m = imaplib.IMAP4_SSL(HOST, s.server.port("imaps"), ssl_context=s.tls(cert), timeout=TIMEOUT)
    try:
        assert "AUTH=EXTERNAL" in m.capabilities
        typ, _ = m.authenticate("EXTERNAL", lambda _: authzid.encode())
        return str(typ)
    except imaplib.IMAP4.error as exc:
        return str(exc)
    finally:
        m.shutdown()


def smtp_external(s: Site, cert: tuple[Path, Path] | None, authzid: str = "", *, port: str = "submission") -> str:
    """AUTH EXTERNAL with the initial response (``=`` for none) on submission (STARTTLS) or submissions."""
    if port == "submission":
        c = smtplib.SMTP(HOST, s.server.port(port), timeout=TIMEOUT)
        c.starttls(context=s.tls(cert))
    else:
        c = smtplib.SMTP_SSL(HOST, s.server.port(port), context=s.tls(cert), timeout=TIMEOUT)
    with c:
        c.ehlo()
        assert c.esmtp_features["auth"].split() == ["EXTERNAL", "LOGIN", "PLAIN"]  # no [oauth] here
        initial = base64.b64encode(authzid.encode()).decode() if authzid else "="
        code, text = c.docmd("AUTH", f"EXTERNAL {initial}")
        return f"{code} {text.decode()}"


SMTP_OK = "235 2.7.0 Authentication successful"
SMTP_FAILED = "535 5.7.8 Authentication credentials invalid"
IMAP_UNBOUND = "[AUTHENTICATIONFAILED] No client certificate bound to this mailbox"


def test_the_application_mailbox_certificate_logs_in(s: Site) -> None:
    app = s.account(AccountKind.APP)
    cert = s.issue(f"labo-{app.id}")
    s.bind(app, cert)
    assert imap_external(s, cert) == "OK"
    assert imap_external(s, cert, app.address) == "OK"
    assert imap_external(s, cert, starttls=True) == "OK"
    assert smtp_external(s, cert) == SMTP_OK
    assert smtp_external(s, cert, app.address, port="submissions") == SMTP_OK
    rows = [e for e in s.server.audit("login") if e.actor == app.address]
    fingerprint = certificate_facts(load_certificate(cert[0])).fingerprint
    assert len(rows) == 5 and all(
        r.outcome == "ok" and f"certificate; sha256 {fingerprint}; ok" in r.detail for r in rows
    )


def test_an_organisation_mailbox_certificate_logs_in(s: Site) -> None:
    org = s.account(AccountKind.ORG)
    cert = s.issue(f"secretariat-{org.id}")
    s.bind(org, cert)
    assert imap_external(s, cert) == "OK"
    assert smtp_external(s, cert) == SMTP_OK


def test_a_certificate_of_another_ca_does_not_complete_tls(s: Site) -> None:
    """Issued by the test CA (the server's own), not the account CA: the handshake refuses it."""
    app = s.account(AccountKind.APP)
    stranger = s.issue(f"stranger-{app.id}", ca=s.pki.ca)
    with pytest.raises((ssl.SSLError, OSError, imaplib.IMAP4.abort)):
        imap_external(s, stranger)
    with pytest.raises((ssl.SSLError, OSError, smtplib.SMTPException)):
        smtp_external(s, stranger)
    # nor can the operator bind it
    r = s.admin("account", "certificate", "add", app.address, "--cert", str(stranger[0]))
    assert r.returncode != 0
    assert "is expired or not issued by the account CA" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_an_unbound_certificate_does_not_log_in(s: Site) -> None:
    app = s.account(AccountKind.APP)
    unbound = s.issue(f"unbound-{app.id}")
    assert imap_external(s, unbound) == IMAP_UNBOUND
    assert imap_external(s, unbound, app.address) == IMAP_UNBOUND
    assert smtp_external(s, unbound, app.address) == SMTP_FAILED
    assert [e.detail.rsplit("; ", 1)[-1] for e in s.server.audit("login") if e.actor == app.address] == [
        "unbound-certificate"
    ] * 2


def test_a_certificate_opens_only_the_mailbox_it_is_bound_to(s: Site) -> None:
    app, other = s.account(AccountKind.APP), s.account(AccountKind.APP)
    cert = s.issue(f"labo-only-{app.id}")
    s.bind(app, cert)
    assert imap_external(s, cert, other.address) == IMAP_UNBOUND
    assert smtp_external(s, cert, other.address) == SMTP_FAILED


def test_a_personal_mailbox_does_not_log_in_with_a_certificate(s: Site) -> None:
    per = s.account(AccountKind.PER)
    cert = s.issue(f"person-{per.id}")
    r = s.admin("account", "certificate", "add", per.address, "--cert", str(cert[0]))
    assert r.returncode != 0
    assert r.stderr.strip() == (
        f"error: {per.address} is a PER mailbox: only APP and ORG mailboxes log in with a certificate"
    )
    # even bound behind the service's back, EXTERNAL refuses a PER account
    facts = certificate_facts(load_certificate(cert[0]))

    async def sneak(ctx: Context) -> None:
        async with ctx.uow() as uow:
            await uow.certificates.add(
                AccountCertificate(
                    account_id=per.id,
                    fingerprint=facts.fingerprint,
                    subject_dn=facts.subject_dn,
                    issuer_dn=facts.issuer_dn,
                    not_after=facts.not_after,
                    added_by="test",
                )
            )
            await uow.commit()

    s.server.call(sneak)
    assert imap_external(s, cert) == IMAP_UNBOUND
    assert smtp_external(s, cert, per.address) == SMTP_FAILED
    assert [e.detail.rsplit("; ", 1)[-1] for e in s.server.audit("login") if e.actor == per.address] == ["kind-PER"] * 2


def test_external_without_a_certificate(s: Site) -> None:
    app = s.account(AccountKind.APP)
    assert imap_external(s, None, app.address) == "[AUTHENTICATIONFAILED] No client certificate"
    assert smtp_external(s, None, app.address) == SMTP_FAILED


def test_bearer_mechanisms_are_not_offered_without_oauth(s: Site) -> None:
    m = imaplib.IMAP4_SSL(HOST, s.server.port("imaps"), ssl_context=s.tls(), timeout=TIMEOUT)
    try:
        assert [c for c in m.capabilities if c.startswith("AUTH=")] == ["AUTH=PLAIN", "AUTH=EXTERNAL"]
        with pytest.raises(imaplib.IMAP4.error, match=r"\[CANNOT\] Unsupported mechanism XOAUTH2"):
            m.authenticate("XOAUTH2", lambda _: b"user=a@b\x01auth=Bearer x\x01\x01")
    finally:
        m.shutdown()
    with smtplib.SMTP(HOST, s.server.port("submission"), timeout=TIMEOUT) as c:
        c.starttls(context=s.tls())
        c.ehlo()
        assert c.docmd("AUTH", "XOAUTH2 dXNlcj0=") == (
            504,
            b"5.5.4 Unrecognised authentication mechanism: use EXTERNAL or LOGIN or PLAIN",
        )


def test_certificate_list_and_remove(s: Site) -> None:
    app = s.account(AccountKind.APP)
    cert = s.issue(f"labo-list-{app.id}")
    s.bind(app, cert)
    facts = certificate_facts(load_certificate(cert[0]))
    listed = s.admin("account", "certificate", "list", app.address)
    assert listed.returncode == 0 and facts.fingerprint in listed.stdout and facts.subject_dn in listed.stdout
    again = s.admin("account", "certificate", "add", app.address, "--cert", str(cert[0]))
    assert again.returncode != 0 and "already bound" in again.stderr
    gone = s.admin("account", "certificate", "remove", app.address, facts.fingerprint)
    assert gone.returncode == 0, gone.stderr
    assert imap_external(s, cert) == IMAP_UNBOUND
    actions = [e.action for e in s.server.audit("certificate.add")] + [
        e.action for e in s.server.audit("certificate.remove")
    ]
    assert "certificate.remove" in actions


def test_msmtp_and_curl_log_in_with_the_application_certificate(s: Site, tmp_path: Path) -> None:
    """Clients nobody here wrote: msmtp ``--auth=external`` submits, curl ``AUTH=EXTERNAL`` reads back."""
    from tests.auth.test_oauth_clients import tool

    app, rcpt = s.account(AccountKind.APP), s.account(AccountKind.APP)
    cert = s.issue(f"labo-clients-{app.id}")
    s.bind(app, cert)
    rcpt_cert = s.issue(f"labo-clients-rcpt-{rcpt.id}")
    s.bind(rcpt, rcpt_cert)
    message = support.make_message(app.address, rcpt.address, "Resultats", "Les resultats sont disponibles.")
    sent = subprocess.run(  # noqa: S603
        [
            tool("msmtp"),
            "--host=127.0.0.1",
            f"--port={s.server.port('submission')}",
            "--tls=on",
            "--tls-starttls=on",
            f"--tls-trust-file={s.pki.ca_file}",
            f"--tls-cert-file={cert[0]}",
            f"--tls-key-file={cert[1]}",
            "--auth=external",
            f"--user={app.address}",
            f"--from={app.address}",
            "--timeout=30",
            rcpt.address,
        ],
        input=message.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    url = f"imaps://127.0.0.1:{s.server.port('imaps')}/INBOX;UID=1"
    got = subprocess.run(  # noqa: S603
        [tool("curl"), "-sS", "--max-time", "30", "--cacert", str(s.pki.ca_file), "--cert", str(rcpt_cert[0])]
        + ["--key", str(rcpt_cert[1]), "--login-options", "AUTH=EXTERNAL", "--user", f"{rcpt.address}:", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert got.returncode == 0, got.stderr
    assert "Subject: Resultats" in got.stdout
