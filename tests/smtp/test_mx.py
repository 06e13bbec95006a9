"""The MX port as another operator's MTA meets it: STARTTLS, client certificates, the trust space, DKIM."""

from __future__ import annotations

import email
import email.policy
import smtplib
import ssl
from pathlib import Path

import pytest

from crypto import dkim as dkimlib
from crypto.pki import CertificateAuthority
from mailserver.context import Context
from mailserver.smtp import spool
from mailserver.store.models import QueuedMessage
from tests import support
from tests.smtp.conftest import (
    OTHER,
    OTHER_DN,
    PATIENT,
    PRO,
    SIGNING,
    SIGNING_DN,
    SIGNING_SELECTOR,
    STRANGER_DN,
    signed,
)
from tests.smtp.harness import ServerThread, find, marker, message, mx, text, tls_client

SENDER = f"dr.cuddy@{OTHER}"
SIGNER = f"dr.foreman@{SIGNING}"


def test_mx_requires_starttls_and_offers_no_auth(site: ServerThread) -> None:
    s = smtplib.SMTP("127.0.0.1", site.port("mx"), timeout=30)
    s.ehlo()
    lines = s.ehlo_resp.decode().splitlines()
    assert "STARTTLS" in lines and "DSN" in lines and not any(x.startswith("AUTH") for x in lines)
    code, msg = text(s.docmd("MAIL", f"FROM:<{SENDER}>"))
    assert (code, msg[:6]) == (530, "5.7.0 ")
    s.quit()


def test_no_client_certificate_is_refused(site: ServerThread, pki: support.TestPKI) -> None:
    s = mx(site, pki, None)
    code, msg = text(s.mail(SENDER))
    assert (code, msg[:6]) == (550, "5.7.1 ") and "certificate" in msg
    assert text(s.docmd("AUTH", "PLAIN AGEAYg=="))[0] == 503
    s.quit()


