"""The one safe reader of zip archives and IHE XDM packages: what the content policy checks and the vault files.

Pure: bytes in, values out (``Archive``, ``Package``) or an exception that says
why (``UnsafeArchive``, ``PackageError``). No I/O, no storage, no MIME. The
message model reads each attachment once (``policies.content.describe``) and
keeps what this module returned on the part, so the vault files the very bytes
the policy checked: nothing is unzipped twice.

Invariants (safe unpacking, issue 8 point 3):
- Sizes are measured while inflating, never taken from the archive's headers:
  each entry is read in ``CHUNK`` pieces and counted; the total inflated size is
  bounded (``Limits.max_total``), and so is the ratio of inflated bytes to the
  archive's own length (``Limits.max_ratio``, past ``Limits.ratio_floor``): a zip
  bomb is stopped after at most one chunk past its bound, memory stays bounded
  whatever the input.
- Refused with a reason naming the entry: more than ``Limits.max_entries``
  entries, an absolute name (``/x``, ``\\x``, ``C:x``), a name with a ``..``
  level or a control character, two entries with the same name (compared
  case-insensitively, ``\\`` as ``/``), an encrypted entry, a symbolic link, a
  nested archive (by name or by leading bytes), an entry whose CRC or length does
  not match.
- An XDM package (``IHE_XDM/<subset>/METADATA.XML``, IHE ITI TF-1 §16) is read
  with defusedxml (no DTD, no entities); every ``ExtrinsicObject`` must name by
  its ``URI`` slot an entry of its subset, whose SHA-1 and size match the
  ``hash`` and ``size`` slots. A package has one subset and one patient: every
  ``patientId`` is the same id (checked by ``policies.content.check_xdm``, which
  also compares it with the recipient's INS).
"""

from __future__ import annotations

import hashlib
import io
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError  # noqa: S405 - types and the exception defusedxml raises

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

CHUNK = 64 * 1024
UNREADABLE_ZIP = "the zip archive cannot be read"

#: XDS ExternalIdentifier and Classification schemes (IHE ITI TF-3 tables 4.2.5-1, 4.2.5-2)
SCHEME_DOCUMENT_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
SCHEME_SUBMISSION_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
SCHEME_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
SCHEME_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
SCHEME_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
SCHEME_AUTHOR = "urn:uuid:93606bcf-9494-43ec-9b4e-a7748d1a838d"
PATIENT_SCHEMES = frozenset({SCHEME_DOCUMENT_PATIENT_ID, SCHEME_SUBMISSION_PATIENT_ID})

#: at the root (ITI-32), or under one more folder as some senders zip it: either way its patient is checked
_METADATA = re.compile(r"(?:\A|/)IHE_XDM/([^/]+)/METADATA\.XML\Z", re.IGNORECASE)
_DRIVE = re.compile(r"\A[A-Za-z]:")
_ARCHIVE_EXTENSIONS = frozenset(
    ".zip .jar .war .ear .apk .7z .rar .tar .tgz .gz .bz2 .xz .zst .lz .lzma .cab .arj .z .tbz .txz .iso".split()
)
#: leading bytes of archive formats: zip (local header, empty, spanned), gzip, bzip2, xz, 7z, rar, zstd, cab
_ARCHIVE_MAGIC = (
    b"PK\x03\x04",
    b"PK\x05\x06",
    b"PK\x07\x08",
    b"\x1f\x8b",
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"Rar!\x1a\x07",
    b"\x28\xb5\x2f\xfd",
    b"MSCF",
)


@dataclass(frozen=True, slots=True)
class Limits:
    max_entries: int = 1000
    max_total: int = 100 * 1024 * 1024  # inflated bytes, every entry together
    max_ratio: int = 100  # inflated bytes per byte of archive ...
    ratio_floor: int = 2 * 1024 * 1024  # ... once more than this was inflated
    max_metadata: int = 8 * 1024 * 1024


DEFAULT_LIMITS = Limits()


