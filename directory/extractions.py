"""Reading the public Annuaire Santé extractions: formats found by header name, rows checked and keyed.

Pure parsing (no storage, no event loop), so that it can run in a worker process
while the importer (``directory.annuaire``) writes the previous block:
``parse_block`` turns a block of whole lines into rows ready to write, with the
problems of each rejected line.

Two files (docs/reference/mssante.md §2.2-2.3), both ``|``-separated UTF-8
text with one header line:
- ``PS_LibreAcces_Personne_activite``: one row per activity of a professional
  (identifiers, names, profession, savoir-faire, mode of practice, the site's
  SIRET/FINESS and address);
- ``Extraction_Correspondance_MSSante``: one row per published secure mailbox
  (type PER/ORG/APP/CAB, address, the professional's ids, profession, structure).

Invariants:
- Columns are found by their header name (compared without case, accents or
  extra spaces), so a newer file with appended or reordered columns still
  parses; a file lacking a required column is refused before any row is read.
- A row whose identifiers are invalid (RPPS Luhn, ADELI form, national id not
  ``8``+RPPS / ``0``+ADELI, mailbox address) is rejected with its line number; an
  invalid FINESS is dropped from its row with a warning.
- Every row carries its key and ``row_hash``, a digest of its fields: equal
  input gives equal rows, whatever the column order.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from directory.addresses import Address
from directory.errors import DirectoryError, InvalidAddress, InvalidIdentifier
from directory.identifiers import ProfessionalId, parse_national_id, professional_id, validate_finess

#: rejected rows listed in a report (all are counted)
MAX_REPORTED = 50
#: a line longer than this is not a directory row
MAX_LINE_BYTES = 64 * 1024

MAILBOX_KINDS = frozenset({"PER", "ORG", "APP", "CAB"})


class DirectoryFileError(DirectoryError):
    """The file cannot be imported at all (not a known extraction, a required column missing...)."""


def fold(text: str | None) -> str:
    """Lower case, no accents, single spaces: the form search columns and search terms are compared in."""
    if not text:
        return ""
    return _fold(text)


@lru_cache(maxsize=65536)
def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def _header_key(name: str) -> str:
    return fold(name).replace("\u2019", "'")


# --- the two formats -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]

    def columns(self, header: Sequence[str]) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, name in enumerate(header):
            index.setdefault(_header_key(name), i)
        missing = [c for c in self.required if _header_key(c) not in index]
        if missing:
            raise DirectoryFileError(
                f"not a complete {self.name} file: column(s) {', '.join(repr(m) for m in missing)} missing"
            )
        return {c: index[_header_key(c)] for c in (*self.required, *self.optional) if _header_key(c) in index}


PS_LIBRE_ACCES = Format(
    "PS_LibreAcces_Personne_activite",
    required=("Type d'identifiant PP", "Identifiant PP", "Identification nationale PP", "Nom d'exercice"),
    optional=(
        "Libellé civilité d'exercice",
        "Libellé civilité",
        "Prénom d'exercice",
        "Code profession",
        "Libellé profession",
        "Code catégorie professionnelle",
        "Libellé catégorie professionnelle",
        "Code savoir-faire",
        "Libellé savoir-faire",
        "Code mode exercice",
        "Libellé mode exercice",
        "Numéro SIRET site",
        "Numéro FINESS site",
        "Numéro FINESS établissement juridique",
        "Identifiant technique de la structure",
        "Raison sociale site",
        "Enseigne commerciale site",
        "Complément destinataire (coord. structure)",
        "Complément point géographique (coord. structure)",
        "Numéro Voie (coord. structure)",
        "Indice répétition voie (coord. structure)",
        "Libellé type de voie (coord. structure)",
        "Libellé Voie (coord. structure)",
        "Mention distribution (coord. structure)",
        "Code postal (coord. structure)",
        "Libellé commune (coord. structure)",
        "Téléphone (coord. structure)",
    ),
)

MSS_CORRESPONDANCE = Format(
    "Extraction_Correspondance_MSSante",
    required=("Type de BAL", "Adresse BAL"),
    optional=(
        "Type Identifiant PP",
        "Identifiant PP",
        "Identification nationale PP",
        "Type identifiant structure",
        "Identification Structure",
        "Service de rattachement",
        "Civilité d'exercice",
        "Nom d'exercice",
        "Prénom d'exercice",
        "Code Profession",
        "Libellé Profession",
        "Libellé savoir-faire",
        "Dématérialisation",
        "Raison Sociale structure BAL",
        "Enseigne commerciale structure BAL",
        "L2COMPLEMENTLOCALISATION structure BAL",
        "L3COMPLEMENTDISTRIBUTION structure BAL",
        "L4NUMEROVOIE structure BAL",
        "L4COMPLEMENTNUMEROVOIE structure BAL",
        "NL4TYPEVOIE structure BAL",
        "L4LIBELLEVOIE structure BAL",
        "L5LIEUDITMENTION structure BAL",
        "L6LIGNEACHEMINEMENT structure BAL",
        "Code postal structure BAL",
    ),
)


def detect(header: Sequence[str]) -> Format:
    keys = {_header_key(h) for h in header}
    if _header_key("Adresse BAL") in keys:
        return MSS_CORRESPONDANCE
    if _header_key("Identifiant PP") in keys and _header_key("Type d'identifiant PP") in keys:
        return PS_LIBRE_ACCES
    raise DirectoryFileError(
        "unknown file: the header is neither PS_LibreAcces_Personne_activite nor Extraction_Correspondance_MSSante"
    )


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    reason: str


@dataclass(kw_only=True)
class LineProblems:
    """Lines read, and the problems met on them (the first ``MAX_REPORTED`` kept with their line number)."""

    lines: int = 0
    rejected: int = 0
    warnings: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    def problem(self, line: int, reason: str, *, warning: bool = False) -> None:
        if warning:
            self.warnings += 1
        else:
            self.rejected += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(RowProblem(line, reason))

    def merge(self, other: LineProblems) -> None:
        self.lines += other.lines
        self.rejected += other.rejected
        self.warnings += other.warnings
        self.problems += other.problems[: MAX_REPORTED - len(self.problems)]


@dataclass(kw_only=True)
class Parsed(LineProblems):
    """What a block of lines gave: rows per table, the lines read, and the problems met."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


