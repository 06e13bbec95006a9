"""The directory of professionals: importing the Annuaire Santé extractions, searching them, pro accounts.

Invariants:
- A file (text, or the first ``.txt`` of a zip) is streamed in blocks of whole
  lines (``BLOCK_BYTES``); at most ``MAX_BLOCKS_IN_FLIGHT`` parsed blocks wait
  to be written, so memory stays flat whatever the file's size.
- Parsing (``directory.extractions``) runs in a worker process for large files,
  while this process writes the previous block: one block, one transaction, so
  a running server is never blocked for long.
- Importing the same file twice changes nothing the second time: only new rows
  and rows whose digest changed are written, and the counts say so.
- A search compares terms without case or accents; a professional's account is
  created only for an RPPS the directory knows, with its name and profession.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import multiprocessing
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from directory.accounts import AccountService
from directory.addresses import Address
from directory.errors import DirectoryError, InvalidIdentifier, InvalidState
from directory.extractions import (
    MAX_LINE_BYTES,
    MSS_CORRESPONDANCE,
    PS_LIBRE_ACCES,
    DirectoryFileError,
    Format,
    LineProblems,
    Parsed,
    detect,
    fold,
    parse_block,
)
from directory.identifiers import IdType, ProfessionalId, parse_national_id, parse_professional
from mailserver.context import Context
from mailserver.store.models import Account, AccountKind, Activity, Professional, PublishedMailbox
from mailserver.store.repositories.directory import SearchFilter, UpsertCounts

#: bytes of whole lines parsed and written together (one transaction): about 7,000 lines
BLOCK_BYTES = 2 * 1024 * 1024
#: files larger than this are parsed in a worker process while this one writes (the other core works too)
PARALLEL_BYTES = 16 * 1024 * 1024
#: parsed blocks waiting to be written: what bounds memory, whatever the file's size
MAX_BLOCKS_IN_FLIGHT = 2

log = logging.getLogger("masante.directory")

__all__ = ["MSS_CORRESPONDANCE", "PS_LIBRE_ACCES", "DirectoryFileError", "Format", "fold"]


class UnknownProfessional(DirectoryError):
    pass


# --- reports -------------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ImportReport(LineProblems):
    """A whole import: ``lines`` counts data lines read (header excluded)."""

    format: str
    counts: dict[str, UpsertCounts] = field(default_factory=dict)  # per table: professionals, activities, mailboxes

    def add(self, table: str, c: UpsertCounts) -> None:
        old = self.counts.get(table, UpsertCounts())
        self.counts[table] = UpsertCounts(old.added + c.added, old.updated + c.updated, old.unchanged + c.unchanged)

    @property
    def changed(self) -> bool:
        return any(c.added or c.updated for c in self.counts.values())


#: progress(bytes read, total bytes, lines read)
Progress = Callable[[int, int, int], None]


# --- reading ---------------------------------------------------------------------------------------------------


class _Source:
    """The lines of a text file or of the first ``.txt``/``.csv`` member of a zip, as bytes, with a position."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        self.stream: IO[bytes]
        try:
            if zipfile.is_zipfile(path):
                self._zip = zipfile.ZipFile(path)
                members = [i for i in self._zip.infolist() if i.filename.lower().endswith((".txt", ".csv"))]
                if not members:
                    raise DirectoryFileError(f"{path} is a zip without a .txt or .csv file")
                self.total = members[0].file_size
                self.stream = self._zip.open(members[0])
            else:
                self.total = path.stat().st_size
                self.stream = path.open("rb")
        except OSError as exc:
            raise DirectoryFileError(f"cannot read {path}: {exc.strerror or exc}") from None
        except zipfile.BadZipFile as exc:
            raise DirectoryFileError(f"{path} is a damaged zip file: {exc}") from None

    def close(self) -> None:
        self.stream.close()
        if self._zip is not None:
            self._zip.close()


