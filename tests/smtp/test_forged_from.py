"""Forged senders (issue 14, point 1), through real SMTP on both databases: who a message says it is from.

MX door: the From domain is the envelope's or DKIM-aligned, never one of ours; a null reverse-path carries
only reports and never to a patient. Submission: From required, From/Sender/Resent-From the authenticated
address after RFC 2047 decoding. Both: no display name showing another address. Each refusal is
``550 5.7.1`` with a sentence, and nothing of the message is stored or queued.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

from crypto import dkim as dkimlib
from tests import support
from tests.smtp.conftest import OTHER, OTHER_DN, PATIENT, PRO, PRO2, SIGNING, SIGNING_SELECTOR, signed
from tests.smtp.harness import ServerThread, copies, find, marker, mx, submission

SENDER = f"dr.cuddy@{OTHER}"
BOUNCER = f"MAILER-DAEMON@mx.{OTHER}"


def raw(*headers: str, body: str = "Bonjour.\r\n") -> bytes:
    """A message written by hand: the header fields exactly as given (nothing re-encoded)."""
    return ("\r\n".join(headers) + "\r\n\r\n" + body).encode()


def plain(from_: str, to: str, tag: str, *more: str) -> bytes:
    return raw(f"From: {from_}", f"To: {to}", f"Subject: {tag}", f"Message-ID: <{tag}@peer.test>", *more)


def report(from_: str, to: str, tag: str) -> bytes:
    """A delivery status notification (RFC 3464) as another operator's MTA sends it."""
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.{OTHER}\r\n\r\nFinal-Recipient: rfc822; someone@{OTHER}\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n"
        f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: {tag}\r\n--b--\r\n"
    )
    return raw(
        f"From: {from_}",
        f"To: {to}",
        f"Subject: Undelivered {tag}",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
        body=body,
    )


def refused(s: smtplib.SMTP, mail_from: str, rcpt: str, data: bytes, words: str) -> None:
    assert s.mail(mail_from)[0] == 250
    assert s.rcpt(rcpt)[0] == 250
    code, msg = s.data(data)
    text = msg.decode()
    assert (code, text[:6]) == (550, "5.7.1 "), (code, text)
    assert words in text, text


# --- MX door ----------------------------------------------------------------------------------------------------


