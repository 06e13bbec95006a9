"""Directory rows (professionals, activities, published mailboxes) and conversation grants.

Imports write in batches: ``upsert`` reads the digests of the batch's keys, then
inserts the new rows and updates the changed ones, and says how many of each.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, bindparam, delete, exists, func, literal_column, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.base import Executable

from mailserver.store.errors import Conflict
from mailserver.store.models import Activity, ConversationGrant, Professional, PublishedMailbox
from mailserver.store.repositories.base import Repository, insert_many, is_postgresql, rows_of
from mailserver.store.sealing import MetadataSealer

DirectoryModel = type[Professional] | type[Activity] | type[PublishedMailbox]


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """Normalised search terms (lower case, no accents); every given one must match."""

    name: tuple[str, ...] = ()
    national_ids: tuple[str, ...] = ()
    identifier: str | None = None
    profession_codes: tuple[str, ...] | None = None  # None: any profession
    city: str | None = None
    address: tuple[str, ...] = ()  # postal address terms
    mailbox: str | None = None  # a part of a secure mail address


def _key_column(model: DirectoryModel) -> Any:
    if model is Professional:
        return Professional.national_id
    if model is Activity:
        return Activity.key
    return PublishedMailbox.address


def _like(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _prefix(term: str) -> str:
    escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%"


class DirectoryRepository(Repository):
    async def upsert(self, model: DirectoryModel, rows: Sequence[Mapping[str, Any]]) -> UpsertCounts:
        """Insert rows whose key is new, update those whose ``row_hash`` changed (one key per row)."""
        if not rows:
            return UpsertCounts()
        key_col = _key_column(model)
        key_name = key_col.key
        by_key = {r[key_name]: r for r in rows}
        rows_found = await self.session.execute(select(key_col, model.row_hash).where(key_col.in_(list(by_key))))
        existing: dict[str, str] = {k: h for k, h in rows_found.all()}
        new = [r for k, r in by_key.items() if k not in existing]
        changed = [r for k, r in by_key.items() if k in existing and existing[k] != r["row_hash"]]
        if new:
            await self._insert_many(model, new)
        if changed:
            await self.session.execute(update(model), changed)
        return UpsertCounts(len(new), len(changed), len(by_key) - len(new) - len(changed))

    async def _insert_many(self, model: DirectoryModel, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_many(self.session, model.__table__, rows)  # type: ignore[arg-type]

    async def count(self, model: DirectoryModel) -> int:
        return int((await self.session.execute(select(func.count()).select_from(model))).scalar_one())

    async def professional(self, national_id: str) -> Professional | None:
        return await self.session.get(Professional, national_id)

    async def activities_of(self, national_ids: Collection[str]) -> Sequence[Activity]:
        if not national_ids:
            return []
        stmt = select(Activity).where(Activity.national_id.in_(list(national_ids))).order_by(Activity.key)
        return (await self.session.execute(stmt)).scalars().all()

    async def mailboxes_of(self, national_ids: Collection[str]) -> Sequence[PublishedMailbox]:
        if not national_ids:
            return []
        stmt = (
            select(PublishedMailbox)
            .where(PublishedMailbox.national_id.in_(list(national_ids)))
            .order_by(PublishedMailbox.address)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def mailbox(self, address: str) -> PublishedMailbox | None:
        return await self.session.get(PublishedMailbox, address.lower())

    async def professions(self) -> builtins.list[tuple[str, str]]:
        """Every (code, label) pair known, from professionals and published mailboxes."""
        pairs: set[tuple[str, str]] = set()
        for model in (Professional, PublishedMailbox):
            stmt = select(model.profession_code, model.profession).where(model.profession_code.is_not(None)).distinct()
            pairs |= {(c, label or "") for c, label in (await self.session.execute(stmt)).all() if c}
        return sorted(pairs)

    def _professional_where(self, f: SearchFilter) -> builtins.list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = [Professional.search.like(_like(t), escape="\\") for t in f.name]
        if f.national_ids:
            where.append(Professional.national_id.in_(f.national_ids))
        if f.profession_codes is not None:
            where.append(Professional.profession_code.in_(f.profession_codes))
        place: list[ColumnElement[bool]] = []
        if f.city is not None:
            place.append(
                or_(Activity.search.like(_prefix(f.city), escape="\\"), Activity.postal_code.like(_prefix(f.city)))
            )
        place += [Activity.search.like(_like(t), escape="\\") for t in f.address]
        if place:
            where.append(exists().where(Activity.national_id == Professional.national_id, *place))
        if f.mailbox is not None:
            where.append(
                exists().where(
                    PublishedMailbox.national_id == Professional.national_id,
                    PublishedMailbox.address.like(_like(f.mailbox), escape="\\"),
                )
            )
        return where

    async def search_professionals(self, f: SearchFilter, limit: int) -> Sequence[Professional]:
        stmt = (
            select(Professional)
            .where(*self._professional_where(f))
            .order_by(Professional.last_name, Professional.first_name, Professional.national_id)
            .limit(limit)
        )
        return (await self.session.execute(stmt)).scalars().all()

    async def search_mailboxes(
        self, f: SearchFilter, limit: int, *, exclude_national_ids: Collection[str] = ()
    ) -> Sequence[PublishedMailbox]:
        """Published mailboxes matching ``f`` on their own columns (organisations, services, software)."""
        where: list[ColumnElement[bool]] = [PublishedMailbox.search.like(_like(t), escape="\\") for t in f.name]
        if f.national_ids:
            where.append(PublishedMailbox.national_id.in_(f.national_ids))
        if f.profession_codes is not None:
            where.append(PublishedMailbox.profession_code.in_(f.profession_codes))
        if f.city is not None:
            where.append(
                or_(
                    PublishedMailbox.search.like(_prefix(f.city), escape="\\"),
                    PublishedMailbox.postal_code.like(_prefix(f.city)),
                )
            )
        where += [PublishedMailbox.search.like(_like(t), escape="\\") for t in f.address]
        if f.mailbox is not None:
            where.append(PublishedMailbox.address.like(_like(f.mailbox), escape="\\"))
        if exclude_national_ids:
            where.append(
                or_(
                    PublishedMailbox.national_id.is_(None),
                    PublishedMailbox.national_id.not_in(list(exclude_national_ids)),
                )
            )
        stmt = select(PublishedMailbox).where(and_(*where)).order_by(PublishedMailbox.address).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()


@dataclass(frozen=True, slots=True)
class Grant:
    """A conversation grant, opened: ``patient`` may reply to ``contact``."""

    patient: str
    contact: str
    granted_by: str
    granted_at: dt.datetime
    refreshed_at: dt.datetime


#: the grant of one (patient, contact) pair, by its digest
_GRANT_OF_PAIR = select(ConversationGrant.id).where(ConversationGrant.pair_digest == bindparam("pair"))


_grants = cast(Table, ConversationGrant.__table__)
#: PostgreSQL: a grant recorded or refreshed in one statement, the row locked by it; whether it is new (a row
#: inserted by this transaction has no ``xmax``, one updated by it has this transaction's)
_NEW_GRANT = pg_insert(_grants).values(
    patient_digest=bindparam("patient_digest"),
    pair_digest=bindparam("pair_digest"),
    sealed=bindparam("sealed"),
    granted_at=bindparam("at"),
    refreshed_at=bindparam("at"),
)
_UPSERT_GRANT: Executable = _NEW_GRANT.on_conflict_do_update(
    index_elements=[_grants.c.pair_digest],
    set_={"sealed": _NEW_GRANT.excluded.sealed, "refreshed_at": _NEW_GRANT.excluded.refreshed_at},
).returning(literal_column("xmax = 0"))


class GrantRepository(Repository):
    """Conversation grants, kept under the metadata key (``crypto.metadata``): addresses are lower-cased,
    looked up by digest and read back only by opening the sealed part."""

    KIND = "grant"

    def __init__(self, session: AsyncSession, key: Callable[[], MetadataSealer]) -> None:
        super().__init__(session)
        self._key = key

    def _pair(self, patient: str, contact: str) -> bytes:
        return self._key().digest(self.KIND, patient.lower(), contact.lower())

    def _patient(self, patient: str) -> bytes:
        return self._key().digest(self.KIND, patient.lower())

    def _seal(self, pair: bytes, patient: str, contact: str, granted_by: str) -> bytes:
        text = json.dumps({"patient": patient.lower(), "contact": contact.lower(), "granted_by": granted_by}).encode()
        return self._key().seal(text, kind=self.KIND, bound_to=pair)

    async def has(self, patient: str, contact: str) -> bool:
        """Does ``patient`` hold a grant for ``contact``? (A patient's SMTP RCPT: one statement, built once.)"""
        return (await self.session.execute(_GRANT_OF_PAIR, {"pair": self._pair(patient, contact)})).first() is not None

    async def grant(self, patient: str, contact: str, *, granted_by: str, at: dt.datetime) -> bool:
        """Record (or refresh) the grant; True if it is new. PostgreSQL: one upsert (``_UPSERT_GRANT``)."""
        pair = self._pair(patient, contact)
        sealed = self._seal(pair, patient, contact, granted_by)
        if is_postgresql(self.session):
            params = {"patient_digest": self._patient(patient), "pair_digest": pair, "sealed": sealed, "at": at}
            return bool((await rows_of(self.session, _UPSERT_GRANT, params))[0][0])
        stmt = select(ConversationGrant).where(ConversationGrant.pair_digest == pair)
        row = (await self.session.execute(stmt.with_for_update())).scalar_one_or_none()
        if row is not None:
            row.refreshed_at, row.sealed = at, sealed
            return False
        try:
            async with self._conflict_as("grant exists"):
                self.session.add(
                    ConversationGrant(
                        patient_digest=self._patient(patient),
                        pair_digest=pair,
                        sealed=sealed,
                        granted_at=at,
                        refreshed_at=at,
                    )
                )
        except Conflict:  # a concurrent delivery recorded it first: refresh that one
            row = (await self.session.execute(stmt)).scalar_one()
            row.refreshed_at, row.sealed = at, sealed
            return False
        return True

    async def withdraw(self, patient: str, contact: str) -> bool:
        result = await self.session.execute(
            delete(ConversationGrant).where(ConversationGrant.pair_digest == self._pair(patient, contact))
        )
        return bool(getattr(result, "rowcount", 0))

    async def of_patient(self, patient: str) -> list[Grant]:
        stmt = select(ConversationGrant).where(ConversationGrant.patient_digest == self._patient(patient))
        out = []
        for row in (await self.session.execute(stmt)).scalars():
            opened = json.loads(self._key().open(row.sealed, kind=self.KIND, bound_to=row.pair_digest))
            out.append(
                Grant(patient.lower(), opened["contact"], opened["granted_by"], row.granted_at, row.refreshed_at)
            )
        return sorted(out, key=lambda g: g.contact)

    async def forget_patient(self, patient: str) -> int:
        result = await self.session.execute(
            delete(ConversationGrant).where(ConversationGrant.patient_digest == self._patient(patient))
        )
        return int(getattr(result, "rowcount", 0) or 0)