FORMATS = {f.name: f for f in (PS_LIBRE_ACCES, MSS_CORRESPONDANCE)}


def parse_block(fmt_name: str, cols: dict[str, int], block: bytes, first_line: int, now: dt.datetime) -> Parsed:
    """Rows from ``block`` (whole lines, ``first_line`` the number of its first one in the file)."""
    fmt = FORMATS[fmt_name]
    picks = _picks(fmt, cols)
    out = Parsed()
    lines = block.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the block ends with a newline
    people: dict[str, dict[str, Any]] = {}
    activities: dict[str, dict[str, Any]] = {}
    boxes: dict[str, dict[str, Any]] = {}
    for line_no, raw in enumerate(lines, first_line):
        if len(raw) > MAX_LINE_BYTES:
            out.lines += 1
            out.problem(line_no, f"line longer than {MAX_LINE_BYTES} bytes")
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.lines += 1
            out.problem(line_no, "not UTF-8")
            continue
        text = text.rstrip("\r")
        if not text.strip():
            continue
        out.lines += 1
        row = _row(picks, text.split("|"))
        if fmt is PS_LIBRE_ACCES:
            activity = _activity_row(row, line_no, out, now, people)
            if activity is not None:
                activities[activity["key"]] = activity
        else:
            box = _mailbox_row(row, line_no, out, now)
            if box is not None:
                boxes[box["address"]] = box
    if fmt is PS_LIBRE_ACCES:
        out.rows = {"professionals": list(people.values()), "activities": list(activities.values())}
    else:
        out.rows = {"mailboxes": list(boxes.values())}
    return out


def _digest(values: Sequence[object]) -> str:
    text = "\x1f".join([v if v.__class__ is str else ("" if v is None else str(v)) for v in values])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _join(*parts: str | None) -> str | None:
    text = " ".join(p for p in parts if p)
    return " ".join(text.split()) or None