class DirectoryImporter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def import_file(
        self, path: Path, *, actor: str, progress: Progress | None = None, workers: int | None = None
    ) -> ImportReport:
        """Import ``path``. ``workers``: 1 parses in a worker process while this one writes, 0 parses here;
        by default a worker is used for files above ``PARALLEL_BYTES``."""
        source = _Source(path)
        try:
            if workers is None:
                workers = 1 if source.total > PARALLEL_BYTES else 0
            if workers <= 0:
                return await self._import(source, actor=actor, progress=progress, pool=None)
            # spawn: a fresh interpreter, not a fork of this process and its database threads
            with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
                return await self._import(source, actor=actor, progress=progress, pool=pool)
        finally:
            source.close()

    async def _import(
        self, source: _Source, *, actor: str, progress: Progress | None, pool: Executor | None
    ) -> ImportReport:
        header_line = source.stream.readline(MAX_LINE_BYTES + 1)
        if not header_line:
            raise DirectoryFileError(f"{source.path} is empty")
        header = header_line.decode("utf-8-sig", errors="replace").rstrip("\r\n").split("|")
        fmt = detect(header)
        cols = fmt.columns(header)
        report = ImportReport(format=fmt.name)
        now = self.ctx.clock()
        loop = asyncio.get_running_loop()
        in_flight: deque[tuple[asyncio.Future[Parsed], bytes, int]] = deque()
        done = len(header_line)
        workers = pool

        async def write_oldest() -> None:
            nonlocal workers
            future, block, first_line = in_flight.popleft()
            try:
                parsed = await future
            except BrokenProcessPool:  # the worker died (killed, out of memory...): go on in this process
                log.warning("directory.import-worker-lost", extra={"fields": {"line": first_line}})
                workers = None
                parsed = parse_block(fmt.name, cols, block, first_line, now)
            report.merge(parsed)
            await self._store(fmt, parsed.rows, report)

        try:
            for block, first_line, size in _blocks(source.stream, first_line=2):
                done += size
                if workers is None:
                    future: asyncio.Future[Parsed] = loop.create_future()
                    future.set_result(parse_block(fmt.name, cols, block, first_line, now))
                else:
                    future = loop.run_in_executor(workers, parse_block, fmt.name, cols, block, first_line, now)
                in_flight.append((future, block, first_line))
                if len(in_flight) >= MAX_BLOCKS_IN_FLIGHT or workers is None:
                    await write_oldest()
                if progress:
                    progress(done, source.total, report.lines)
            while in_flight:
                await write_oldest()
        finally:
            for f, _, _ in in_flight:
                f.cancel()
        if progress:
            progress(source.total, source.total, report.lines)
        async with self.ctx.uow() as uow:
            summary = "; ".join(f"{t} +{c.added} ~{c.updated} ={c.unchanged}" for t, c in report.counts.items())
            uow.audit(
                actor,
                "directory.import",
                f"file:{source.path.name}"[:500],
                "ok",
                f"{fmt.name}: {report.lines} lines, {summary}, rejected {report.rejected}",
            )
            await uow.commit()
        return report

    async def _store(self, fmt: Format, rows: dict[str, list[dict[str, Any]]], report: ImportReport) -> None:
        async with self.ctx.uow() as uow:
            if fmt is PS_LIBRE_ACCES:
                report.add("professionals", await uow.directory.upsert(Professional, rows["professionals"]))
                report.add("activities", await uow.directory.upsert(Activity, rows["activities"]))
            else:
                report.add("mailboxes", await uow.directory.upsert(PublishedMailbox, rows["mailboxes"]))
            await uow.commit()


def _blocks(stream: IO[bytes], *, first_line: int) -> Iterator[tuple[bytes, int, int]]:
    """(whole lines, number of the first, bytes consumed) of about ``BLOCK_BYTES`` each. A line longer than
    ``MAX_LINE_BYTES`` is cut short to that length (the parser then reports it) rather than held whole."""
    line_no = first_line
    carry = b""
    while True:
        chunk = stream.read(BLOCK_BYTES)
        if not chunk:
            break
        data = carry + chunk
        end = data.rfind(b"\n")
        if end < 0:
            if len(data) > MAX_LINE_BYTES:  # no end of line in sight: keep its beginning only
                data = data[: MAX_LINE_BYTES + 1]
            carry = data
            continue
        block, carry = data[: end + 1], data[end + 1 :]
        yield block, line_no, len(block)
        line_no += block.count(b"\n")
    if carry:
        yield carry + b"\n", line_no, len(carry)


# --- search ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """One professional (with their activities' places and published mailboxes) or one mailbox of a structure."""

    kind: str  # "professional" or the mailbox type (ORG, APP...)
    name: str
    identifier: str | None  # "RPPS 10001045367"
    profession: str | None
    places: tuple[str, ...]  # "organisation, street, postal code city"
    mailboxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Query:
    text: str | None = None
    name: str | None = None
    identifier: str | None = None
    profession: str | None = None
    city: str | None = None
    address: str | None = None

    def empty(self) -> bool:
        return not any((self.text, self.name, self.identifier, self.profession, self.city, self.address))


def _place(organisation: str | None, street: str | None, postal: str | None, city: str | None) -> str:
    where = " ".join(p for p in (postal, city) if p)
    return ", ".join(p for p in (organisation, street, where) if p)


def _person(title: str | None, first: str | None, last: str | None) -> str:
    return " ".join(p for p in (title, first, last) if p) or "(no name)"


