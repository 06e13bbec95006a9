"""Message disposition notifications in the ANS layout (issue 13 point 5), end to end.

A professional submits to a patient a message asking for an MDN (``Disposition-Notification-To``); the
patient's IMAP client sets ``$MDNSent`` and the server sends the read receipt, once, to the writer only,
within the trust space. A package the patient's vault cannot integrate is delivered unfiled and told by an
automatic MDN (``processed/Error``). Every MDN is read back with the standard library's ``email``.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import imaplib
import smtplib
import uuid
from email.message import EmailMessage, Message

import pytest

from mailserver import mdn
from mailserver.context import Context
from mailserver.message import parse_message
from mailserver.smtp import spool
from tests import support
from tests.directory.messages import CDA, with_attachments, xdm_zip
from tests.harness.messages import crlf, message
from tests.smtp.conftest import OTHER, PATIENT, PRO, PRO2
from tests.smtp.harness import ServerThread, copies, find, submission
from tests.vault.test_filing import IMAGING, PDF, imap, where

SECRET = "Contenu medical confidentiel"


def ask(marker: str, *, dnt: str | None = PRO, subject: str = "Résultats", **headers: str) -> bytes:
    more = {"Disposition_Notification_To": dnt} if dnt is not None else {}
    return message(
        PRO, PATIENT, subject, f"{SECRET} {marker}\n", message_id=f"<{marker}@hopital.test>", **more, **headers
    )


def send(site: ServerThread, pki: support.TestPKI, raw: bytes) -> None:
    with submission(site, pki, PRO) as s:
        assert s.sendmail(PRO, [PATIENT], raw) == {}


def store(site: ServerThread, pki: support.TestPKI, marker: str, how: str, flags: str = "($MDNSent)") -> bytes:
    with imap(site, pki) as m:
        m.select("INBOX")
        (uid,) = search_rw(m, marker)
        typ, data = m.uid("STORE", uid.decode(), how, flags)
        assert typ == "OK", data
        return bytes(data[0]) if data and isinstance(data[0], bytes) else b""


def search_rw(m: imaplib.IMAP4, marker: str) -> list[bytes]:
    typ, data = m.uid("SEARCH", "HEADER", "Message-ID", marker)
    assert typ == "OK"
    return data[0].split()


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def report(msg: EmailMessage) -> tuple[list[EmailMessage], Message]:
    """The three parts of an MDN in the ANS layout, and its ``message/disposition-notification`` fields."""
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "disposition-notification"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts][:2] == ["text/plain", "message/disposition-notification"]
    (fields,) = parts[1].get_payload()
    return parts, fields


def mdns(site: ServerThread, address: str, marker: str) -> list[EmailMessage]:
    return [m for m in map(parsed, find(site, address, marker)) if m.get_content_type() == "multipart/report"]


def test_the_patient_s_client_asks_once_and_the_writer_gets_one_read_receipt(
    site: ServerThread, pki: support.TestPKI
) -> None:
    marker = uuid.uuid4().hex
    send(site, pki, ask(marker, subject="Résultats =?utf-8?q?x=0D=0AX-Injected=3A_yes?="))
    assert mdns(site, PRO, marker) == []  # asked for, but the patient's client has said nothing yet

    store(site, pki, marker, "+FLAGS", "(\\Seen $MDNSent)")
    (receipt,) = mdns(site, PRO, marker)
    parts, fields = report(receipt)
    assert parts[2].get_content_type() == "text/rfc822-headers"
    assert fields["Final-Recipient"] == f"rfc822;{PATIENT}"
    assert fields["Original-Message-ID"] == f"<{marker}@hopital.test>"
    assert fields["Disposition"] == "manual-action/MDN-sent-manually; displayed"
    assert fields["Reporting-UA"].endswith("; masante-mail")
    assert (receipt["To"], receipt["From"]) == (PRO, PATIENT)
    assert receipt["In-Reply-To"] == f"<{marker}@hopital.test>"
    text = parts[0].get_content()
    assert "Résultats" in text and "displayed" in text and "affiché" in text
    assert SECRET not in receipt.as_string()  # the original's header only, never its body
    every_field = [k.lower() for p in (receipt, *parts, fields) for k in p]
    assert "x-injected" not in every_field  # a CR LF in the subject started no field

    # the keyword stays, and setting it again (or other flags) sends nothing more
    assert b"$MDNSent" in store(site, pki, marker, "-FLAGS")
    store(site, pki, marker, "FLAGS", "(\\Flagged)")
    store(site, pki, marker, "+FLAGS")
    assert len(mdns(site, PRO, marker)) == 1
    assert len(site.audit("mdn.send")) >= 1


def test_no_read_receipt_without_disposition_notification_to(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    send(site, pki, ask(marker, dnt=None))
    store(site, pki, marker, "+FLAGS")
    assert mdns(site, PRO, marker) == []
    assert copies(site, marker) == 1  # the patient's copy, nothing queued


def test_a_read_receipt_goes_only_to_who_wrote_and_only_within_the_trust_space(
    site: ServerThread, pki: support.TestPKI
) -> None:
    third_party = uuid.uuid4().hex
    send(site, pki, ask(third_party, dnt=PRO2))  # a colleague who did not write the message
    store(site, pki, third_party, "+FLAGS")
    assert copies(site, third_party) == 1

    outside = uuid.uuid4().hex
    stranger = "someone@outside.example"
    send(site, pki, ask(outside, dnt=stranger, Reply_To=stranger))
    store(site, pki, outside, "+FLAGS")
    assert copies(site, outside) == 1  # outside the trust space: not delivered, not queued

    other = uuid.uuid4().hex
    colleague = f"secretariat@{OTHER}"
    send(site, pki, ask(other, dnt=colleague, Reply_To=colleague))
    store(site, pki, other, "+FLAGS")

    async def queued(ctx: Context) -> list[tuple[str, str, bytes]]:
        async with ctx.uow(readonly=True) as uow:
            rows = await uow.queue.list()
            return [(q.mail_from, q.rcpt_to, spool.open_body(ctx.keyring, q)) for q in rows]

    (row,) = [r for r in site.call(queued) if other.encode() in r[2]]
    assert row[:2] == ("", colleague)  # the null reverse-path, to the trust-space operator
    _, fields = report(parsed(row[2]))
    assert fields["Disposition"] == "manual-action/MDN-sent-manually; displayed"


def test_a_package_the_vault_cannot_integrate_is_delivered_and_told_by_an_automatic_mdn(
    site: ServerThread, pki: support.TestPKI
) -> None:
    marker = uuid.uuid4().hex
    package = xdm_zip(support.PATIENT_INS, documents=[(CDA, {}), (PDF, {**IMAGING, "sha1": "0" * 40})])
    raw = crlf(
        with_attachments(
            PRO,
            PATIENT,
            f"XDM/1.0/DDM+CR {marker}",
            [("IHE_XDM.ZIP", "application/zip", package)],
            message_id=f"<{marker}@hopital.test>",
            Disposition_Notification_To=PRO,
        )
    )
    send(site, pki, raw)
    with imap(site, pki) as m:
        counts = where(m, marker)
    assert counts["INBOX"] == 1 and sum(counts.values()) == 1  # delivered, nothing filed

    (notice,) = mdns(site, PRO, marker)
    parts, fields = report(notice)
    assert notice["Subject"] == f"[KO Intégration système !][207] XDM/1.0/DDM+CR {marker}"
    assert fields["Disposition"].startswith("automatic-action/MDN-sent-automatically; processed/Error: 207^")
    assert "IHE_XDM.ZIP" in fields["Error"] and "does not match the hash" in fields["Error"]
    assert fields["Final-Recipient"] == f"rfc822;{PATIENT}"
    assert fields["Original-Message-ID"] == f"<{marker}@hopital.test>"
    assert parts[2].get_content_type() == "message/rfc822"  # the original, for the sender to resubmit
    assert "intégré" in parts[0].get_content()
    assert notice["Auto-Submitted"] == "auto-replied"


def test_a_package_for_another_patient_is_still_refused_though_an_mdn_is_asked(
    site: ServerThread, pki: support.TestPKI
) -> None:
    marker = uuid.uuid4().hex
    package = xdm_zip(support.OTHER_INS, documents=[(CDA, {}), (PDF, {**IMAGING, "sha1": "0" * 40})])
    raw = crlf(
        with_attachments(
            PRO,
            PATIENT,
            "CR",
            [("IHE_XDM.ZIP", "application/zip", package)],
            message_id=f"<{marker}@hopital.test>",
            Disposition_Notification_To=PRO,
        )
    )
    with submission(site, pki, PRO) as s, pytest.raises(smtplib.SMTPDataError) as refused:
        s.sendmail(PRO, [PATIENT], raw)
    assert refused.value.smtp_code == 550
    assert copies(site, marker) == 0


def test_values_from_the_network_cannot_start_a_field() -> None:
    raw = crlf(
        message(
            PRO,
            PATIENT,
            "=?utf-8?q?a=0D=0AX-Evil=3A_1?=",
            message_id="<id@h>",
            Original_Recipient="rfc822;=?utf-8?q?x=0D=0AX-Evil2=3A_1?=@h",
        )
    )
    original = parse_message(raw)
    note = mdn.Notification(PATIENT, "manual-action/MDN-sent-manually; displayed", error="207^a\r\nX-Evil3: 1")
    built = mdn.build(note, original=original, to=PRO, hostname="mx.test", now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    msg = parsed(built)
    parts, fields = report(msg)
    assert {k.lower() for k in (*msg.keys(), *fields.keys())}.isdisjoint({"x-evil", "x-evil2", "x-evil3"})
    assert fields["Original-Recipient"].startswith("rfc822;")
    assert fields["Error"] == "207^a X-Evil3: 1"