#: one row: every column a format names, stripped, None when empty or absent from the file
_Row = dict[str, str | None]


def _picks(fmt: Format, cols: dict[str, int]) -> tuple[list[tuple[str, int]], int]:
    """(column name, index) for every column of the format, and the width rows are padded to: a column
    absent from the file points past the last one read, at an empty padding field."""
    width = max(cols.values(), default=0) + 2
    return [(name, cols.get(name, width - 1)) for name in (*fmt.required, *fmt.optional)], width


def _row(picks: tuple[list[tuple[str, int]], int], fields: list[str]) -> _Row:
    names, width = picks
    if len(fields) < width:
        fields += [""] * (width - len(fields))
    return {name: fields[i].strip() or None for name, i in names}


def _checked_finess(value: str | None, what: str, line_no: int, report: Parsed) -> str | None:
    if value is None:
        return None
    try:
        return validate_finess(value)
    except InvalidIdentifier as exc:
        report.problem(line_no, f"{exc}: {what} left out", warning=True)
        return None


def _national(row: _Row, type_col: str, id_col: str, nat_col: str) -> ProfessionalId | None:
    """The professional's id from (type, identifier) and/or the national id; they must agree."""
    return _checked_id(row[type_col], row[id_col], row[nat_col])


@lru_cache(maxsize=65536)  # a professional has several rows (activities): validate once
def _checked_id(id_type: str | None, ident: str | None, national: str | None) -> ProfessionalId | None:
    pid = None
    if id_type and ident:
        pid = professional_id(id_type, ident)
        if national == pid.national_id:
            return pid
    if national:
        from_national = parse_national_id(national)
        if pid is not None and from_national != pid:
            raise InvalidIdentifier(f"national id {national} does not match {pid}")
        pid = pid or from_national
    return pid