def test_mx_from_must_be_the_envelope_domain(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    refused(s, SENDER, PRO, plain(f"Dr Foreman <dr.foreman@{SIGNING}>", PRO, tag), "envelope sender's domain")
    refused(s, SENDER, PATIENT, plain(f"dr.x@sub.{OTHER}", PATIENT, tag), "envelope sender's domain")
    assert s.sendmail(SENDER, [PATIENT], plain(f"Dr Cuddy <{SENDER}>", PATIENT, f"{tag}-ok")) == {}
    s.quit()
    assert copies(site, tag) == 1  # only the aligned one (its subject holds the tag too)
    assert len(find(site, PATIENT, f"{tag}-ok")) == 1


def test_mx_from_aligned_with_a_passing_dkim_signature(
    site: ServerThread,
    pki: support.TestPKI,
    client_certs: dict[str, tuple[Path, Path]],
    signing_key: dkimlib.KeyPair,
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    # d=signing.test: the From's own domain, then a parent of it (relaxed alignment); the envelope is clinique.test
    assert s.sendmail(SENDER, [PRO], signed(plain(f"dr.foreman@{SIGNING}", PRO, f"{tag}-a"), signing_key)) == {}
    assert s.sendmail(SENDER, [PRO], signed(plain(f"dr.x@cardio.{SIGNING}", PRO, f"{tag}-b"), signing_key)) == {}
    # a signature that does not verify aligns nothing
    broken = signed(plain(f"dr.foreman@{SIGNING}", PRO, f"{tag}-c"), signing_key).replace(b"Bonjour", b"Bonsoir")
    refused(s, SENDER, PRO, broken, "DKIM")
    # a passing signature of a child domain does not cover its parent (d= must be the From domain or a parent)
    child = dkimlib.sign(
        plain(f"dr.foreman@{SIGNING}", PRO, f"{tag}-d"),
        domain=f"cardio.{SIGNING}",
        selector=SIGNING_SELECTOR,
        private_pem=signing_key.private_pem,
    )
    refused(s, SENDER, PRO, child, "DKIM")
    s.quit()
    assert len(find(site, PRO, f"{tag}-a")) == 1 and len(find(site, PRO, f"{tag}-b")) == 1
    assert copies(site, f"{tag}-c") == 0 and copies(site, f"{tag}-d") == 0


def test_mx_from_in_our_own_domain_is_refused(
    site: ServerThread,
    pki: support.TestPKI,
    client_certs: dict[str, tuple[Path, Path]],
    signing_key: dkimlib.KeyPair,
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    refused(s, SENDER, PATIENT, plain(f"Dr House <{PRO}>", PATIENT, tag), "own domains")
    refused(s, SENDER, PATIENT, plain(f"=?utf-8?q?Dr_House?= <{PRO2}>", PATIENT, tag), "own domains")
    refused(s, SENDER, PATIENT, signed(plain(PRO, PATIENT, tag), signing_key), "own domains")
    s.quit()
    assert copies(site, tag) == 0


def test_mx_display_name_holding_another_address(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    refused(s, SENDER, PATIENT, plain(f'"Dr House <{PRO}>" <{SENDER}>', PATIENT, tag), "display name")
    encoded = f"=?utf-8?q?Dr_House_=3C{PRO.replace('@', '=40')}=3E?= <{SENDER}>"
    refused(s, SENDER, PATIENT, plain(encoded, PATIENT, tag), "own domains")  # decoded, it shows our address
    refused(s, SENDER, PATIENT, plain(f'"dr.foreman@{SIGNING}" <{SENDER}>', PATIENT, tag), "display name")
    assert s.sendmail(SENDER, [PATIENT], plain(f'"{SENDER}" <{SENDER}>', PATIENT, f"{tag}-ok")) == {}
    s.quit()
    assert copies(site, tag) == 1 and len(find(site, PATIENT, f"{tag}-ok")) == 1


def test_mx_null_sender_carries_only_reports_and_never_to_a_patient(
    site: ServerThread, pki: support.TestPKI, client_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    s = mx(site, pki, client_certs[OTHER_DN])
    refused(s, "", PRO, plain(BOUNCER, PRO, tag), "delivery report")
    refused(s, "", PRO, plain(f"Dr Cuddy <{SENDER}>", PRO, tag), "delivery report")
    refused(s, "", PATIENT, report(BOUNCER, PATIENT, tag), "patient")
    refused(s, "", PRO, report(f"Dr House <{PRO}>", PRO, tag), "own domains")
    refused(s, "", PRO, report("MAILER-DAEMON@elsewhere.test", PRO, tag), "envelope sender's domain")
    # a delivery report to a professional, from the operator the certificate is listed for: accepted
    assert s.sendmail("", [PRO], report(BOUNCER, PRO, f"{tag}-ok")) == {}
    s.quit()
    assert copies(site, tag) == 1 and len(find(site, PRO, f"{tag}-ok")) == 1


# --- submission ---------------------------------------------------------------------------------------------------


def test_submission_from_checked_after_decoding_and_resent(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    only_word = f"=?utf-8?q?{PRO2.replace('@', '=40')}?="
    refused(s, PRO, PRO2, plain(only_word, PRO2, tag), "your own address")
    refused(s, PRO, PRO2, plain(f"=?utf-8?b?RHIgV2lsc29u?= <{PRO2}>", PRO2, tag), "your own address")
    refused(s, PRO, PRO2, plain(PRO, PRO2, tag, f"Resent-From: {PRO2}"), "Resent-From")
    refused(s, PRO, PRO2, plain(PRO, PRO2, tag, f"Resent-Sender: <{PRO2}>"), "Resent-From")
    refused(s, PRO, PRO2, plain(PRO, PRO2, tag, f"Sender: =?utf-8?q?{PRO2.replace('@', '=40')}?="), "own address")
    s.quit()
    assert copies(site, tag) == 0


def test_submission_missing_from_is_refused_not_completed(site: ServerThread, pki: support.TestPKI) -> None:
    """The choice made in ``policies.origin``: a message without From is refused; the server writes no From."""
    tag = marker()
    s = submission(site, pki, PRO)
    refused(s, PRO, PRO2, raw(f"To: {PRO2}", f"Subject: {tag}"), "no From")
    refused(s, PRO, PRO2, raw("From: Dr House", f"To: {PRO2}", f"Subject: {tag}"), "no From")  # no address in it
    s.quit()
    assert copies(site, tag) == 0


def test_submission_display_name_holding_another_address(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    refused(s, PRO, PATIENT, plain(f'"{PRO2}" <{PRO}>', PATIENT, tag), "display name")
    refused(s, PRO, PATIENT, plain(f'"Dr Wilson <{PRO2}>" <{PRO}>', PATIENT, tag), "display name")
    assert s.sendmail(PRO, [PATIENT], plain(f'"{PRO}" <{PRO}>', PATIENT, f"{tag}-a")) == {}
    assert (
        s.sendmail(PRO, [PATIENT], plain(f"=?utf-8?q?Dr_H=C3=A9l=C3=A8ne_House?= <{PRO}>", PATIENT, f"{tag}-b")) == {}
    )
    assert s.sendmail(PRO, [PATIENT], plain(PRO, PATIENT, f"{tag}-c", f"Resent-From: {PRO}")) == {}
    s.quit()
    assert copies(site, tag) == 3
