"""The national whitelist of operator domains, ``listeblanchemssante.xml``: reading and writing it.

Format (namespace ``https://listeblanche.mssante.fr/schema``)::

    <ListeBlancheMSSante>
      <DateDeGeneration>2025-03-13T14:54:10Z</DateDeGeneration>
      <ListeDomaines>
        <Domaine><Nom/><Description/><DNCertificatOperateur/><ResponsableContact/><SupportContact/><DateMAJ/></Domaine>
        ...

Invariants:
- A file that is not well-formed XML (a truncated download), has another root
  element, no ``ListeDomaines`` or no entry at all is refused as a whole
  (``WhitelistError``, which says where): nothing of it is used.
- A domain appears once per operator certificate DN; the entries of one domain
  are merged (DNs unique by canonical form, the newest ``DateMAJ``).
- A ``Nom`` that is not a domain name is reported (``Rejected``) and skipped;
  names are lower-cased (domains compare case-insensitively).
- Parsing goes through defusedxml: no entity expansion, no external entities.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import xml.etree.ElementTree as ET  # noqa: S405 - used to build XML only; parsing goes through defusedxml
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import ParseError  # noqa: S405 - the exception type defusedxml raises

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from directory.addresses import is_domain
from directory.dn import dn_key
from directory.errors import DirectoryError

NAMESPACE = "https://listeblanche.mssante.fr/schema"
_NS = f"{{{NAMESPACE}}}"
ROOT = "ListeBlancheMSSante"
#: a bound on one file (the 2025 list is 3.7 MB): a larger one is refused before parsing
MAX_WHITELIST_BYTES = 200 * 1024 * 1024


class WhitelistError(DirectoryError):
    """The whitelist cannot be used; the message says why and where."""


@dataclass(frozen=True, slots=True)
class Rejected:
    position: int  # the entry's rank in the file (1 = first <Domaine>)
    name: str
    reason: str


@dataclass
class ListedDomain:
    """One domain of the whitelist, its entries merged."""

    domain: str
    description: str | None = None
    dns: list[tuple[str, str]] = field(default_factory=list)  # (as written, canonical)
    responsible_contact: str | None = None
    support_contact: str | None = None
    listed_at: dt.datetime | None = None


@dataclass
class Whitelist:
    generated_at: dt.datetime | None
    domains: dict[str, ListedDomain]
    entries: int  # <Domaine> elements read
    rejected: list[Rejected]
    sha256: str


def _text(elem: ET.Element, tag: str) -> str | None:
    child = elem.find(_NS + tag)
    if child is None:
        child = elem.find(tag)
    if child is None or child.text is None:
        return None
    value = " ".join(child.text.split())
    return value or None


def parse_datetime(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read(path: Path) -> Whitelist:
    """Parse the whole file; raises WhitelistError (with the line and column) if it cannot be used."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise WhitelistError(f"cannot read the whitelist {path}: {exc.strerror}") from None
    if size > MAX_WHITELIST_BYTES:
        raise WhitelistError(f"{path} is {size} bytes, more than the {MAX_WHITELIST_BYTES} a whitelist may have")
    digest = hashlib.sha256()
    domains: dict[str, ListedDomain] = {}
    rejected: list[Rejected] = []
    generated_at: dt.datetime | None = None
    entries = 0
    saw_list = False
    root_checked = False
    try:
        with path.open("rb") as raw:
            hashing = _Hashing(raw, digest)
            for event, elem in iterparse(hashing, events=("start", "end"), forbid_dtd=True):
                name = _local(elem.tag)
                if event == "start":
                    if not root_checked:
                        root_checked = True
                        if name != ROOT:
                            raise WhitelistError(
                                f"{path} is not an MSSanté whitelist: its root element is <{name}>, not <{ROOT}>"
                            )
                    if name == "ListeDomaines":
                        saw_list = True
                    continue
                if name == "DateDeGeneration":
                    generated_at = parse_datetime((elem.text or "").strip())
                elif name == "Domaine":
                    entries += 1
                    _add_entry(domains, rejected, entries, elem)
                    elem.clear()
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise WhitelistError(
            f"{path} is not a complete whitelist (XML error at line {line}, column {column}: "
            f"{_reason(exc)}); was the download cut short? Nothing was changed"
        ) from None
    except DefusedXmlException as exc:
        raise WhitelistError(
            f"{path} was refused: it uses forbidden XML constructs ({exc}); nothing was changed"
        ) from None
    except OSError as exc:
        raise WhitelistError(f"cannot read the whitelist {path}: {exc.strerror}") from None
    if not saw_list:
        raise WhitelistError(f"{path} has no <ListeDomaines>: not a whitelist; nothing was changed")
    if not domains:
        raise WhitelistError(f"{path} lists no usable domain: refusing to empty the trust space")
    return Whitelist(generated_at, domains, entries, rejected, digest.hexdigest())


def _reason(exc: ParseError) -> str:
    text = str(exc)
    return text.split(":", 1)[0] if ": line" in text else text


class _Hashing:
    """A file wrapper that hashes what is read through it."""

    def __init__(self, raw: object, digest: hashlib._Hash) -> None:
        self.raw = raw
        self.digest = digest

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)  # type: ignore[attr-defined]
        self.digest.update(data)
        return data


def _add_entry(domains: dict[str, ListedDomain], rejected: list[Rejected], position: int, elem: ET.Element) -> None:
    raw_name = _text(elem, "Nom")
    if raw_name is None:
        rejected.append(Rejected(position, "", "the entry has no <Nom>"))
        return
    name = raw_name.strip().rstrip(".").lower()
    if not is_domain(name):
        rejected.append(Rejected(position, raw_name, "not a domain name"))
        return
    entry = domains.get(name)
    if entry is None:
        entry = domains[name] = ListedDomain(name)
    entry.description = entry.description or _text(elem, "Description")
    entry.responsible_contact = entry.responsible_contact or _text(elem, "ResponsableContact")
    entry.support_contact = entry.support_contact or _text(elem, "SupportContact")
    dn = _text(elem, "DNCertificatOperateur")
    if dn:
        key = dn_key(dn)
        if all(k != key for _, k in entry.dns):
            entry.dns.append((dn, key))
    listed = parse_datetime(_text(elem, "DateMAJ"))
    if listed and (entry.listed_at is None or listed > entry.listed_at):
        entry.listed_at = listed


@dataclass(frozen=True, slots=True)
class ExportEntry:
    domain: str
    description: str | None
    dn: str | None
    responsible_contact: str | None
    support_contact: str | None
    listed_at: dt.datetime | None


def write(entries: Iterable[ExportEntry], generated_at: dt.datetime) -> bytes:
    """The whitelist format, one ``<Domaine>`` per (domain, DN), as the national list writes it."""
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(_NS + ROOT)
    ET.SubElement(root, _NS + "DateDeGeneration").text = _iso(generated_at)
    lst = ET.SubElement(root, _NS + "ListeDomaines")
    for e in entries:
        d = ET.SubElement(lst, _NS + "Domaine")
        ET.SubElement(d, _NS + "Nom").text = e.domain
        ET.SubElement(d, _NS + "Description").text = e.description or ""
        ET.SubElement(d, _NS + "DNCertificatOperateur").text = e.dn or ""
        ET.SubElement(d, _NS + "ResponsableContact").text = e.responsible_contact or ""
        ET.SubElement(d, _NS + "SupportContact").text = e.support_contact or ""
        ET.SubElement(d, _NS + "DateMAJ").text = _iso(e.listed_at or generated_at)
    ET.indent(root, space="    ")
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
