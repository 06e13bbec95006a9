"""The patient's vault: the health documents a message carries, each made a message of its own for ``Documents/``.

``delivery.deliver`` asks ``filings`` for the vault copies of a message a
professional, an organisation or an application sends to a patient, and adds
them in the same unit of work as the INBOX copy (both or neither). The IMAP
APPEND path asks ``upload`` to label what the patient files themselves.

Invariants:
- Nothing is parsed or unzipped again: the documents come from the
  ``ParsedMessage`` the door built (its attachments, and the XDM ``Package`` that
  ``policies.content`` read and checked through ``policies.xdm``). A message that
  reached delivery has passed those checks; a package that did not is refused at
  DATA, before anything is stored.
- One vault message per document: the document attached as it came (base64), a
  short text part naming it, and its metadata as ``X-Document-*`` header fields
  (Type, Class, Format, Author, Date, Source, Hash: ``sha256:<hex>`` of the
  document bytes), which any IMAP client can SEARCH. ``X-MSS-CODECDA``,
  ``X-MSS-INS`` and ``X-MSS-NIL`` of the original are copied on, as are its
  ``From``, ``To`` and ``Date`` fields, byte for byte.
- A document is filed once per message: a loose attachment whose bytes are those
  of a document of the package (the PDF companion of an XDM) is not filed again.
- The folder: by the document's LOINC type code (XDM metadata, or the CDA's own
  ``code``) when it maps to one, else by type (images and DICOM to Imagerie),
  else ``Documents/Autres``.
- Header values written here come from senders: control characters are removed
  and lengths bounded; non-ASCII text is RFC 2047 encoded by ``email``.
- Vault messages are immutable like every stored message (IMAP has no way to
  change content); no code path rewrites them.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.policy
import email.utils
import hashlib
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from mailserver.bodies import read_body
from mailserver.context import Context
from mailserver.mailboxes import DELIMITER, VAULT
from mailserver.message import ParsedMessage, parse_message, stored
from mailserver.message.parsed import Attachment
from mailserver.store.models import Account
from policies import content as C
from policies import xdm as X

REPORTS = f"{VAULT}{DELIMITER}Comptes-rendus"
RESULTS = f"{VAULT}{DELIMITER}Resultats"
PRESCRIPTIONS = f"{VAULT}{DELIMITER}Ordonnances"
IMAGING = f"{VAULT}{DELIMITER}Imagerie"
OTHERS = f"{VAULT}{DELIMITER}Autres"

#: LOINC document type codes (the XDS typeCode of the French CI-SIS, and the CDA ``code``) -> folder
BY_TYPE_CODE: dict[str, str] = {
    **dict.fromkeys(
        ("11502-2", "26436-6", "30954-2", "11526-1", "18719-5", "58410-2", "34749-8", "11529-5", "18725-2"), RESULTS
    ),
    **dict.fromkeys(
        ("18748-4", "18726-0", "18747-6", "18755-9", "18760-9", "18745-0", "55113-5", "52040-3", "24627-2"), IMAGING
    ),
    **dict.fromkeys(("57833-6", "57832-8", "57828-6", "60593-1", "29551-9", "57831-0"), PRESCRIPTIONS),
    **dict.fromkeys(
        (
            "11488-4",
            "11490-0",
            "34112-3",
            "15507-7",
            "28570-0",
            "34874-8",
            "11506-3",
            "34133-9",
            "60591-5",
            "34794-8",
            "18842-5",
            "68604-8",
            "11504-8",
        ),
        REPORTS,
    ),
}

#: MSSanté header fields of the original carried onto each vault message
MSS_FIELDS = ("x-mss-codecda", "x-mss-ins", "x-mss-nil")
#: fields of the original copied as written
COPIED_FIELDS = ("from", "to", "date")
#: attachment types that are not documents: the message's own structure, calendars (the agenda's), archives
NOT_DOCUMENTS = frozenset({"text/calendar", "application/ics", "application/zip", "application/x-zip-compressed"})
XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml", "application/hl7-cda+xml"})

#: how vault messages are written: CRLF, RFC 2047 for non-ASCII text, a field folded only past 200 characters
#: (``X-Document-Hash: sha256:<64 hex>`` stays on one line for the scripts that read it)
POLICY = email.policy.SMTP.clone(max_line_length=200)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_HL7_TIME = re.compile(r"\A(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?")


@dataclass(frozen=True, slots=True)
class Document:
    """One document to file, with what is known of it."""

    filename: str
    content_type: str
    data: bytes
    title: str
    type_code: X.Code | None = None
    class_code: X.Code | None = None
    format_code: X.Code | None = None
    author: str = ""
    created: dt.datetime | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True, slots=True)
class Filing:
    """A vault message and the ``Documents/`` child it goes to."""

    mailbox: str
    message: ParsedMessage
    document: Document


def is_vault(mailbox: str) -> bool:
    """``Documents`` or a mailbox under it."""
    return mailbox == VAULT or mailbox.startswith(VAULT + DELIMITER)


def clean(value: str, limit: int = 300) -> str:
    """A sender's text fit for a header field or a line of text: no control characters, bounded."""
    return " ".join(_CONTROL.sub(" ", value).split())[:limit]