class DirectorySearch:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def search(self, q: Query, *, limit: int = 50) -> builtins.list[Hit]:
        if q.empty():
            raise InvalidState("say what to search for: a name, an identifier, a profession, a city or an address")
        name_terms: list[str] = []
        identifier = q.identifier
        mailbox = None
        address_terms = fold(q.address).split() if q.address else []
        if q.address and "@" in q.address:
            mailbox, address_terms = q.address.strip().lower(), []
        if q.text:
            t = q.text.strip()
            if "@" in t:
                mailbox = t.lower()
            elif t.replace(" ", "").isdigit() and len(t.replace(" ", "")) in (9, 10, 11, 12):
                identifier = t.replace(" ", "")
            else:
                name_terms += fold(t).split()
        if q.name:
            name_terms += fold(q.name).split()
        national_ids: tuple[str, ...] = ()
        if identifier:
            pid = parse_professional(identifier)  # InvalidIdentifier says what is wrong
            national_ids = (pid.national_id,)
        async with self.ctx.uow(readonly=True) as uow:
            codes = None
            if q.profession:
                codes = await self._profession_codes(uow, q.profession)
            f = SearchFilter(
                name=tuple(name_terms),
                national_ids=national_ids,
                profession_codes=codes,
                city=fold(q.city) if q.city else None,
                address=tuple(address_terms),
                mailbox=mailbox,
            )
            people = await uow.directory.search_professionals(f, limit)
            ids = [p.national_id for p in people]
            acts: dict[str, list[Activity]] = {}
            for a in await uow.directory.activities_of(ids):
                acts.setdefault(a.national_id, []).append(a)
            boxes: dict[str, list[str]] = {}
            for m in await uow.directory.mailboxes_of(ids):
                boxes.setdefault(m.national_id or "", []).append(m.address)
            hits = [
                Hit(
                    "professional",
                    _person(p.title, p.first_name, p.last_name),
                    str(ProfessionalId(IdType(p.id_type), p.identifier)),
                    p.profession,
                    tuple(
                        dict.fromkeys(
                            _place(a.organisation, a.street, a.postal_code, a.city) for a in acts.get(p.national_id, [])
                        )
                    ),
                    tuple(boxes.get(p.national_id, [])),
                )
                for p in people
            ]
            if len(hits) < limit:
                for m in await uow.directory.search_mailboxes(f, limit - len(hits), exclude_national_ids=ids):
                    person = m.last_name or m.first_name
                    hits.append(
                        Hit(
                            m.kind,
                            _person(m.title, m.first_name, m.last_name)
                            if person
                            else (m.service or m.organisation or m.address),
                            _id_text(m.national_id),
                            m.profession,
                            (_place(m.organisation, m.street, m.postal_code, m.city),),
                            (m.address,),
                        )
                    )
        return hits

    @staticmethod
    async def _profession_codes(uow: Any, term: str) -> tuple[str, ...]:
        t = term.strip()
        if t.isdigit():
            return (t,)
        wanted = fold(t)
        return tuple(sorted({code for code, label in await uow.directory.professions() if wanted in fold(label)}))


def _id_text(national_id: str | None) -> str | None:
    if not national_id:
        return None
    try:
        return str(parse_national_id(national_id))
    except InvalidIdentifier:
        return national_id


# --- professional accounts -----------------------------------------------------------------------------------

PRO_KINDS = {"PER": AccountKind.PER, "ORG": AccountKind.ORG, "APP": AccountKind.APP}


@dataclass(frozen=True, slots=True)
class ProAccount:
    account: Account
    professional: Professional


async def create_pro_account(
    ctx: Context, *, rpps: str, address: str, kind: str, actor: str, password: str | None
) -> ProAccount:
    """A professional's mailbox, created from the directory: the RPPS must be known there; the name and
    profession come from it. PER is the professional's own mailbox, ORG a service (a secretariat) and APP
    software, both under the professional responsible for them. Address and kind never change afterwards."""
    if kind.upper() not in PRO_KINDS:
        raise InvalidState(f"kind {kind!r} is not PER, ORG or APP")
    account_kind = PRO_KINDS[kind.upper()]
    pid = parse_professional(rpps)
    if pid.type is not IdType.RPPS:
        raise InvalidIdentifier(f"{rpps} is an ADELI number; a mailbox is created from an RPPS number")
    addr = str(Address.parse(address))
    async with ctx.uow(readonly=True) as uow:
        pro = await uow.directory.professional(pid.national_id)
        published = await uow.directory.mailbox(addr)
    if pro is None:
        raise UnknownProfessional(
            f"RPPS {pid.value} is not in the directory: import the Annuaire Santé extraction first "
            "(masante-admin directory import PS_LibreAcces_Personne_activite_....txt)"
        )
    if published is not None:
        if published.kind != account_kind.value:
            raise InvalidState(f"{addr} is published in the directory as a {published.kind} mailbox, not {kind}")
        if published.national_id and published.national_id != pid.national_id:
            raise InvalidState(f"{addr} is published in the directory for another professional")
    name = _person(None, pro.first_name, pro.last_name)
    if account_kind is not AccountKind.PER:
        name = published.service or published.organisation or name if published else name
    account = await AccountService(ctx).create(
        addr,
        account_kind,
        actor=actor,
        password=password,
        display_name=name,
        rpps=pid.value,
        # a service (ORG) takes its responsible professional's profession: a pharmacy's shared mailbox is a
        # pharmacist's, which patients may write to first; software (APP) has none
        profession_code=pro.profession_code if account_kind is not AccountKind.APP else None,
    )
    return ProAccount(account, pro)