class UnsafeArchive(Exception):
    """The archive cannot be unpacked safely, or at all: ``reason`` is a sentence fit for an SMTP reply."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PackageError(Exception):
    """The XDM package cannot be filed: ``document`` is what it concerns (an entry or an id), ``reason`` why."""

    def __init__(
        self, document: str, reason: str, *, unreadable: bool = False, patient_ids: tuple[str, ...] = ()
    ) -> None:
        super().__init__(f"{document}: {reason}")
        self.document = document
        self.reason = reason
        self.unreadable = unreadable  # METADATA.XML itself cannot be read
        self.patient_ids = patient_ids  # what the metadata says, when it could be read (a document failed)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Archive:
    entries: tuple[Entry, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entries)

    def get(self, name: str) -> Entry | None:
        key = _key(name)
        return next((e for e in self.entries if _key(e.name) == key), None)


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    display: str = ""
    scheme: str = ""  # codingScheme slot (an OID)

    def __str__(self) -> str:
        return f"{self.code} {self.display}".strip()


@dataclass(frozen=True, slots=True)
class Author:
    person: str = ""
    institutions: tuple[str, ...] = ()
    role: str = ""
    specialty: str = ""

    def __str__(self) -> str:
        return ", ".join(x for x in (_xcn_name(self.person), *map(_xon_name, self.institutions)) if x)


@dataclass(frozen=True, slots=True)
class DocumentEntry:
    """One ``ExtrinsicObject`` (XDSDocumentEntry) of METADATA.XML."""

    entry_id: str
    mime_type: str
    title: str = ""
    class_code: Code | None = None
    type_code: Code | None = None
    format_code: Code | None = None
    authors: tuple[Author, ...] = ()
    creation_time: str = ""  # HL7 DTM, UTC: YYYY[MM[DD[hh[mm[ss]]]]]
    patient_id: str = ""  # the id part of the CX
    uri: str = ""
    hash: str = ""  # SHA-1, hex
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Metadata:
    documents: tuple[DocumentEntry, ...]
    patient_ids: tuple[str, ...]  # of the submission set and of every document


@dataclass(frozen=True, slots=True)
class Document:
    entry: DocumentEntry
    name: str  # its path in the zip
    data: bytes

    @property
    def filename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Package:
    subset: str
    metadata_name: str
    documents: tuple[Document, ...]
    patient_ids: tuple[str, ...]
    archive: Archive = field(repr=False)


# --- zip --------------------------------------------------------------------------------------------------------


def _key(name: str) -> str:
    return name.replace("\\", "/").casefold()


def printable(name: str) -> str:
    """An entry name fit for a one-line reply (bounded, no control or odd characters)."""
    cleaned = re.sub(r"[^\w .,'()+\-/]", "_", name, flags=re.ASCII)[:80]
    return cleaned or "(no name)"


def is_archive(name: str, head: bytes) -> bool:
    ext = "." + name.rsplit(".", 1)[1].lower() if "." in name.rsplit("/", 1)[-1] else ""
    return ext in _ARCHIVE_EXTENSIONS or head.startswith(_ARCHIVE_MAGIC)


def _check_name(info: zipfile.ZipInfo) -> None:
    raw = info.orig_filename if hasattr(info, "orig_filename") else info.filename
    name = raw.replace("\\", "/")
    shown = printable(raw)
    if not info.filename:
        raise UnsafeArchive("an entry of the zip archive has no name")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        raise UnsafeArchive(f"the entry {shown} has a control character in its name")
    if name.startswith("/") or _DRIVE.match(name):
        raise UnsafeArchive(f"the entry {shown} has an absolute name")
    if ".." in name.split("/"):
        raise UnsafeArchive(f"the entry {shown} climbs out of the archive (a '..' in its name)")
    if info.flag_bits & 0x1:
        raise UnsafeArchive(f"the entry {shown} is encrypted")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UnsafeArchive(f"the entry {shown} is a symbolic link")


def read_zip(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Archive:
    """Every file entry of the zip ``data``, inflated within ``limits``; ``UnsafeArchive`` says why not."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError, EOFError):
        raise UnsafeArchive(UNREADABLE_ZIP) from None
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_entries:
            raise UnsafeArchive(f"the zip archive holds more than {limits.max_entries} entries")
        seen: set[str] = set()
        for info in infos:
            _check_name(info)
            key = _key(info.filename).rstrip("/")
            if key in seen:
                raise UnsafeArchive(f"the zip archive holds the name {printable(info.filename)} twice")
            seen.add(key)
        entries: list[Entry] = []
        total = 0
        bound = len(data) * limits.max_ratio
        for info in infos:
            if info.is_dir():
                continue
            shown = printable(info.filename)
            pieces: list[bytes] = []
            try:
                with archive.open(info) as f:
                    while chunk := f.read(CHUNK):
                        total += len(chunk)
                        if total > limits.max_total:
                            raise UnsafeArchive(
                                f"the zip archive inflates to more than {limits.max_total // 2**20} MB (at {shown})"
                            )
                        if total > limits.ratio_floor and total > bound:
                            raise UnsafeArchive(
                                f"the zip archive inflates more than {limits.max_ratio} times its size "
                                f"(at {shown}): a zip bomb"
                            )
                        pieces.append(chunk)
            except UnsafeArchive:
                raise
            except (
                zipfile.BadZipFile,
                zipfile.LargeZipFile,
                NotImplementedError,
                RuntimeError,
                ValueError,
                OSError,
                EOFError,
                zlib.error,  # a damaged deflate stream
            ):
                raise UnsafeArchive(f"the entry {shown} cannot be read (damaged, or a method we do not read)") from None
            content = b"".join(pieces)
            if is_archive(info.filename, content[:8]):
                raise UnsafeArchive(f"the entry {shown} is an archive inside the archive")
            entries.append(Entry(info.filename, content))
        return Archive(tuple(entries))


