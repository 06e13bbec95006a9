"""Filing on delivery, end to end: a professional submits over SMTP, the patient reads over IMAP.

An XDM package holding a CDA and a PDF, plus the PDF on its own (its companion): the
patient sees the message in INBOX and each document once, in the right ``Documents/``
child, with its metadata as headers any IMAP client can SEARCH. A package that
cannot be filed is refused at DATA with the reason, and nothing is stored.
"""

from __future__ import annotations

import email
import hashlib
import imaplib
import io
import smtplib
import uuid
import zipfile
from email.message import Message

import pytest

from mailserver.context import Context
from tests import support
from tests.directory.messages import CDA, with_attachments, xdm_zip
from tests.harness.messages import crlf
from tests.smtp.conftest import PATIENT, PRO
from tests.smtp.harness import ServerThread, copies, submission, tls_client
from tests.vault.test_xdm import encrypted, zip_of

PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
IMAGING = {
    "uri": "DOC0002.PDF",
    "mime": "application/pdf",
    "title": "CR d'imagerie",
    "type_code": "18748-4",
    "type_name": "CR d'imagerie médicale",
}
VAULT = (
    "Documents/Comptes-rendus",
    "Documents/Resultats",
    "Documents/Ordonnances",
    "Documents/Imagerie",
    "Documents/Autres",
)


def package_message(marker: str, package: bytes, *more: tuple[str, str, bytes]) -> bytes:
    return crlf(
        with_attachments(
            PRO,
            PATIENT,
            f"XDM/1.0/DDM+CR {marker}",
            [("IHE_XDM.ZIP", "application/zip", package), *more],
            message_id=f"<{marker}@hopital.test>",
            X_MSS_NIL="NIL-TEST-0001",
            X_MSS_CODECDA="11502-2,18748-4",
        )
    )


def imap(site: ServerThread, pki: support.TestPKI) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", site.port("imaps"), ssl_context=tls_client(pki), timeout=30)
    m.login(PATIENT, support.PASSWORD)
    return m


def search(m: imaplib.IMAP4, mailbox: str, *criteria: str) -> list[bytes]:
    typ, _ = m.select(f'"{mailbox}"', readonly=True)
    assert typ == "OK", mailbox
    typ, data = m.uid("SEARCH", *criteria)
    assert typ == "OK"
    return data[0].split()


def fetch(m: imaplib.IMAP4, uid: bytes) -> Message:
    typ, data = m.uid("FETCH", uid.decode(), "(BODY.PEEK[])")
    assert typ == "OK" and isinstance(data[0], tuple)
    return email.message_from_bytes(data[0][1])


def where(m: imaplib.IMAP4, marker: str) -> dict[str, int]:
    """How many messages from the message ``marker`` each mailbox holds."""
    out = {"INBOX": len(search(m, "INBOX", "HEADER", "Message-ID", marker))}
    for box in VAULT:
        out[box] = len(search(m, box, "HEADER", "X-Document-Source", marker))
    return out


def test_a_package_and_its_companion_are_filed_once_each_with_their_metadata(
    site: ServerThread, pki: support.TestPKI
) -> None:
    marker = uuid.uuid4().hex
    package = xdm_zip(support.PATIENT_INS, documents=[(CDA, {}), (PDF, IMAGING)])
    raw = package_message(marker, package, ("cr-imagerie.pdf", "application/pdf", PDF))
    with submission(site, pki, PRO) as s:
        assert s.sendmail(PRO, [PATIENT], raw) == {}

    with imap(site, pki) as m:
        assert where(m, marker) == {
            "INBOX": 1,
            "Documents/Comptes-rendus": 0,
            "Documents/Resultats": 1,
            "Documents/Ordonnances": 0,
            "Documents/Imagerie": 1,
            "Documents/Autres": 0,  # the companion PDF is the package's: filed once
        }
        (inbox_uid,) = search(m, "INBOX", "HEADER", "Message-ID", marker)
        original = fetch(m, inbox_uid)
        assert original["X-MSS-NIL"] == "NIL-TEST-0001" and original["X-Document-Type"] is None

        found = search(m, "Documents/Resultats", "HEADER", "X-Document-Type", "11502-2")
        assert found == search(m, "Documents/Resultats", "HEADER", "X-Document-Source", marker)
        cr = fetch(m, found[0])
        assert cr["X-Document-Type"] == "11502-2 CR d'examens biologiques"
        assert cr["X-Document-Class"] == "10 Compte rendu"
        assert cr["X-Document-Author"] == "Gregory HOUSE, Laboratoire Test"
        assert cr["X-Document-Date"] == "Tue, 01 Dec 2026 09:30:00 +0000"
        assert cr["X-Document-Source"] == f"<{marker}@hopital.test>"
        assert cr["X-Document-Hash"] == f"sha256:{hashlib.sha256(CDA).hexdigest()}"
        assert (cr["X-MSS-NIL"], cr["X-MSS-CODECDA"], cr["From"]) == ("NIL-TEST-0001", "11502-2,18748-4", PRO)
        text, document = cr.get_payload()
        assert "CR de biologie" in text.get_payload(decode=True).decode()
        assert document.get_filename() == "DOC0001.XML" and document.get_payload(decode=True) == CDA

        (img_uid,) = search(m, "Documents/Imagerie", "HEADER", "X-Document-Type", "18748-4")
        img = fetch(m, img_uid)
        assert email.header.make_header(email.header.decode_header(img["X-Document-Type"])).__str__() == (
            "18748-4 CR d'imagerie médicale"
        )
        assert img.get_payload()[1].get_payload(decode=True) == PDF


