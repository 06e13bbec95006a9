"""The safe zip and XDM reader, pure: hostile archives built here, each refused with its reason; packages read."""

from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
import zipfile

import pytest

from policies import xdm as X
from tests.directory.messages import CDA, xdm_zip

INS = "279035121518989"
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def zip_of(*entries: tuple[str | zipfile.ZipInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in entries:
                z.writestr(name, data)
    return buf.getvalue()


def refusal(data: bytes, limits: X.Limits = X.DEFAULT_LIMITS) -> str:
    with pytest.raises(X.UnsafeArchive) as caught:
        X.read_zip(data, limits)
    return caught.value.reason


def test_a_plain_archive_is_read_entry_by_entry() -> None:
    archive = X.read_zip(zip_of(("a/cr.pdf", PDF), ("b.txt", b"bonjour")))
    assert archive.names == ("a/cr.pdf", "b.txt")
    assert archive.get("A/CR.PDF") is not None and archive.get("a/cr.pdf").data == PDF  # type: ignore[union-attr]


def test_a_zip_bomb_is_stopped_while_inflating() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.txt", "w") as f:
        for _ in range(60):
            f.write(b"\0" * 2**20)  # 60 MB of zeros, a few hundred KB once deflated
    data = buf.getvalue()
    assert len(data) < 2**18
    started = time.monotonic()
    reason = refusal(data)
    assert "zip bomb" in reason and "100 times" in reason and "zeros.txt" in reason
    assert time.monotonic() - started < 10  # stopped at its bound, not inflated to the end


def test_the_total_size_is_bounded_even_at_a_modest_ratio() -> None:
    payload = bytes(range(256)) * 4096  # 1 MB that deflates little
    data = zip_of(("a.bin", payload), ("b.bin", payload), ("c.bin", payload))
    assert "inflates to more than 2 MB" in refusal(data, X.Limits(max_total=2 * 2**20))


def test_a_declared_size_is_not_believed() -> None:
    data = bytearray(zip_of(("cr.pdf", PDF * 100)))
    at = data.index(b"PK\x01\x02")  # the central directory: uncompressed size at offset 24
    data[at + 24 : at + 28] = struct.pack("<I", 10)
    assert "cr.pdf cannot be read" in refusal(bytes(data))


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("../../etc/cron.d/evil", "climbs out of the archive"),
        ("IHE_XDM/SUBSET01/../../x.pdf", "climbs out of the archive"),
        ("/etc/passwd", "absolute name"),
        ("C:/Windows/x.pdf", "absolute name"),
        ("a\x01b.pdf", "control character"),
    ],
)
def test_names_that_leave_the_archive_are_refused(name: str, says: str) -> None:
    info = zipfile.ZipInfo("placeholder")
    info.filename = info.orig_filename = name  # zipfile would clean the name: write it as a hostile tool does
    assert says in refusal(zip_of(("ok.txt", b"x"), (info, b"payload")))


def test_a_backslash_traversal_is_refused() -> None:
    data = bytearray(zip_of(("..X..Xevil.pdf", PDF)))
    data[:] = data.replace(b"..X..Xevil.pdf", b"..\\..\\evil.pdf")
    assert "climbs out" in refusal(bytes(data))


def encrypted(data: bytes) -> bytes:
    """``data`` with its entries' "encrypted" flag set (zipfile writes none), as a tool with a password writes it."""
    out = bytearray(data)
    for signature, at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = out.find(signature)
        while i >= 0:
            out[i + at] |= 0x1
            i = out.find(signature, i + 4)
    return bytes(out)


def test_an_encrypted_entry_is_refused() -> None:
    assert refusal(encrypted(zip_of(("secret.pdf", PDF)))) == "the entry secret.pdf is encrypted"


def test_a_symbolic_link_is_refused() -> None:
    info = zipfile.ZipInfo("link.pdf")
    info.external_attr = 0o120777 << 16
    assert "symbolic link" in refusal(zip_of((info, b"/etc/passwd")))


def test_a_nested_archive_is_refused_by_name_or_by_content() -> None:
    inner = zip_of(("cr.pdf", PDF))
    assert "archive inside the archive" in refusal(zip_of(("inner.zip", inner)))
    assert "archive inside the archive" in refusal(zip_of(("inner.dat", inner)))
    assert "archive inside the archive" in refusal(zip_of(("x.gz", b"\x1f\x8b\x08\x00")))


def test_a_name_twice_is_refused_whatever_its_case() -> None:
    assert "twice" in refusal(zip_of(("cr.pdf", PDF), ("cr.pdf", b"other")))
    assert "twice" in refusal(zip_of(("CR.PDF", PDF), ("cr.pdf", b"other")))


def test_too_many_entries() -> None:
    data = zip_of(*((f"f{i}.txt", b"x") for i in range(6)))
    assert refusal(data, X.Limits(max_entries=5)) == "the zip archive holds more than 5 entries"


def test_what_is_not_a_zip_is_said_so() -> None:
    assert refusal(b"PK\x03\x04garbage") == X.UNREADABLE_ZIP


# --- packages ---------------------------------------------------------------------------------------------------


def package(data: bytes) -> X.Package:
    found = X.read_package(X.read_zip(data))
    assert found is not None
    return found


def package_error(data: bytes) -> X.PackageError:
    with pytest.raises(X.PackageError) as caught:
        X.read_package(X.read_zip(data))
    return caught.value


