"""The patient files documents too: APPEND into ``Documents/`` from any IMAP client, labelled by the server;
reads and deletions of vault documents audited; what is not a document refused with the reason."""

from __future__ import annotations

import email
import hashlib
import imaplib
import time
import uuid

from tests import support
from tests.directory.messages import with_attachments, xdm_zip
from tests.harness.messages import crlf
from tests.smtp.conftest import PATIENT, PRO
from tests.smtp.harness import ServerThread
from tests.vault.test_filing import PDF, imap, search

OTHER_INS = support.OTHER_INS


def append(m: imaplib.IMAP4, mailbox: str, raw: bytes) -> tuple[str, bytes]:
    typ, data = m.append(f'"{mailbox}"', "", imaplib.Time2Internaldate(time.time()), raw)
    return typ, data[0] or b""


def upload(marker: str, attachments: list[tuple[str, str, bytes]], **headers: str) -> bytes:
    return crlf(
        with_attachments(
            PATIENT, PATIENT, f"Mon document {marker}", attachments, message_id=f"<{marker}@patient.test>", **headers
        )
    )


def test_an_upload_is_stored_with_the_patient_as_author(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    pdf = PDF + marker.encode()
    raw = upload(marker, [("ordonnance.pdf", "application/pdf", pdf)], X_Document_Author="Dr Faux")
    with imap(site, pki) as m:
        typ, data = append(m, "Documents/Ordonnances", raw)
        assert typ == "OK" and b"APPENDUID" in data
        (uid,) = search(m, "Documents/Ordonnances", "HEADER", "Message-ID", marker)
        typ, fetched = m.uid("FETCH", uid.decode(), "(BODY[])")
        assert typ == "OK" and isinstance(fetched[0], tuple)
        stored = email.message_from_bytes(fetched[0][1])
        assert stored.get_all("X-Document-Author") == ["patient"]  # what the client claimed is not kept
        assert " ".join(stored["X-Document-Hash"].split()) == f"sha256:{hashlib.sha256(pdf).hexdigest()}"
        assert stored["X-Document-Date"] and stored["Subject"] == f"Mon document {marker}"
        assert stored.get_payload()[1].get_payload(decode=True) == pdf  # the content as sent
        assert search(m, "Documents/Ordonnances", "HEADER", "X-Document-Author", "patient")

        # reading it is audited, then deleting it
        reads = [e for e in site.audit("vault.read") if e.detail == f"uids {uid.decode()}"]
        assert reads and all(e.actor == PATIENT for e in reads)
        m.select('"Documents/Ordonnances"')
        m.uid("STORE", uid.decode(), "+FLAGS", r"(\Deleted)")
        assert m.expunge()[0] == "OK"
        assert not search(m, "Documents/Ordonnances", "HEADER", "Message-ID", marker)
    deletes = [e for e in site.audit("vault.delete") if e.detail == f"uids {uid.decode()}"]
    assert len(deletes) == 1 and marker not in f"{deletes[0].object_id} {deletes[0].detail}"


def test_moving_a_document_out_of_the_vault_is_a_deletion(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    with imap(site, pki) as m:
        assert append(m, "Documents/Autres", upload(marker, [("a.pdf", "application/pdf", PDF + b"m")]))[0] == "OK"
        (uid,) = search(m, "Documents/Autres", "HEADER", "Message-ID", marker)
        m.select('"Documents/Autres"')
        assert m.uid("MOVE", uid.decode(), "Trash")[0] == "OK"
    assert [e for e in site.audit("vault.delete") if e.detail.startswith(f"uids {uid.decode()} moved to")]


def test_what_is_not_a_document_is_refused_with_the_reason(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    with imap(site, pki) as m:
        before = len(search(m, "Documents/Autres", "ALL"))
        typ, text = append(m, "Documents/Autres", upload(marker, []))
        assert typ == "NO" and b"[CANNOT]" in text and b"carries a document" in text
        typ, text = append(m, "Documents/Autres", upload(marker, [("notes.txt", "text/plain", b"a,b\r\n")]))
        assert typ == "NO" and b"notes.txt of type text/plain is not one" in text
        other = xdm_zip(OTHER_INS)
        typ, text = append(m, "Documents/Autres", upload(marker, [("IHE_XDM.ZIP", "application/zip", other)]))
        assert typ == "NO" and b"another patient" in text
        assert len(search(m, "Documents/Autres", "ALL")) == before
        # INBOX is not the vault: a plain message is fine there
        assert append(m, "INBOX", upload(marker, []))[0] == "OK"


def test_a_professional_cannot_be_the_author_of_a_patient_upload(site: ServerThread, pki: support.TestPKI) -> None:
    raw = crlf(with_attachments(PRO, PATIENT, "faux", [("a.pdf", "application/pdf", PDF)]))
    with imap(site, pki) as m:
        typ, text = append(m, "Documents/Autres", raw)
    assert typ == "NO" and b"claims to come from someone else" in text
