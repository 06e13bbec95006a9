"""What a message carries, and whether that may go to a recipient: attachment types, executables, XDM packages.

Pure: the message model (``mailserver.message``, the one MIME parser) hands
``content_of`` plain values: header texts, addresses, and each leaf part as a
``Leaf`` (declared type, file name, decoded bytes). ``content_of`` reads zip
archives in memory and METADATA.XML through defusedxml and returns a
``Content`` value; the ``check_*`` functions decide on it. No I/O, no storage,
no MIME parsing here.

Invariants:
- Every leaf part of the message is looked at, in nested messages too. A part is
  judged by its declared type, or, when that says nothing (``application/octet-stream``),
  by its file name's extension.
- An executable is refused wherever it hides: by file name extension, declared
  type or leading bytes (PE ``MZ``, ELF, Mach-O, ``#!`` scripts), and as a
  member of a zip archive.
- A part whose type is not in the allowed list is refused, except the parts that
  make up a message itself (``multipart/*``, text bodies, delivery and disposition
  reports, S/MIME signatures).
- An IHE XDM package (a zip holding ``IHE_XDM/<subset>/METADATA.XML``) concerns one
  patient: every ``patientId`` of its submission sets and documents must be the
  same INS, and for a patient recipient, that patient's INS. A package that cannot
  be read is refused: a document never lands in the wrong record.
- Archives are read once, by ``policies.xdm`` (bounds measured while inflating):
  a zip bomb, a traversal or absolute name, an encrypted entry, a nested archive,
  a duplicate name is refused (``archive-unsafe``), not expanded. An XDM package
  whose documents do not match its metadata (missing file, size, SHA-1) is refused
  (``xdm-document-refused``); the checked ``Package`` stays on its ``Part`` for
  the vault to file.
"""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from policies import reply as R
from policies import xdm as X
from policies.decision import Decision

#: attachment types accepted by default: PDF, CDA (XML), XDM (zip), images, DICOM, text, iCalendar
DEFAULT_ALLOWED_TYPES: tuple[str, ...] = (
    "application/pdf",
    "text/xml",
    "application/xml",
    "application/hl7-v3+xml",
    "application/hl7-cda+xml",
    "application/zip",
    "application/x-zip-compressed",
    "image/*",
    "application/dicom",
    "text/plain",
    "text/calendar",
    "application/ics",
)

#: parts that make up a message rather than attach to it: always accepted
STRUCTURAL_TYPES = frozenset(
    {
        "text/plain",
        "text/html",
        "text/enriched",
        "text/rfc822-headers",
        "message/rfc822",
        "message/delivery-status",
        "message/global-delivery-status",
        "message/disposition-notification",
        "message/global-disposition-notification",
        "message/global-headers",
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
        "application/pkcs7-mime",
        "application/x-pkcs7-mime",
        "application/pgp-signature",
    }
)

EXECUTABLE_EXTENSIONS = frozenset(
    ".exe .com .bat .cmd .scr .pif .cpl .msi .msp .msc .dll .sys .drv .ocx .vbs .vbe .js .jse .wsf .wsh .ps1 "
    ".psm1 .hta .jar .class .apk .app .dmg .pkg .deb .rpm .sh .bash .csh .ksh .zsh .command .run .bin .elf "
    ".lnk .reg .inf .scf .gadget .application .appx .msix .iso .img .vhd .vhdx .xll .py .pl .rb".split()
)

EXECUTABLE_TYPES = frozenset(
    {
        "application/x-msdownload",
        "application/x-msdos-program",
        "application/x-dosexec",
        "application/x-executable",
        "application/x-elf",
        "application/x-mach-binary",
        "application/vnd.microsoft.portable-executable",
        "application/x-ms-installer",
        "application/x-msi",
        "application/x-sh",
        "application/x-shellscript",
        "application/x-bat",
        "application/x-csh",
        "application/java-archive",
        "application/x-java-archive",
        "application/vnd.android.package-archive",
        "application/hta",
        "application/x-ms-shortcut",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/vbscript",
        "application/x-python-code",
        "text/x-python",
        "text/x-shellscript",
    }
)