def test_certificate_not_listed_for_the_sender_domain(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    s = mx(site, pki, client_certs[STRANGER_DN])
    code, msg = text(s.mail(SENDER))
    assert (code, msg[:6]) == (550, "5.7.1 ") and "not listed" in msg
    s.quit()
    s = mx(site, pki, client_certs[SIGNING_DN])  # a listed operator, but not for this domain
    assert text(s.mail(SENDER))[0] == 550
    s.quit()


def test_sender_outside_the_trust_space(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    s = mx(site, pki, client_certs[OTHER_DN])
    code, msg = text(s.mail("someone@gmail.com"))
    assert (code, msg[:6]) == (550, "5.7.1 ") and "trust space" in msg
    s.quit()


def test_certificate_from_another_ca_fails_the_handshake(
    site: ServerThread, pki: support.TestPKI, tmp_path: Path
) -> None:
    rogue = CertificateAuthority.create("rogue CA")
    rogue.issue(OTHER_DN, server=False).write(tmp_path / "rogue.pem", tmp_path / "rogue.key")
    s = smtplib.SMTP("127.0.0.1", site.port("mx"), timeout=30)
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        s.starttls(context=tls_client(pki, tmp_path / "rogue.pem", tmp_path / "rogue.key"))
        s.ehlo()
        s.mail(SENDER)
    s.close()


def test_operator_delivers_to_a_local_patient(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    assert s.sendmail(SENDER, [PATIENT], message(SENDER, PATIENT, f"compte rendu {tag}")) == {}
    s.quit()
    [stored] = find(site, PATIENT, tag)
    msg = email.message_from_bytes(stored, policy=email.policy.default)
    assert msg["Authentication-Results"] == "localhost; dkim=none"
    received = msg.get_all("Received")[0]
    assert "with ESMTPS" in received and f"client certificate {OTHER_DN} verified" in " ".join(received.split())


def test_mx_relays_nothing(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    s = mx(site, pki, client_certs[OTHER_DN])
    s.mail(SENDER)
    code, msg = text(s.rcpt(f"someone@{SIGNING}"))
    assert (code, msg[:6]) == (550, "5.7.1 ") and "Relaying denied" in msg
    code, msg = text(s.rcpt(f"nobody@{support.PRO_DOMAIN}"))
    assert (code, msg[:6]) == (550, "5.1.1 ")
    s.quit()


def test_dkim_is_required_from_a_signing_operator(
    site: ServerThread,
    pki: support.TestPKI,
    client_certs: dict[str, tuple[Path, Path]],
    signing_key: dkimlib.KeyPair,
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[SIGNING_DN])
    raw = message(SIGNER, PATIENT, f"signed {tag}")
    s.mail(SIGNER)
    s.rcpt(PATIENT)
    code, msg = text(s.data(raw))
    assert (code, msg[:7]) == (550, "5.7.20 ")
    tampered = signed(raw, signing_key).replace(b"Bonjour.", b"Bonsoir.")
    s.mail(SIGNER)
    s.rcpt(PATIENT)
    assert text(s.data(tampered))[0] == 550
    other_key = dkimlib.generate_key()  # a key the table does not hold for this selector
    s.mail(SIGNER)
    s.rcpt(PATIENT)
    assert (
        text(s.data(dkimlib.sign(raw, domain=SIGNING, selector="unknown", private_pem=other_key.private_pem)))[0] == 550
    )
    assert s.sendmail(SIGNER, [PATIENT], signed(raw, signing_key)) == {}
    s.quit()
    [stored] = find(site, PATIENT, tag)
    results = email.message_from_bytes(stored, policy=email.policy.default)["Authentication-Results"]
    assert " ".join(results.split()).startswith(f"localhost; dkim=pass header.d={SIGNING} header.s={SIGNING_SELECTOR}")


def test_forged_authentication_results_are_removed(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    forged = b"Authentication-Results: localhost; dkim=pass header.d=hopital.test\r\n"
    theirs = b"Authentication-Results: mx.clinique.test; dkim=pass header.d=clinique.test\r\n"
    s = mx(site, pki, client_certs[OTHER_DN])
    assert s.sendmail(SENDER, [PATIENT], forged + theirs + message(SENDER, PATIENT, f"forged {tag}")) == {}
    s.quit()
    [stored] = find(site, PATIENT, tag)
    results = email.message_from_bytes(stored, policy=email.policy.default).get_all("Authentication-Results")
    assert results == ["localhost; dkim=none", "mx.clinique.test; dkim=pass header.d=clinique.test"]


def test_bounce_from_a_listed_operator(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    report = (
        message(f"MAILER-DAEMON@mx.{OTHER}", PRO, f"bounce {tag}")
        .replace(
            b'Content-Type: text/plain; charset="utf-8"',
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
            1,
        )
        .replace(b"Bonjour.\r\n", b"--b\r\n\r\nBonjour.\r\n--b--\r\n")
    )  # a null reverse-path carries only reports
    assert s.sendmail("", [PRO], report) == {}
    s.quit()
    assert len(find(site, PRO, tag)) == 1
    s = mx(site, pki, client_certs[STRANGER_DN])
    assert text(s.mail(""))[0] == 550
    s.quit()


def test_notify_success_from_a_remote_sender_queues_a_dsn_back(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    s.mail(SENDER, [f"ENVID={tag}"])
    s.rcpt(PATIENT, ["NOTIFY=SUCCESS"])
    assert s.data(message(SENDER, PATIENT, f"notify {tag}"))[0] == 250
    s.quit()

    async def queued(ctx: Context) -> list[tuple[QueuedMessage, bytes]]:
        async with ctx.uow(readonly=True) as uow:
            rows = await uow.queue.list()
        return [(q, body) for q in rows if tag.encode() in (body := spool.open_body(ctx.keyring, q))]

    [(row, report)] = site.call(queued)
    assert (row.mail_from, row.rcpt_to, row.rcpt_domain) == ("", SENDER, OTHER)
    assert f"Original-Envelope-Id: {tag}".encode() in report and b"Action: delivered" in report
