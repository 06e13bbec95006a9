"""Originator rules, pure (``policies.origin``), on the values admission reads from one ``ParsedMessage``."""

from __future__ import annotations

from mailserver.admission import originator
from mailserver.message import parse_message
from policies import origin as O
from policies import reply as R

OWN = "dr.house@hopital.test"


def origin(*headers: str, content_type: str | None = None) -> O.Originator:
    fields = [*headers, *([f"Content-Type: {content_type}"] if content_type else [])]
    body = "--b\r\n\r\nBonjour.\r\n--b--\r\n" if content_type else "Bonjour.\r\n"
    return originator(parse_message(("\r\n".join(fields) + "\r\n\r\n" + body).encode()))


def mx(o: O.Originator, envelope: str | None = "clinique.test", **kw: object) -> str:
    args: dict[str, object] = {
        "envelope_domain": envelope,
        "peer_domains": ["clinique.test"],
        "dkim_pass": [],
        "local_domains": [],
        "to_patient": False,
    }
    args.update(kw)
    d = O.check_mx(o, **args)  # type: ignore[arg-type]
    return d.reason if not d.allowed else "ok"


def test_alignment_is_relaxed_towards_the_parent_only() -> None:
    assert O.aligned("cardio.signing.test", "signing.test") and O.aligned("signing.test", "SIGNING.test")
    assert not O.aligned("signing.test", "cardio.signing.test") and not O.aligned("xsigning.test", "signing.test")
    assert not O.aligned("signing.test", "")


def test_mx_from_domain() -> None:
    assert mx(origin("From: Dr Cuddy <dr.cuddy@clinique.test>")) == "ok"
    assert mx(origin("From: dr.x@signing.test")) == "from-not-aligned"
    assert mx(origin("From: dr.x@signing.test"), dkim_pass=["signing.test"]) == "ok"
    assert mx(origin("From: dr.x@hopital.test"), local_domains=["hopital.test"]) == "from-local-domain"
    assert mx(origin("From: a@clinique.test, b@elsewhere.test")) == "from-not-aligned"  # every From mailbox


def test_mx_null_sender() -> None:
    report = "multipart/report; report-type=delivery-status; boundary=b"
    assert mx(origin("From: MAILER-DAEMON@mx.clinique.test", content_type=report), None) == "ok"
    assert mx(origin("From: MAILER-DAEMON@mx.clinique.test"), None) == "null-sender-not-a-report"
    assert mx(origin("From: x@mx.clinique.test", content_type="multipart/report; report-type=x; boundary=b"), None) == (
        "null-sender-not-a-report"
    )
    assert mx(origin("From: m@mx.clinique.test", content_type=report), None, to_patient=True) == (
        "null-sender-to-patient"
    )
    assert mx(origin("From: m@elsewhere.test", content_type=report), None) == "from-not-aligned"


def test_submitted() -> None:
    def sub(*headers: str) -> str:
        d = O.check_submitted(origin(*headers), OWN)
        return d.reply.text if not d.allowed else "ok"

    assert sub(f"From: Dr House <{OWN}>") == "ok"
    assert sub(f"From: =?utf-8?q?Dr_H=C3=A9l=C3=A8ne?= <{OWN}>", f"Resent-From: {OWN}") == "ok"
    assert sub("From: =?utf-8?q?dr.wilson=40hopital.test?=") == R.FROM_NOT_OWNED.text
    assert sub("Subject: no from") == R.FROM_MISSING.text
    assert sub("From: Dr House") == R.FROM_MISSING.text
    assert sub(f"From: {OWN.upper()}") == "ok"  # addresses compare without case
    assert sub("From: patient@patient.test") == R.FROM_NOT_OWNED.text
    assert sub(f"From: {OWN}", "Sender: secretariat@hopital.test") == R.FROM_NOT_OWNED.text
    assert R.FROM_NOT_OWNED.text.startswith("The From and Sender")
    assert sub(f"From: {OWN}", "Resent-From: dr.wilson@hopital.test") == R.RESENT_NOT_OWNED.text
    assert sub(f'From: "dr.wilson@hopital.test" <{OWN}>') == R.DISPLAY_NAME_ADDRESS.text
    assert sub(f'From: "{OWN}" <{OWN}>') == "ok"