_MAGIC = (b"MZ", b"\x7fELF", b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe", b"#!")

#: extensions mimetypes does not know, or knows otherwise
_EXTRA_TYPES = {".dcm": "application/dicom", ".dicom": "application/dicom", ".ics": "text/calendar"}

SCHEME_DOCUMENT_PATIENT_ID = X.SCHEME_DOCUMENT_PATIENT_ID
SCHEME_SUBMISSION_PATIENT_ID = X.SCHEME_SUBMISSION_PATIENT_ID
_UNSAFE = re.compile(r"[^\w .,()+\-]")
#: reply prefixes mail clients put before a subject: Re, RE :, Réf, AW (de), SV (nordic), Antw (nl), R[2]:
_REPLY_PREFIX = re.compile(r"\s*(?:re|réf|ref|aw|sv|antw)\s*(?:\[\d+\])?\s*:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Part:
    """One leaf part: what it says it is and what it turned out to be."""

    filename: str | None
    declared_type: str
    effective_type: str
    executable: str | None = None  # why it counts as an executable
    zip_members: tuple[str, ...] = ()
    xdm_patient_ids: tuple[str, ...] | None = None  # None: not an XDM package
    problem: str | None = None  # an archive or a package that cannot be read
    unreadable: bool = False  # the package's METADATA.XML itself cannot be read
    unsafe: str | None = None  # why the archive cannot be unpacked safely (a bomb, a traversal name...)
    package: X.Package | None = field(default=None, repr=False, compare=False)  # the XDM package, as checked
    path: tuple[int, ...] = ()  # its RFC 3501 part number


@dataclass(frozen=True, slots=True)
class Content:
    subject: str | None
    mss_mes: str | None  # the X-MSS-MES header
    reply_to: tuple[str, ...]
    from_: tuple[str, ...]
    sender: tuple[str, ...]
    parts: tuple[Part, ...] = field(default=())
    answers: bool = False  # carries In-Reply-To or References

    @property
    def is_reply(self) -> bool:
        """Answers another message: In-Reply-To or References, or a subject such as ``Re: ...`` / ``RE : ...``."""
        return self.answers or bool(_REPLY_PREFIX.match(self.subject or ""))

    @property
    def ends_conversation(self) -> bool:
        """A professional ends the conversation: subject exactly ``[FIN]`` or ``X-MSS-MES: FIN``."""
        return (self.subject or "").strip() == "[FIN]" or (self.mss_mes or "").strip().upper() == "FIN"

    @property
    def xdm_patient_ids(self) -> tuple[str, ...] | None:
        """Every patientId of every XDM package in the message; None if it has no package."""
        found: list[str] | None = None
        for p in self.parts:
            if p.xdm_patient_ids is not None:
                found = (found or []) + list(p.xdm_patient_ids)
        return None if found is None else tuple(found)


def safe_name(name: str | None) -> str:
    """A file name fit for a one-line reply: no control or odd characters, bounded length."""
    if not name:
        return "(no name)"
    cleaned = _UNSAFE.sub("_", name)[:60]
    return cleaned or "(no name)"


def _extension(name: str | None) -> str:
    if not name or "." not in name:
        return ""
    return "." + name.rsplit(".", 1)[1].strip().lower()


def _guess(name: str | None) -> str | None:
    ext = _extension(name)
    if ext in _EXTRA_TYPES:
        return _EXTRA_TYPES[ext]
    if not ext:
        return None
    guessed, _ = mimetypes.guess_type("x" + ext, strict=False)
    return guessed


def _executable(name: str | None, declared: str, payload: bytes) -> str | None:
    ext = _extension(name)
    if ext in EXECUTABLE_EXTENSIONS:
        return f"file name {safe_name(name)}"
    if declared in EXECUTABLE_TYPES:
        return f"type {declared}"
    if payload.startswith(_MAGIC):
        return f"content of {safe_name(name)}"
    return None


@dataclass(frozen=True, slots=True)
class Leaf:
    """A leaf part as the message model hands it over."""

    declared_type: str  # type/subtype, lower-case
    filename: str | None
    payload: bytes  # without its transfer encoding
    path: tuple[int, ...] = ()  # its RFC 3501 part number


def content_of(
    *,
    subject: str | None,
    mss_mes: str | None,
    reply_to: Iterable[str],
    from_: Iterable[str],
    sender: Iterable[str],
    answers: bool,
    leaves: Iterable[Leaf] = (),
) -> Content:
    """What the policies look at. ``subject`` decoded from encoded words; addresses as written (any case)."""
    return Content(
        subject=None if subject is None else " ".join(subject.split()),
        mss_mes=None if mss_mes is None else " ".join(mss_mes.split()),
        reply_to=_addresses(reply_to),
        from_=_addresses(from_),
        sender=_addresses(sender),
        parts=tuple(describe(leaf) for leaf in leaves),
        answers=answers,
    )


def _addresses(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(a.strip().lower() for a in values if a and "@" in a)


def check_patient_reply(content: Content, *, may_write_first: bool) -> Decision:
    """A patient's message to a professional must answer one of theirs (DESIGN.md: "only a reply"),
    unless the professional is one patients may write to first (pharmacists)."""
    if may_write_first or content.is_reply:
        return Decision.allow("patient-reply")
    return Decision.refuse(R.PATIENT_NEW_MESSAGE, "patient-new-message")


def describe(leaf: Leaf) -> Part:
    """One leaf part judged: its effective type, whether it is an executable, the zip and XDM inside."""
    declared = leaf.declared_type.lower()
    filename = leaf.filename
    data = leaf.payload
    effective = declared
    if declared in ("application/octet-stream", "application/binary", "application/x-download"):
        effective = _guess(filename) or declared
    executable = _executable(filename, declared, data)
    if executable is None and effective != declared and effective in EXECUTABLE_TYPES:
        executable = f"file name {safe_name(filename)}"
    zip_members: tuple[str, ...] = ()
    xdm: tuple[str, ...] | None = None
    package = problem = unsafe = None
    unreadable = False
    if data.startswith(b"PK\x03\x04") or effective in ("application/zip", "application/x-zip-compressed"):
        zip_members, package, error, unsafe, bad = _read_zip(data)
        if package is not None:
            xdm = package.patient_ids
        elif isinstance(error, X.PackageError):
            xdm = error.patient_ids  # an XDM package that cannot be filed: whom its metadata names, if read
            problem, unreadable = f"the document {error.document}: {error.reason}", error.unreadable
        else:
            problem = error
        if bad and executable is None:
            executable = f"{safe_name(bad)} inside {safe_name(filename)}"
    return Part(
        filename, declared, effective, executable, zip_members, xdm, problem, unreadable, unsafe, package, leaf.path
    )


def _read_zip(
    data: bytes,
) -> tuple[tuple[str, ...], X.Package | None, X.PackageError | str | None, str | None, str | None]:
    """(entry names, the XDM package, a problem with the package, why the archive is unsafe, the first executable
    entry). Read once, by ``policies.xdm``: the vault files the package this returns."""
    try:
        archive = X.read_zip(data)
    except X.UnsafeArchive as exc:
        if exc.reason == X.UNREADABLE_ZIP:
            return (), None, exc.reason, None, None  # not a zip after all: judged by its declared type
        return (), None, None, exc.reason, None
    names = archive.names
    bad = next((n for n in names if _extension(n) in EXECUTABLE_EXTENSIONS), None)
    if not X.metadata_names(archive):
        return names, None, None, None, bad
    try:
        package = X.read_package(archive)
    except X.PackageError as exc:
        return names, None, exc, None, bad
    return names, package, None, None, bad


def patient_ids(metadata_xml: bytes) -> list[str]:
    """The patientId values (``<id>^^^&<oid>&ISO``) of an XDS/XDM METADATA.XML: their id part."""
    return X.patient_ids(metadata_xml)


# --- decisions --------------------------------------------------------------------------------------------------


def _matches(content_type: str, allowed: Collection[str]) -> bool:
    major = content_type.split("/", 1)[0]
    return any(a == content_type or (a.endswith("/*") and a[:-2] == major) for a in allowed)


def check_attachments(content: Content, allowed_types: Collection[str] = DEFAULT_ALLOWED_TYPES) -> Decision:
    """Executables anywhere, and attachments of a type outside ``allowed_types``, are refused."""
    allowed = {a.strip().lower() for a in allowed_types}
    for p in content.parts:
        if p.executable:
            return Decision.refuse(
                R.EXECUTABLE_ATTACHMENT.with_text(f"{R.EXECUTABLE_ATTACHMENT.text} ({p.executable})"),
                "executable-attachment",
            )
    for p in content.parts:
        if p.unsafe:
            return Decision.refuse(
                R.ARCHIVE_REFUSED.with_text(f"The attachment {safe_name(p.filename)} is refused: {p.unsafe}"),
                "archive-unsafe",
            )
    for p in content.parts:
        if p.effective_type in STRUCTURAL_TYPES and not (p.filename and p.effective_type == "text/html"):
            continue
        if _matches(p.effective_type, allowed):
            continue
        return Decision.refuse(
            R.ATTACHMENT_TYPE_REFUSED.with_text(
                f"Attachments of type {p.effective_type} ({safe_name(p.filename)}) are not accepted here: "
                "send PDF, CDA, IHE XDM, images, DICOM, text or iCalendar"
            ),
            "attachment-type-refused",
        )
    return Decision.allow("attachments-ok")


def check_xdm(content: Content, recipient_ins: str | None) -> Decision:
    """An XDM package concerns one patient; for a patient recipient (``recipient_ins``), that patient."""
    for p in content.parts:
        if p.problem and p.xdm_patient_ids is not None:
            head = R.XDM_UNREADABLE if p.unreadable else R.XDM_REFUSED
            return Decision.refuse(
                head.with_text(f"{head.text} ({safe_name(p.filename)}): {p.problem}"),
                "xdm-unreadable" if p.unreadable else "xdm-document-refused",
            )
    ids = content.xdm_patient_ids
    if ids is None:
        return Decision.allow("no-xdm")
    distinct = {i.upper() for i in ids if i}
    if not distinct:
        return Decision.refuse(R.XDM_UNREADABLE.with_text(f"{R.XDM_UNREADABLE.text}: no patientId"), "xdm-no-patient")
    if len(distinct) > 1:
        return Decision.refuse(R.XDM_SEVERAL_PATIENTS, "xdm-several-patients")
    if recipient_ins is not None and distinct != {recipient_ins.upper()}:
        return Decision.refuse(R.XDM_OTHER_PATIENT, "xdm-other-patient")
    return Decision.allow("xdm-ok")


def check_size(size: int, limit: int, *, who: str) -> Decision:
    if size > limit:
        return Decision.refuse(
            R.MESSAGE_TOO_BIG.with_text(f"Message too big: {who} accepts at most {_mb(limit)}"), "too-big"
        )
    return Decision.allow("size-ok")


def _mb(n: int) -> str:
    for unit, size in (("MB", 2**20), ("KB", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


#: what a vault upload may attach: documents (an XDM package is a zip)
VAULT_TYPES: tuple[str, ...] = (
    "application/pdf",
    "text/xml",
    "application/xml",
    "application/hl7-v3+xml",
    "application/hl7-cda+xml",
    "image/*",
    "application/dicom",
    "application/zip",
    "application/x-zip-compressed",
)


def check_vault_upload(content: Content, patient_ins: str) -> Decision:
    """A patient's APPEND into ``Documents/``: at least one document, every attachment a document (PDF, CDA,
    image, DICOM, an IHE XDM package of their own), no archive that is not an XDM package."""
    documents = 0
    for p in content.parts:
        if p.effective_type in STRUCTURAL_TYPES and not p.filename:
            continue
        if not _matches(p.effective_type, VAULT_TYPES) or (p.zip_members and p.package is None):
            return Decision.refuse(
                R.APPEND_NOT_ALLOWED.with_text(
                    f"The vault keeps health documents (PDF, CDA, images, DICOM, IHE XDM): "
                    f"{safe_name(p.filename)} of type {p.effective_type} is not one"
                ),
                "vault-type-refused",
            )
        documents += 1
    if not documents:
        return Decision.refuse(
            R.APPEND_NOT_ALLOWED.with_text("A message filed into the vault carries a document: attach it"),
            "vault-no-document",
        )
    xdm = check_xdm(content, patient_ins)
    if not xdm.allowed:
        return Decision.refuse(R.APPEND_NOT_ALLOWED.with_text(xdm.reply.text), xdm.reason)
    return Decision.allow("vault-upload")


def check_own_message(content: Content, own_address: str) -> Decision:
    """IMAP APPEND by a patient: the message may not claim to come from anyone but the patient."""
    own = own_address.lower()
    claimed = set(content.from_) | set(content.sender)
    others = sorted(a for a in claimed if a != own)
    if others:
        return Decision.refuse(
            R.APPEND_NOT_ALLOWED.with_text(
                "A patient can only store messages written from their own address: this one claims to come "
                "from someone else"
            ),
            "append-claims-other-sender",
        )
    return Decision.allow("append-own")
