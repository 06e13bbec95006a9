"""Content rules, pure: attachment types, executables wherever they hide, XDM packages, [FIN], APPEND origin."""

from __future__ import annotations

import io
import zipfile

import pytest

from mailserver.message import parse_message
from policies import content as C
from tests.directory.messages import make_message, with_attachments, xdm_zip


def inspect(raw: bytes) -> C.Content:
    """What the policies read, as the message model (the one MIME parser) builds it."""
    return parse_message(raw).content


INS = "279035121518989"
OTHER = "185077505612323"
PRO = "dr.house@hopital.test"
PAT = f"{INS}@patient.masante.fr"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


def decide(raw: bytes, ins: str | None = INS) -> tuple[str, str]:
    content = inspect(raw)
    a = C.check_attachments(content)
    if not a.allowed:
        return str(a.reply), a.reason
    x = C.check_xdm(content, ins)
    return str(x.reply), x.reason


@pytest.mark.parametrize(
    ("filename", "ctype", "data"),
    [
        ("compte-rendu.pdf", "application/pdf", PDF),
        ("cr.pdf", "application/octet-stream", PDF),  # judged by its extension
        ("cda.xml", "text/xml", b"<ClinicalDocument xmlns='urn:hl7-org:v3'/>"),
        ("radio.png", "image/png", PNG),
        ("scanner.dcm", "application/octet-stream", b"\0" * 128 + b"DICM"),
        ("irm.dcm", "application/dicom", b"\0" * 128 + b"DICM"),
        ("notes.txt", "text/plain", b"tension 12/8"),
        ("rdv.ics", "text/calendar", b"BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"),
        ("IHE_XDM.ZIP", "application/zip", xdm_zip(INS)),
    ],
)
def test_health_documents_pass(filename: str, ctype: str, data: bytes) -> None:
    raw = with_attachments(PRO, PAT, "Résultats", [(filename, ctype, data)])
    reply, reason = decide(raw)
    assert reason in ("no-xdm", "xdm-ok"), reply


@pytest.mark.parametrize(
    ("filename", "ctype", "data", "why"),
    [
        ("setup.exe", "application/octet-stream", b"MZ\x90\x00", "file name setup.exe"),
        ("facture.pdf.exe", "application/pdf", PDF, "file name facture.pdf.exe"),
        ("photo.pdf", "application/pdf", b"MZ\x90\x00\x03", "content of photo.pdf"),  # PE bytes behind a PDF name
        ("lire.txt", "text/plain", b"#!/bin/sh\nrm -rf ~\n", "content of lire.txt"),
        ("a.dat", "application/x-msdownload", b"\0", "type application/x-msdownload"),
        ("tool", "application/octet-stream", b"\x7fELF\x02\x01", "content of tool"),
        ("run.js", "text/plain", b"alert(1)", "file name run.js"),
        ("docs.zip", "application/zip", None, "virus.exe inside docs.zip"),
    ],
)
def test_executables_are_refused_wherever_they_hide(filename: str, ctype: str, data: bytes | None, why: str) -> None:
    if data is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("lisezmoi.txt", "ok")
            z.writestr("dossier/virus.exe", b"MZ")
        data = buf.getvalue()
    reply, reason = decide(with_attachments(PRO, PAT, "Docs", [(filename, ctype, data)]))
    assert reason == "executable-attachment"
    assert reply.startswith("550 5.7.1 Executable attachments are refused") and why in reply


