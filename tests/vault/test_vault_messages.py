"""The vault messages ``mailserver.vault`` builds from a parsed message, pure: folders, headers, what is filed."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib

from mailserver import vault
from mailserver.message import parse_message
from tests.directory.messages import CDA, with_attachments, xdm_zip
from tests.harness.messages import crlf

INS = "279035121518989"
PRO = "dr.house@hopital.test"
PAT = f"{INS}@patient.test"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
WHEN = dt.datetime(2026, 12, 2, 8, 0, tzinfo=dt.UTC)


def filed(*attachments: tuple[str, str, bytes], **headers: str) -> list[vault.Filing]:
    raw = crlf(with_attachments(PRO, PAT, "Documents", list(attachments), **headers))
    return vault.filings(parse_message(raw), when=WHEN)


def test_a_loose_cda_is_filed_by_its_own_code() -> None:
    (f,) = filed(("cr.xml", "text/xml", CDA))
    assert f.mailbox == "Documents/Resultats"
    assert f.message.get("x-document-type") == "11502-2"
    assert f.message.get("x-document-author") == PRO
    assert f.message.get("x-document-date") == "Wed, 02 Dec 2026 08:00:00 +0000"  # no creation time: received


def test_calendars_archives_and_bodies_are_not_documents() -> None:
    ics = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    assert filed(("invite.ics", "text/calendar", ics)) == []
    assert filed() == []


def test_each_document_once_even_when_attached_twice() -> None:
    package = xdm_zip(INS, documents=[(PDF, {"uri": "DOC0001.PDF", "mime": "application/pdf"})])
    found = filed(
        ("IHE_XDM.ZIP", "application/zip", package),
        ("a.pdf", "application/pdf", PDF),
        ("b.pdf", "application/pdf", PDF),
    )
    assert [f.mailbox for f in found] == ["Documents/Resultats"]  # by the package's type code, not as a loose PDF


def test_metadata_cannot_inject_header_fields() -> None:
    package = xdm_zip(INS, documents=[(CDA, {"title": "CR&#13;&#10;Bcc: victim@example.test"})])
    (f,) = filed(("IHE_XDM.ZIP", "application/zip", package))
    assert not f.message.has("bcc")
    assert f.message.get("subject") == "Document : CR Bcc: victim@example.test"


def test_the_original_fields_and_mss_headers_are_copied() -> None:
    (f,) = filed(("cr.pdf", "application/pdf", PDF), X_MSS_INS="O", X_MSS_NIL="NIL-1", X_Other="no")
    m = f.message
    assert (m.get("x-mss-ins"), m.get("x-mss-nil"), m.get("x-other")) == ("O", "NIL-1", None)
    assert m.get("from") == PRO and m.get("to") == PAT and m.get("date")
    assert m.count("message-id") == 1 and m.count("date") == 1


def test_hl7_times() -> None:
    assert vault.hl7_time("20261201093000") == dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    assert vault.hl7_time("20261201") == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert vault.hl7_time("20261341") is None and vault.hl7_time("soon") is None


def test_an_upload_drops_the_labels_a_client_wrote() -> None:
    raw = crlf(
        with_attachments(
            PAT,
            PAT,
            "mine",
            [("x.png", "image/png", b"\x89PNG\r\n\x1a\n")],
            X_Document_Author="Dr Faux",
            X_Document_Type="57833-6 faux",
        )
    )
    sent = parse_message(raw)
    up = vault.upload(sent, when=WHEN)
    assert up.values("x-document-author") == ["patient"] and not up.has("x-document-type")
    assert up.raw[up.header_end :] == sent.raw[sent.header_end :]  # the body as sent, byte for byte


def test_a_document_sent_as_octet_stream_is_judged_by_its_name() -> None:
    (f,) = filed(
        ("radio.png", "application/octet-stream", b"\x89PNG\r\n\x1a\n"),
        ("x.zip", "application/octet-stream", b"PK\x05\x06" + b"\0" * 18),
    )
    assert f.mailbox == "Documents/Imagerie" and f.document.content_type == "image/png"


def test_the_filed_document_is_the_one_sent_in_76_column_base64_with_its_name() -> None:
    big = PDF + bytes(range(256)) * 2000  # past one line of base64, every octet value
    (f,) = filed(("compte-rendu é.pdf", "application/pdf", big))
    m = email.message_from_bytes(f.message.raw, policy=email.policy.default)
    (part,) = [p for p in m.iter_attachments()]
    assert part.get_content() == big and part.get_filename() == "compte-rendu é.pdf"
    assert part.get_content_type() == "application/pdf"
    assert f.message.get("x-document-hash") == f"sha256:{hashlib.sha256(big).hexdigest()}"
    body = f.message.raw[f.message.raw.index(b"base64\r\n") :]
    lines = body.split(b"\r\n")
    assert max(len(line) for line in lines) <= 76  # RFC 2045 §6.8
    assert b"\n" not in f.message.raw.replace(b"\r\n", b"")  # CRLF only