# --- METADATA.XML -----------------------------------------------------------------------------------------------


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(elem: Element, name: str) -> list[Element]:
    return [c for c in elem if _local(c.tag) == name]


def _slots(elem: Element) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for slot in _children(elem, "Slot"):
        values = [(v.text or "").strip() for vl in _children(slot, "ValueList") for v in _children(vl, "Value")]
        out.setdefault(slot.get("name") or "", []).extend(values)
    return out


def _name(elem: Element) -> str:
    for n in _children(elem, "Name"):
        for s in _children(n, "LocalizedString"):
            if s.get("value"):
                return (s.get("value") or "").strip()
    return ""


def _code(elem: Element) -> Code:
    scheme = next(iter(_slots(elem).get("codingScheme", [])), "")
    return Code((elem.get("nodeRepresentation") or "").strip(), _name(elem), scheme)


def _xcn_name(xcn: str) -> str:
    """``id^Family^Given^...`` -> ``Given Family`` (an XCN author person); the raw value if it has no name."""
    parts = xcn.split("^")
    if len(parts) >= 3 and (parts[1] or parts[2]):
        return " ".join(p for p in (parts[2], parts[1]) if p)
    return xcn


def _xon_name(xon: str) -> str:
    return xon.split("^", 1)[0]


def _author(elem: Element) -> Author:
    slots = _slots(elem)
    return Author(
        person=next(iter(slots.get("authorPerson", [])), ""),
        institutions=tuple(slots.get("authorInstitution", [])),
        role=next(iter(slots.get("authorRole", [])), ""),
        specialty=next(iter(slots.get("authorSpecialty", [])), ""),
    )


def _cx_id(value: str) -> str:
    return value.strip().split("^", 1)[0].strip()


def parse_metadata(xml: bytes) -> Metadata:
    """METADATA.XML (an ebRIM 3.0 SubmitObjectsRequest) read; ``ParseError`` / ``DefusedXmlException`` if unreadable."""
    root = fromstring(xml, forbid_dtd=True)
    documents: list[DocumentEntry] = []
    ids: list[str] = []
    for elem in root.iter():
        if _local(elem.tag) == "ExternalIdentifier" and elem.get("identificationScheme") in PATIENT_SCHEMES:
            ids.append(_cx_id(elem.get("value") or ""))
        if _local(elem.tag) != "ExtrinsicObject":
            continue
        slots = _slots(elem)
        codes: dict[str, Code] = {}
        authors: list[Author] = []
        for c in _children(elem, "Classification"):
            scheme = c.get("classificationScheme")
            if scheme == SCHEME_AUTHOR:
                authors.append(_author(c))
            elif scheme in (SCHEME_CLASS_CODE, SCHEME_TYPE_CODE, SCHEME_FORMAT_CODE):
                codes[scheme] = _code(c)
        patient = next(
            (
                _cx_id(x.get("value") or "")
                for x in _children(elem, "ExternalIdentifier")
                if x.get("identificationScheme") == SCHEME_DOCUMENT_PATIENT_ID
            ),
            "",
        )
        size_text = next(iter(slots.get("size", [])), "")
        documents.append(
            DocumentEntry(
                entry_id=elem.get("id") or "",
                mime_type=(elem.get("mimeType") or "application/octet-stream").strip().lower(),
                title=_name(elem),
                class_code=codes.get(SCHEME_CLASS_CODE),
                type_code=codes.get(SCHEME_TYPE_CODE),
                format_code=codes.get(SCHEME_FORMAT_CODE),
                authors=tuple(authors),
                creation_time=next(iter(slots.get("creationTime", [])), ""),
                patient_id=patient,
                uri="".join(slots.get("URI", [])) if len(slots.get("URI", [])) <= 1 else _uri(slots["URI"]),
                hash=next(iter(slots.get("hash", [])), "").lower(),
                size=int(size_text) if size_text.isdigit() else None,
            )
        )
    return Metadata(tuple(documents), tuple(ids))