def hl7_time(value: str) -> dt.datetime | None:
    """An HL7 DTM (``YYYYMMDDhhmmss``, UTC in XDS metadata) as a datetime; None if it is not one."""
    m = _HL7_TIME.match(value.strip())
    if m is None:
        return None
    parts = [int(g) if g else d for g, d in zip(m.groups(), (0, 1, 1, 0, 0, 0), strict=True)]
    try:
        year, month, day, hour, minute, second = parts
        return dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    except ValueError:
        return None


def folder_of(type_code: X.Code | None, content_type: str) -> str:
    """The ``Documents/`` child: by LOINC type code first, then by type."""
    if type_code is not None and type_code.code in BY_TYPE_CODE:
        return BY_TYPE_CODE[type_code.code]
    if content_type.startswith("image/") or content_type == "application/dicom":
        return IMAGING
    return OTHERS


# --- what a message carries -------------------------------------------------------------------------------------


def documents_of(message: ParsedMessage) -> list[Document]:
    """The documents of ``message``: those of its XDM packages, then its other attachments not already among them."""
    sender = clean(", ".join(message.decoded("from")))
    out: list[Document] = []
    package_parts: set[tuple[int, ...]] = set()
    for part in message.content.parts:
        if part.package is None:
            continue
        package_parts.add(part.path)
        for packed in part.package.documents:
            e = packed.entry
            out.append(
                Document(
                    filename=packed.filename,
                    content_type=e.mime_type,
                    data=packed.data,
                    title=clean(e.title) or packed.filename,
                    type_code=e.type_code,
                    class_code=e.class_code,
                    format_code=e.format_code,
                    author=clean("; ".join(str(a) for a in e.authors if str(a))) or sender,
                    created=hl7_time(e.creation_time),
                )
            )
    seen = {d.sha256 for d in out}
    judged = {p.path: p.effective_type for p in message.content.parts}
    for a in message.attachments():
        ctype = judged.get(a.part, a.content_type)
        if a.part in package_parts or not _is_document(ctype, a.filename):
            continue
        doc = _loose(a, ctype, sender)
        if doc.sha256 in seen:
            continue  # the PDF companion of a package document, or the same file twice: filed once
        seen.add(doc.sha256)
        out.append(doc)
    return out


def _is_document(ctype: str, filename: str | None) -> bool:
    if ctype in NOT_DOCUMENTS or ctype.startswith(("multipart/", "message/")):
        return False
    return not (ctype in C.STRUCTURAL_TYPES and (filename is None or ctype != "text/plain"))


def _loose(a: Attachment, ctype: str, sender: str) -> Document:
    """A loose attachment as a document; ``ctype`` its type as the content policy judged it (by file name when
    the declared type says nothing)."""
    data = a.decoded()
    name = clean(a.filename or "", 200) or f"document-{'.'.join(map(str, a.part))}"
    code = None
    title = name
    if ctype in XML_TYPES or name.lower().endswith(".xml"):
        cda = X.read_cda(data)
        if cda is not None:
            code, title = cda.code, clean(cda.title) or name
    return Document(name, ctype, data, title, type_code=code, author=sender)