@pytest.mark.parametrize(
    ("filename", "ctype"),
    [
        ("tableur.xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
        ("courrier.docx", "application/octet-stream"),
        ("inconnu", "application/octet-stream"),
        ("son.mp3", "audio/mpeg"),
    ],
)
def test_other_types_are_refused(filename: str, ctype: str) -> None:
    reply, reason = decide(with_attachments(PRO, PAT, "Docs", [(filename, ctype, b"data")]))
    assert reason == "attachment-type-refused"
    assert reply.startswith("554 5.6.1 Attachments of type") and filename in reply


def test_allowed_types_are_configurable() -> None:
    raw = with_attachments(PRO, PAT, "Son", [("son.mp3", "audio/mpeg", b"ID3")])
    content = inspect(raw)
    assert not C.check_attachments(content).allowed
    assert C.check_attachments(content, ["audio/*"]).allowed
    assert not C.check_attachments(content, ["image/*"]).allowed


def test_plain_and_structural_messages_pass() -> None:
    assert decide(make_message(PRO, PAT, "Bonjour", "Texte seul")) == ("250 2.1.5 Recipient OK", "no-xdm")
    inner = make_message(PRO, PAT, "Transféré", "original")
    raw = with_attachments(PRO, PAT, "Fwd", [("orig.eml", "message/rfc822", inner)])
    assert decide(raw)[1] == "no-xdm"


def test_xdm_must_name_the_recipient() -> None:
    ok = with_attachments(PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", xdm_zip(INS))])
    assert decide(ok)[1] == "xdm-ok"
    assert decide(ok, ins=None)[1] == "xdm-ok"  # a professional recipient: one patient, whoever it is
    wrong = with_attachments(PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", xdm_zip(OTHER))])
    reply, reason = decide(wrong)
    assert reason == "xdm-other-patient" and reply.startswith("550 5.7.1") and "patientId" in reply
    mixed = with_attachments(
        PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", xdm_zip(INS, document_patient=OTHER))]
    )
    assert decide(mixed)[1] == "xdm-several-patients"
    assert decide(mixed, ins=None)[1] == "xdm-several-patients"
    two = with_attachments(
        PRO,
        PAT,
        "XDM",
        [("a.zip", "application/zip", xdm_zip(INS)), ("b.zip", "application/zip", xdm_zip(OTHER))],
    )
    assert decide(two)[1] == "xdm-several-patients"


def test_xdm_ids_compare_case_insensitively_for_corsica() -> None:
    corsican = "253072A07300443"
    raw = with_attachments(PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", xdm_zip(corsican.lower()))])
    assert decide(raw, ins=corsican)[1] == "xdm-ok"


def test_unreadable_xdm_is_refused() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", "<not-closed")
    raw = with_attachments(PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", buf.getvalue())])
    reply, reason = decide(raw)
    assert reason == "xdm-unreadable" and reply.startswith("550 5.6.0")


def test_xdm_metadata_with_entities_is_refused() -> None:
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("IHE_XDM/SUBSET01/METADATA.XML", bomb)
    raw = with_attachments(PRO, PAT, "XDM", [("IHE_XDM.ZIP", "application/zip", buf.getvalue())])
    assert decide(raw)[1] == "xdm-unreadable"


def test_a_damaged_zip_is_not_an_xdm_package() -> None:
    raw = with_attachments(PRO, PAT, "zip", [("docs.zip", "application/zip", b"PK\x03\x04garbage")])
    assert decide(raw)[1] == "no-xdm"


@pytest.mark.parametrize(
    ("subject", "headers", "ends"),
    [
        ("[FIN]", {}, True),
        ("  [FIN] ", {}, True),
        ("=?utf-8?q?=5BFIN=5D?=", {}, True),  # encoded words are decoded first
        ("Re: [FIN]", {}, False),
        ("[FIN] merci", {}, False),
        ("[fin]", {}, False),
        ("Suivi", {"X_MSS_MES": "FIN"}, True),
        ("Suivi", {"X_MSS_MES": "fin"}, True),
        ("Suivi", {"X_MSS_MES": "SUITE"}, False),
    ],
)
def test_end_of_conversation(subject: str, headers: dict[str, str], ends: bool) -> None:
    raw = make_message(PRO, PAT, subject, "fin du suivi", **headers)
    assert inspect(raw).ends_conversation is ends
    assert inspect(raw).ends_conversation is ends


def test_reply_to_and_from_are_read() -> None:
    raw = make_message(PRO, PAT, "x", "y", Reply_To="Secrétariat <Secretariat@Hopital.test>, autre@x.test")
    head = inspect(raw)
    assert head.reply_to == ("secretariat@hopital.test", "autre@x.test")
    assert head.from_ == (PRO,)


def test_a_patient_stores_only_their_own_messages() -> None:
    own = inspect(make_message(PAT, PRO, "brouillon", "..."))
    assert C.check_own_message(own, PAT).allowed
    forged = inspect(make_message(PRO, PAT, "Résultats normaux", "faux"))
    d = C.check_own_message(forged, PAT)
    assert not d.allowed and str(d.reply).startswith("550 5.7.1 A patient can only store")
    sender = inspect(make_message(PAT, PRO, "x", "y", Sender=PRO))
    assert not C.check_own_message(sender, PAT).allowed
    nofrom = inspect(b"Subject: note\r\n\r\nmes notes\r\n")
    assert C.check_own_message(nofrom, PAT).allowed


def test_size() -> None:
    assert C.check_size(10, 10, who="x").allowed
    d = C.check_size(25 * 2**20 + 1, 25 * 2**20, who="a patient's mailbox")
    assert str(d.reply) == "552 5.3.4 Message too big: a patient's mailbox accepts at most 25 MB"


def test_safe_name_keeps_replies_on_one_line() -> None:
    assert C.safe_name("a\r\nb.exe") == "a__b.exe"
    assert len(C.safe_name("x" * 500)) == 60


@pytest.mark.parametrize(
    ("subject", "headers", "is_reply"),
    [
        ("Re: vos résultats", {}, True),
        ("RE : vos résultats", {}, True),  # French clients put a space before the colon
        ("Réf : ordonnance", {}, True),
        ("AW: Befund", {}, True),
        ("Re[2]: suivi", {}, True),
        ("Question", {"In_Reply_To": "<a1@hopital.test>"}, True),
        ("Question", {"References": "<a1@hopital.test>"}, True),
        ("Question", {}, False),
        ("Regarding my results", {}, False),
        ("", {}, False),
    ],
)
def test_what_counts_as_a_reply(subject: str, headers: dict[str, str], is_reply: bool) -> None:
    raw = make_message(PAT, PRO, subject, "merci", **headers)
    assert inspect(raw).is_reply is is_reply
    assert inspect(raw).is_reply is is_reply


def test_a_patient_answers_but_does_not_write_anew() -> None:
    new = inspect(make_message(PAT, PRO, "Question", "puis-je ?"))
    refused = C.check_patient_reply(new, may_write_first=False)
    assert not refused.allowed and str(refused.reply).startswith("550 5.7.1 A patient may only answer")
    assert C.check_patient_reply(new, may_write_first=True).allowed  # a pharmacist may be written to first
    assert C.check_patient_reply(inspect(make_message(PAT, PRO, "Re: Question", "oui")), may_write_first=False).allowed