def test_a_loose_pdf_goes_to_autres_and_an_image_to_imagerie(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    png = b"\x89PNG\r\n\x1a\n" + marker.encode()
    big_pdf = PDF + marker.encode() * 5000  # past PARSE_IN_THREAD: filed from a worker thread
    raw = crlf(
        with_attachments(
            PRO,
            PATIENT,
            "Documents",
            [("courrier.pdf", "application/pdf", big_pdf), ("radio.png", "image/png", png)],
            message_id=f"<{marker}@hopital.test>",
        )
    )
    with submission(site, pki, PRO) as s:
        s.sendmail(PRO, [PATIENT], raw)
    with imap(site, pki) as m:
        counts = where(m, marker)
        assert (counts["INBOX"], counts["Documents/Autres"], counts["Documents/Imagerie"]) == (1, 1, 1)
        (uid,) = search(m, "Documents/Autres", "HEADER", "X-Document-Source", marker)
        pdf = fetch(m, uid)
        assert pdf["X-Document-Author"] == PRO and pdf.get_payload()[1].get_payload(decode=True) == big_pdf


def bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("IHE_XDM/SUBSET01/DOC0001.XML", "w") as f:
        for _ in range(40):
            f.write(b"\0" * 2**20)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("package", "says"),
    [
        (
            xdm_zip(support.PATIENT_INS, documents=[(CDA, {}), (PDF, {**IMAGING, "sha1": "0" * 40})]),
            "the document CR d'imagerie: the file DOC0002.PDF does not match the hash in the metadata",
        ),
        (bomb(), "zip bomb"),
        (xdm_zip(support.PATIENT_INS, extra={"IHE_XDM/SUBSET01/../../../etc/x": b"1"}), "climbs out of the archive"),
        (encrypted(zip_of(("IHE_XDM/SUBSET01/DOC0001.XML", CDA))), "is encrypted"),
    ],
    ids=["hash-mismatch", "bomb", "traversal", "encrypted"],
)
def test_a_package_that_cannot_be_filed_is_refused_at_data(
    site: ServerThread, pki: support.TestPKI, package: bytes, says: str
) -> None:
    marker = uuid.uuid4().hex
    with imap(site, pki) as m:
        before = {box: len(search(m, box, "ALL")) for box in ("INBOX", *VAULT)}
    with submission(site, pki, PRO) as s, pytest.raises(smtplib.SMTPDataError) as refused:
        s.sendmail(PRO, [PATIENT], package_message(marker, package))
    code, text = refused.value.smtp_code, refused.value.smtp_error.decode()
    assert code == 550 and text.startswith("5.6.0") and "IHE_XDM.ZIP" in text and says in text, text
    assert copies(site, marker) == 0
    with imap(site, pki) as m:
        assert {box: len(search(m, box, "ALL")) for box in ("INBOX", *VAULT)} == before


def test_the_inbox_copy_and_the_vault_copies_are_stored_together_or_not_at_all(
    site: ServerThread, pki: support.TestPKI
) -> None:
    """A vault copy that cannot be stored (here its mailbox is gone from under the server) takes the INBOX copy
    with it: the sender is told to try again, and nothing of the message is kept."""
    ins = support.OTHER_INS
    address = f"{ins}@{support.PATIENT_DOMAIN}"

    async def broken_patient(ctx: Context) -> None:
        account = await support.make_patient(ctx, ins)
        async with ctx.uow() as uow:
            box = await uow.mailboxes.get(account.id, "Documents/Resultats")
            assert box is not None
            await uow.mailboxes.delete(box)
            await uow.commit()

    site.call(broken_patient)
    marker = uuid.uuid4().hex
    raw = crlf(
        with_attachments(
            PRO,
            address,
            "CR",
            [("IHE_XDM.ZIP", "application/zip", xdm_zip(ins))],
            message_id=f"<{marker}@hopital.test>",
        )
    )
    with submission(site, pki, PRO) as s, pytest.raises(smtplib.SMTPDataError) as refused:
        s.sendmail(PRO, [address], raw)
    assert refused.value.smtp_code == 451
    assert copies(site, marker) == 0
    with submission(site, pki, PRO) as s:  # without a document, the same patient receives as usual
        s.sendmail(PRO, [address], crlf(with_attachments(PRO, address, "Bonjour", [], message_id=f"<x{marker}@h>")))
    assert copies(site, marker) == 1