# --- the vault message ------------------------------------------------------------------------------------------


def filings(message: ParsedMessage, *, when: dt.datetime) -> list[Filing]:
    """One vault message per document of ``message`` (its ``Message-ID`` is their ``X-Document-Source``)."""
    docs = documents_of(message)
    if not docs:
        return []
    source = clean(message.get("message-id") or "", 250)
    copied = b"".join(f.raw for f in message.fields if f.key in COPIED_FIELDS or f.key in MSS_FIELDS)
    out = []
    for doc in docs:
        raw = copied + _render(doc, source=source, when=when, received=message)
        out.append(Filing(folder_of(doc.type_code, doc.content_type), parse_message(raw, strict=False), doc))
    return out


def _domain(message_id: str) -> str:
    right = message_id.strip("<> ").rpartition("@")[2]
    return right if re.fullmatch(r"[A-Za-z0-9.-]{1,200}", right or "") else "vault.invalid"


def metadata_fields(doc: Document, *, source: str, when: dt.datetime) -> list[tuple[str, str]]:
    """The ``X-Document-*`` fields of ``doc``, in order."""
    fields = []
    if doc.type_code is not None:
        fields.append(("X-Document-Type", clean(str(doc.type_code))))
    if doc.class_code is not None:
        fields.append(("X-Document-Class", clean(str(doc.class_code))))
    if doc.format_code is not None and doc.format_code.code:
        fields.append(("X-Document-Format", clean(doc.format_code.code)))
    fields.append(("X-Document-Author", doc.author or "unknown"))
    fields.append(("X-Document-Date", email.utils.format_datetime(doc.created or when)))
    if source:
        fields.append(("X-Document-Source", source))
    fields.append(("X-Document-Hash", f"sha256:{doc.sha256}"))
    return fields


def _render(doc: Document, *, source: str, when: dt.datetime, received: ParsedMessage | None) -> bytes:
    m = EmailMessage(policy=POLICY)
    if received is None or not received.has("date"):
        m["Date"] = email.utils.format_datetime(when)
    m["Subject"] = f"Document : {doc.title}"
    m["Message-ID"] = email.utils.make_msgid("vault", domain=_domain(source))
    for name, value in metadata_fields(doc, source=source, when=when):
        m[name] = value
    lines = [f"Document : {doc.title}"]
    if doc.type_code is not None:
        lines.append(f"Type : {clean(str(doc.type_code))}")
    lines.append(f"Auteur : {doc.author or 'inconnu'}")
    lines.append(f"Date : {(doc.created or when).strftime('%d/%m/%Y')}")
    lines.append(f"Fichier : {doc.filename} ({len(doc.data)} octets)")
    if source:
        lines.append(f"Reçu dans le message {source}.")
    m.set_content("\n".join(lines) + "\n", charset="utf-8", cte="quoted-printable")
    maintype, _, subtype = doc.content_type.partition("/")
    # The email package writes the structure; the document's base64 goes in after, in place of a placeholder:
    # its generator walks a body line by line in Python (a 2 MB PDF is 27,000 lines) and, with this policy's
    # 200-column fields, would write 200-column base64 where RFC 2045 §6.8 allows 76.
    placeholder = secrets.token_bytes(48)
    m.add_attachment(
        placeholder, maintype=maintype or "application", subtype=subtype or "octet-stream", filename=doc.filename
    )
    skeleton = m.as_bytes()
    line = base64.b64encode(placeholder) + b"\r\n"
    at = skeleton.index(line)
    return b"".join((skeleton[:at], base64.encodebytes(doc.data).replace(b"\n", b"\r\n"), skeleton[at + len(line) :]))


# --- what the patient files -------------------------------------------------------------------------------------