def test_a_package_is_read_with_its_metadata() -> None:
    pdf_fields = {
        "uri": "DOC0002.PDF",
        "mime": "application/pdf",
        "title": "Ordonnance",
        "type_code": "57833-6",
        "type_name": "Prescription de médicaments",
    }
    p = package(xdm_zip(INS, documents=[(CDA, {}), (PDF, pdf_fields)]))
    assert p.subset == "IHE_XDM/SUBSET01" and p.patient_ids == (INS, INS, INS)
    cda, pdf = p.documents
    assert cda.data == CDA and cda.name == "IHE_XDM/SUBSET01/DOC0001.XML" and cda.filename == "DOC0001.XML"
    e = cda.entry
    assert (e.title, e.mime_type, e.creation_time) == ("CR de biologie", "text/xml", "20261201093000")
    assert e.patient_id == INS
    assert e.type_code == X.Code("11502-2", "CR d'examens biologiques", "2.16.840.1.113883.6.1")
    assert str(e.type_code) == "11502-2 CR d'examens biologiques"
    assert e.class_code is not None and e.class_code.code == "10" and e.format_code is not None
    assert e.hash == hashlib.sha1(CDA).hexdigest() and e.size == len(CDA)  # noqa: S324
    assert str(e.authors[0]) == "Gregory HOUSE, Laboratoire Test"
    assert pdf.data == PDF and pdf.entry.type_code is not None and pdf.entry.type_code.display.endswith("médicaments")


def test_a_zip_without_metadata_is_no_package() -> None:
    assert X.read_package(X.read_zip(zip_of(("cr.pdf", PDF)))) is None


def test_a_hash_that_does_not_match_names_the_document() -> None:
    err = package_error(xdm_zip(INS, documents=[(CDA, {"sha1": "0" * 40})]))
    assert err.document == "CR de biologie" and "does not match the hash" in err.reason and "DOC0001.XML" in err.reason


def test_a_size_that_does_not_match() -> None:
    err = package_error(xdm_zip(INS, documents=[(CDA, {"size": "3"})]))
    assert f"is {len(CDA)} bytes, the metadata says 3" in err.reason


def test_a_missing_document() -> None:
    err = package_error(xdm_zip(INS, documents=[(CDA, {"stored": "no"})]))
    assert "DOC0001.XML is missing from the package" in err.reason


def test_a_uri_that_leaves_the_subset() -> None:
    err = package_error(xdm_zip(INS, documents=[(CDA, {"stored": "no", "uri": "../../README.TXT"})]))
    assert "leaves the package's subset" in err.reason


def test_metadata_that_does_not_parse_or_holds_entities() -> None:
    err = package_error(zip_of(("IHE_XDM/SUBSET01/METADATA.XML", b"<not-closed")))
    assert err.unreadable and "not readable XML" in err.reason
    lol = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l "l">]><l>&l;</l>'
    assert package_error(zip_of(("IHE_XDM/SUBSET01/METADATA.XML", lol))).unreadable


def test_two_subsets_are_refused() -> None:
    meta = xdm_zip(INS)
    inner = X.read_zip(meta).get("IHE_XDM/SUBSET01/METADATA.XML")
    assert inner is not None
    data = zip_of(("IHE_XDM/SUBSET01/METADATA.XML", inner.data), ("IHE_XDM/SUBSET02/METADATA.XML", inner.data))
    assert "several subsets" in package_error(data).reason


def test_oversized_metadata_is_not_parsed() -> None:
    data = zip_of(("IHE_XDM/SUBSET01/METADATA.XML", b" " * 100_000 + b"<a/>"))
    with pytest.raises(X.PackageError) as caught:
        X.read_package(X.read_zip(data), X.Limits(max_metadata=4000))
    assert "larger than 4000 bytes" in caught.value.reason


# --- the content policy reads through it ------------------------------------------------------------------------


def test_the_policy_refuses_an_unsafe_archive_and_keeps_the_package_it_checked() -> None:
    from mailserver.message import parse_message
    from policies import content as C
    from tests.directory.messages import with_attachments

    bad = with_attachments("dr@h.test", f"{INS}@p.test", "x", [("docs.zip", "application/zip", zip_of(("../x", b"1")))])
    decision = C.check_attachments(parse_message(bad).content)
    assert decision.reason == "archive-unsafe"
    assert str(decision.reply).startswith("550 5.6.0 The attachment docs.zip is refused: the entry ../x climbs out")
    mismatch = xdm_zip(INS, documents=[(CDA, {"sha1": "0" * 40})])
    raw = with_attachments("dr@h.test", f"{INS}@p.test", "x", [("IHE_XDM.ZIP", "application/zip", mismatch)])
    decision = C.check_xdm(parse_message(raw).content, INS)
    assert decision.reason == "xdm-document-refused"
    assert str(decision.reply).startswith("550 5.6.0 The IHE XDM package cannot be filed (IHE_XDM.ZIP): the document")
    good = parse_message(with_attachments("dr@h.test", "p@p.test", "x", [("X.ZIP", "application/zip", xdm_zip(INS))]))
    (part,) = [p for p in good.content.parts if p.package is not None]
    assert part.path == (2,) and part.package is not None and part.package.documents[0].data == CDA


def test_a_package_under_a_folder_is_still_a_package() -> None:
    inner = X.read_zip(xdm_zip(INS))
    data = zip_of(*((f"export/{e.name}", e.data) for e in inner.entries))
    p = package(data)
    assert p.subset == "export/IHE_XDM/SUBSET01" and p.patient_ids == (INS, INS)