def _activity_row(
    row: _Row, line_no: int, report: Parsed, now: Any, people: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """The activity of one row; its professional goes into ``people`` (the first row of a batch tells)."""
    try:
        pid = _national(row, "Type d'identifiant PP", "Identifiant PP", "Identification nationale PP")
    except InvalidIdentifier as exc:
        report.problem(line_no, str(exc))
        return None
    if pid is None:
        report.problem(line_no, "no professional identifier")
        return None
    national_id = pid.national_id
    if national_id not in people:
        people[national_id] = _person_of(row, pid, now)
    activity = _activity_of(row, pid, line_no, report, now)
    return activity


def _person_of(row: _Row, pid: ProfessionalId, now: Any) -> dict[str, Any]:
    last, first = row["Nom d'exercice"], row["Prénom d'exercice"]
    person = {
        "national_id": pid.national_id,
        "id_type": pid.type.value,
        "identifier": pid.value,
        "title": row["Libellé civilité d'exercice"],
        "civility": row["Libellé civilité"],
        "last_name": last,
        "first_name": first,
        "profession_code": row["Code profession"],
        "profession": row["Libellé profession"],
        "category_code": row["Code catégorie professionnelle"],
        "category": row["Libellé catégorie professionnelle"],
    }
    person["search"] = f"{fold(last)} {fold(first)}".strip()
    person["row_hash"] = _digest(list(person.values()))
    person["updated_at"] = now
    return person


def _activity_of(row: _Row, pid: ProfessionalId, line_no: int, report: Parsed, now: Any) -> dict[str, Any]:
    siret = row["Numéro SIRET site"]
    finess_site = _checked_finess(row["Numéro FINESS site"], "FINESS site", line_no, report)
    finess_legal = _checked_finess(row["Numéro FINESS établissement juridique"], "FINESS legal entity", line_no, report)
    structure = row["Identifiant technique de la structure"]
    street = _join(
        row["Numéro Voie (coord. structure)"],
        row["Indice répétition voie (coord. structure)"],
        row["Libellé type de voie (coord. structure)"],
        row["Libellé Voie (coord. structure)"],
        row["Complément destinataire (coord. structure)"],
        row["Complément point géographique (coord. structure)"],
        row["Mention distribution (coord. structure)"],
    )
    city, postal = row["Libellé commune (coord. structure)"], row["Code postal (coord. structure)"]
    organisation = row["Raison sociale site"] or row["Enseigne commerciale site"]
    activity = {
        "national_id": pid.national_id,
        "profession_code": row["Code profession"],
        "profession": row["Libellé profession"],
        "specialty_code": row["Code savoir-faire"],
        "specialty": row["Libellé savoir-faire"],
        "practice_mode": row["Libellé mode exercice"],
        "siret": siret[:14] if siret else None,
        "finess_site": finess_site,
        "finess_legal": finess_legal,
        "structure_id": structure[:32] if structure else None,
        "organisation": organisation,
        "street": street,
        "postal_code": postal[:10] if postal else None,
        "city": city,
        "phone": (row["Téléphone (coord. structure)"] or "")[:30] or None,
    }
    # the professional's id first: a professional's activities sit together, and a file sorted by
    # identifier (as the national extraction is) writes the table in key order
    what = [structure, siret, finess_site, row["Code profession"], row["Code savoir-faire"], row["Code mode exercice"]]
    activity["key"] = f"{pid.national_id}:{_digest(what)[:16]}"
    activity["search"] = "|".join((fold(city), postal or "", fold(street), fold(organisation)))
    activity["row_hash"] = _digest(list(activity.values()))
    activity["updated_at"] = now
    return activity


def _mailbox_row(row: _Row, line_no: int, report: Parsed, now: Any) -> dict[str, Any] | None:
    kind = (row["Type de BAL"] or "").upper()
    if kind not in MAILBOX_KINDS:
        report.problem(line_no, f"mailbox type {row['Type de BAL']!r} is not PER, ORG, APP or CAB")
        return None
    try:
        address = str(Address.parse(row["Adresse BAL"] or ""))
    except InvalidAddress as exc:
        report.problem(line_no, str(exc))
        return None
    try:
        pid = _national(row, "Type Identifiant PP", "Identifiant PP", "Identification nationale PP")
    except InvalidIdentifier as exc:
        report.problem(line_no, str(exc))
        return None
    if kind == "PER" and pid is None:
        report.problem(line_no, "a personal (PER) mailbox without the professional's identifier")
        return None
    last, first = row["Nom d'exercice"], row["Prénom d'exercice"]
    organisation = row["Raison Sociale structure BAL"] or row["Enseigne commerciale structure BAL"]
    service = row["Service de rattachement"]
    street = _join(
        row["L4NUMEROVOIE structure BAL"],
        row["L4COMPLEMENTNUMEROVOIE structure BAL"],
        row["NL4TYPEVOIE structure BAL"],
        row["L4LIBELLEVOIE structure BAL"],
        row["L2COMPLEMENTLOCALISATION structure BAL"],
        row["L3COMPLEMENTDISTRIBUTION structure BAL"],
        row["L5LIEUDITMENTION structure BAL"],
    )
    postal = row["Code postal structure BAL"]
    routing = row["L6LIGNEACHEMINEMENT structure BAL"]  # "75013 PARIS"
    city = routing
    if routing:
        head, _, rest = routing.partition(" ")
        if head.isdigit() and rest:
            city = rest
            postal = postal or head
    structure = row["Identification Structure"]
    box = {
        "address": address,
        "kind": kind,
        "national_id": pid.national_id if pid else None,
        "structure_id": structure[:32] if structure else None,
        "service": service,
        "title": row["Civilité d'exercice"],
        "last_name": last,
        "first_name": first,
        "profession_code": row["Code Profession"],
        "profession": row["Libellé Profession"],
        "specialty": row["Libellé savoir-faire"],
        "dematerialised": (row["Dématérialisation"] or "").lower() in ("true", "oui", "1", "o"),
        "organisation": organisation,
        "street": street,
        "postal_code": postal[:10] if postal else None,
        "city": city,
    }
    box["search"] = "|".join(
        (fold(city), postal or "", fold(street), f"{fold(last)} {fold(first)} {fold(organisation)} {fold(service)}")
    )
    box["row_hash"] = _digest(list(box.values()))
    box["updated_at"] = now
    return box