def upload(message: ParsedMessage, *, when: dt.datetime) -> ParsedMessage:
    """A message the patient APPENDs into ``Documents/``: stored as sent, with ``X-Document-*`` fields added (the
    patient as author; type and hash of its first document). Fields of these names the client wrote are dropped:
    only the server labels a vault message."""
    docs = documents_of(message)
    stripped = message.remove(lambda f: f.key.startswith("x-document-"))
    if docs:
        doc = docs[0]
        doc = Document(
            doc.filename,
            doc.content_type,
            doc.data,
            doc.title,
            doc.type_code,
            doc.class_code,
            doc.format_code,
            "patient",
            doc.created,
        )
        fields = metadata_fields(doc, source="", when=when)
    else:
        fields = [("X-Document-Author", "patient"), ("X-Document-Date", email.utils.format_datetime(when))]
    rendered = [POLICY.fold(name, value).encode("ascii") for name, value in fields]
    return stripped.add_to_header(*rendered)


# --- the administrator's view: list and export ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A document of the vault as ``masante-admin vault`` shows and exports it."""

    folder: str
    uid: int
    title: str
    type: str
    author: str
    date: str
    source: str
    filename: str
    content_type: str
    hash: str  # sha256:<hex> of the document bytes, computed from them
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def _entries_of(folder: str, uid: int, msg: ParsedMessage) -> list[Entry]:
    docs = documents_of(msg)
    labelled = (msg.get("x-document-hash") or "").replace(" ", "")
    chosen = [d for d in docs if f"sha256:{d.sha256}" == labelled] or docs
    out = []
    for d in chosen:
        out.append(
            Entry(
                folder=folder,
                uid=uid,
                title=d.title,
                type=clean(next(iter(msg.decoded("x-document-type")), "")) or d.content_type,
                author=clean(next(iter(msg.decoded("x-document-author")), "")) or d.author,
                date=clean(msg.get("x-document-date") or msg.get("date") or ""),
                source=clean(msg.get("x-document-source") or ""),
                filename=d.filename,
                content_type=d.content_type,
                hash=f"sha256:{d.sha256}",
                data=d.data,
            )
        )
    return out


async def entries(ctx: Context, account: Account) -> list[Entry]:
    """Every document of ``account``'s vault, folder by folder, in UID order (decrypted here, kept in memory)."""
    out: list[Entry] = []
    async with ctx.uow(readonly=True) as uow:
        for box in sorted(await uow.mailboxes.list(account.id), key=lambda b: b.name):
            if not is_vault(box.name):
                continue
            for m in sorted(await uow.messages.list(box.id), key=lambda m: m.uid):
                raw = await read_body(uow, ctx.keyring, account, m)
                out += _entries_of(box.name, m.uid, stored(raw))
    return out


async def audit(ctx: Context, account: Account, action: str, *, actor: str, detail: str) -> None:
    async with ctx.uow() as uow:
        uow.audit(actor, action, account.owner_id, "ok", detail)
        await uow.commit()


_SAFE_FILE = re.compile(r"[^A-Za-z0-9._-]+")


def _file_name(entry: Entry) -> str:
    name = _SAFE_FILE.sub("_", entry.filename).strip("._") or "document"
    return f"{entry.uid:06d}-{name[:100]}"


def export(
    found: list[Entry],
    directory: Path,
    *,
    patient: str,
    when: dt.datetime,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write each document under ``directory/<folder>/`` and ``index.json`` of their metadata; never overwrite
    a file (``FileExistsError``). ``progress(done, total)`` after each document. Returns the index's path."""
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for done, entry in enumerate(found, start=1):
        child = directory.joinpath(*entry.folder.split(DELIMITER))
        child.mkdir(parents=True, exist_ok=True)
        path = child / _file_name(entry)
        with path.open("xb") as f:
            f.write(entry.data)
        index.append(
            {
                "file": path.relative_to(directory).as_posix(),
                "folder": entry.folder,
                "uid": entry.uid,
                "title": entry.title,
                "type": entry.type,
                "author": entry.author,
                "date": entry.date,
                "source": entry.source,
                "content_type": entry.content_type,
                "size": entry.size,
                "hash": entry.hash,
            }
        )
        if progress is not None:
            progress(done, len(found))
    target = directory / "index.json"
    with target.open("x", encoding="utf-8") as f:
        json.dump(
            {"patient": patient, "exported_at": when.isoformat(), "documents": index}, f, ensure_ascii=False, indent=2
        )
        f.write("\n")
    return target