def _uri(values: list[str]) -> str:
    """A long URI split over several values as ``1|part``, ``2|part`` (ITI TF-3 §4.2.3.2.24)."""
    pieces: list[tuple[int, str]] = []
    for v in values:
        n, sep, rest = v.partition("|")
        pieces.append((int(n), rest) if sep and n.isdigit() else (len(pieces) + 1, v))
    return "".join(p for _, p in sorted(pieces))


def patient_ids(metadata_xml: bytes) -> list[str]:
    """The patientId values of a METADATA.XML: their id part."""
    return list(parse_metadata(metadata_xml).patient_ids)


# --- the package ------------------------------------------------------------------------------------------------


def metadata_names(archive: Archive) -> list[str]:
    return [n for n in archive.names if _METADATA.search(n.replace("\\", "/"))]


def read_package(archive: Archive, limits: Limits = DEFAULT_LIMITS) -> Package | None:
    """The XDM package ``archive`` holds, checked; None if it is no XDM package; ``PackageError`` says why not."""
    names = metadata_names(archive)
    if not names:
        return None
    if len(names) > 1:
        raise PackageError("IHE_XDM", "the package holds several subsets: a message carries one submission")
    metadata_name = names[0]
    subset = metadata_name.replace("\\", "/").rsplit("/", 1)[0]
    entry = archive.get(metadata_name)
    assert entry is not None  # noqa: S101 - the name comes from the archive
    if len(entry.data) > limits.max_metadata:
        raise PackageError(metadata_name, f"METADATA.XML is larger than {limits.max_metadata} bytes", unreadable=True)
    try:
        metadata = parse_metadata(entry.data)
    except (ParseError, DefusedXmlException, ValueError):
        raise PackageError(
            metadata_name, "METADATA.XML is not readable XML (or holds a DTD or entities)", unreadable=True
        ) from None
    if not metadata.documents:
        raise PackageError(metadata_name, "METADATA.XML describes no document")
    documents = []
    ids = tuple(metadata.patient_ids)
    for doc in metadata.documents:
        label = printable(doc.title or doc.entry_id or "(a document)")
        if not doc.uri:
            raise PackageError(label, "its metadata gives no URI (the file in the package)", patient_ids=ids)
        path = f"{subset}/{doc.uri.replace(chr(92), '/')}"
        if ".." in path.split("/") or doc.uri.startswith(("/", "\\")):
            raise PackageError(label, f"its URI {printable(doc.uri)} leaves the package's subset", patient_ids=ids)
        found = archive.get(path)
        if found is None:
            raise PackageError(label, f"the file {printable(doc.uri)} is missing from the package", patient_ids=ids)
        if doc.size is not None and doc.size != len(found.data):
            raise PackageError(
                label,
                f"the file {printable(doc.uri)} is {len(found.data)} bytes, the metadata says {doc.size}",
                patient_ids=ids,
            )
        if not doc.hash:
            raise PackageError(label, "its metadata gives no hash (SHA-1) of the file", patient_ids=ids)
        if hashlib.sha1(found.data).hexdigest() != doc.hash:  # noqa: S324 - XDS names SHA-1; a check, not a seal
            raise PackageError(
                label, f"the file {printable(doc.uri)} does not match the hash in the metadata", patient_ids=ids
            )
        documents.append(Document(doc, found.name, found.data))
    return Package(subset, metadata_name, tuple(documents), metadata.patient_ids, archive)


# --- a CDA on its own -------------------------------------------------------------------------------------------

HL7_V3 = "urn:hl7-org:v3"
MAX_CDA = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CdaHeader:
    """What a CDA R2 document says of itself: its LOINC ``code`` and its ``title``."""

    code: Code | None
    title: str


def read_cda(data: bytes) -> CdaHeader | None:
    """The header of a CDA R2 document (``ClinicalDocument`` in the HL7 v3 namespace); None if ``data`` is not one."""
    if len(data) > MAX_CDA or b"ClinicalDocument" not in data[:4096]:
        return None
    try:
        root = fromstring(data, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError):
        return None
    if root.tag != f"{{{HL7_V3}}}ClinicalDocument":
        return None
    code_elem = root.find(f"{{{HL7_V3}}}code")
    title_elem = root.find(f"{{{HL7_V3}}}title")
    code = None
    if code_elem is not None and code_elem.get("code"):
        code = Code(
            (code_elem.get("code") or "").strip(),
            (code_elem.get("displayName") or "").strip(),
            (code_elem.get("codeSystem") or "").strip(),
        )
    title = "".join(title_elem.itertext()).strip() if title_elem is not None else ""
    return CdaHeader(code, " ".join(title.split()))
