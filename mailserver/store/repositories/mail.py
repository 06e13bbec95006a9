"""Mailboxes, messages and blobs.

UIDs and modseqs are allocated by one ``UPDATE ... RETURNING`` on the mailbox row:
on PostgreSQL the row stays locked until commit, so concurrent deliveries to one
mailbox are serialised and commit in UID order; on SQLite the database write
lock (``BEGIN IMMEDIATE``) does the same.

The IMAP hot path (a mailbox's row, its changes, STORE, EXPUNGE, FETCH, COPY and
MOVE) runs Core statements built once below, with bound parameters: no ORM identity
map, one round trip each. A COPY or MOVE reads and locks both mailbox rows in one
statement (ascending id order, as every writer takes them), then copies the message
rows with one ``INSERT ... SELECT`` per CHUNK UIDs: the copies share the source's
blobs (same account, same key), nothing is opened or sealed again.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy import (
    BigInteger,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import load_only

from mailserver.store.models import Account, Blob, ExpungedMessage, Mailbox, Message
from mailserver.store.models.base import utcnow
from mailserver.store.repositories.base import Repository, insert_many, is_postgresql, rows_of
from mailserver.store.repositories.quota import USAGE_BY_ACCOUNT, Usage
from mailserver.store.sealing import MetadataSealer, mailbox_name_digest, open_mailbox_name, seal_mailbox_name

INBOX = "INBOX"
_MAILBOXES = cast(Table, Mailbox.__table__)
_MESSAGES = cast(Table, Message.__table__)
_BLOBS = cast(Table, Blob.__table__)
_EXPUNGED = cast(Table, ExpungedMessage.__table__)
#: ids per ``IN (...)`` list
CHUNK = 500


@dataclasses.dataclass(frozen=True, slots=True)
class MailboxRow:
    """A mailbox's row as the hot path reads it (Core, no ORM object)."""

    id: int
    account_id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    first_recent_uid: int
    subscribed: bool

    def moved(self, modseq: int, uidnext: int | None = None) -> MailboxRow:
        return dataclasses.replace(self, highestmodseq=modseq, uidnext=max(self.uidnext, uidnext or 0))

    def recent_from(self, uid: int) -> MailboxRow:
        return dataclasses.replace(self, first_recent_uid=uid)


_mb, _msg, _blob, _gone = _MAILBOXES, _MESSAGES, _BLOBS, _EXPUNGED
_ROW = (
    _mb.c.id,
    _mb.c.account_id,
    _mb.c.name_digest,
    _mb.c.name_sealed,
    _mb.c.special_use,
    _mb.c.uidvalidity,
    _mb.c.uidnext,
    _mb.c.highestmodseq,
    _mb.c.first_recent_uid,
    _mb.c.subscribed,
)
_ROW_BY_ID = select(*_ROW).where(_mb.c.id == bindparam("mailbox_id"))
_ROW_BY_NAME = select(*_ROW).where(
    _mb.c.account_id == bindparam("account_id"), _mb.c.name_digest == bindparam("digest")
)
#: COPY / MOVE: the source (by id) and the destination (by name) read and locked at once, by ascending id
_PAIR_FOR_UPDATE = (
    select(*_ROW)
    .where(
        or_(
            _mb.c.id == bindparam("source"),
            and_(_mb.c.account_id == bindparam("account_id"), _mb.c.name_digest == bindparam("digest")),
        )
    )
    .order_by(_mb.c.id)
    .with_for_update()
)
#: APPEND: the account as it is now, and the id of its mailbox of that name (None: no such mailbox)
_ACCOUNT_AND_BOX = select(
    Account,
    select(_mb.c.id).where(_mb.c.account_id == Account.id, _mb.c.name_digest == bindparam("digest")).scalar_subquery(),
).where(Account.id == bindparam("account_id"))
#: MOVE: the destination's UIDs and both rows' new modseq in one statement (both rows already locked)
_ALLOCATE_MOVE = (
    update(_mb)
    .where(or_(_mb.c.id == bindparam("source"), _mb.c.id == bindparam("dest")))
    .values(
        uidnext=_mb.c.uidnext + case((_mb.c.id == bindparam("dest"), bindparam("n", type_=BigInteger)), else_=0),
        highestmodseq=_mb.c.highestmodseq + 1,
    )
    .returning(_mb.c.id, _mb.c.uidnext, _mb.c.highestmodseq)
)
#: delivery: the target mailboxes of a message, found by the digests of their names (each account's own)
_ROWS_BY_DIGEST = select(*_ROW).where(_mb.c.name_digest.in_(bindparam("digests", expanding=True)))
#: delivery on SQLite (its unit of work holds the one writer): the targets with their accounts' quota usage
_ROWS_AND_USAGE = (
    select(*_ROW, USAGE_BY_ACCOUNT.c.octets, USAGE_BY_ACCOUNT.c.messages)
    .select_from(_mb.outerjoin(USAGE_BY_ACCOUNT, USAGE_BY_ACCOUNT.c.account_id == _mb.c.account_id))
    .where(_mb.c.name_digest.in_(bindparam("digests", expanding=True)))
)
#: delivery on PostgreSQL with quotas: the targets read and locked with each recipient's anchor (its lowest
#: mailbox row, ``mailserver.quota``), in ascending id order, in one statement
_ROWS_AND_ANCHORS_FOR_UPDATE = (
    select(*_ROW)
    .where(
        or_(
            _mb.c.name_digest.in_(bindparam("digests", expanding=True)),
            _mb.c.id.in_(
                select(func.min(_mb.c.id))
                .where(_mb.c.account_id.in_(bindparam("account_ids", expanding=True)))
                .group_by(_mb.c.account_id)
            ),
        )
    )
    .order_by(_mb.c.id)
    .with_for_update()
)
#: delivery: ``n`` UIDs and one new modseq for each of ``ids`` (rows locked already, or by this statement)
_ALLOCATE = (
    update(_mb)
    .where(_mb.c.id.in_(bindparam("ids", expanding=True)))
    .values(uidnext=_mb.c.uidnext + bindparam("n", type_=BigInteger), highestmodseq=_mb.c.highestmodseq + 1)
    .returning(_mb.c.id, _mb.c.uidnext, _mb.c.highestmodseq)
)
_LOCK_MANY = select(_mb.c.id).where(_mb.c.id.in_(bindparam("ids", expanding=True))).order_by(_mb.c.id).with_for_update()
_BUMP = (
    update(_mb)
    .where(_mb.c.id == bindparam("mailbox_id"))
    .values(highestmodseq=_mb.c.highestmodseq + 1)
    .returning(_mb.c.highestmodseq)
)
#: \Recent claimed in one statement when the caller knows where it started (else ``claim_recent``)
_CLAIM_FROM = (
    update(_mb)
    .where(_mb.c.id == bindparam("mailbox_id"), _mb.c.first_recent_uid == bindparam("first"))
    .values(first_recent_uid=_mb.c.uidnext)
    .returning(_mb.c.uidnext)
)
_SEEN = _msg.c.flags.contains("\\Seen", autoescape=True)
#: STATUS in one statement: the row and its counts (messages, unseen, recent, size)
_STATUS = (
    select(
        *_ROW,
        func.count(_msg.c.uid),
        func.coalesce(func.sum(case((_msg.c.uid.is_(None), 0), (_SEEN, 0), else_=1)), 0),
        func.coalesce(func.sum(case((_msg.c.uid >= _mb.c.first_recent_uid, 1), else_=0)), 0),
        func.coalesce(func.sum(_msg.c.size), 0),
    )
    .select_from(_mb.outerjoin(_msg, _msg.c.mailbox_id == _mb.c.id))
    .where(_mb.c.account_id == bindparam("account_id"), _mb.c.name_digest == bindparam("digest"))
    .group_by(*_ROW)
)
_STATES = (
    select(_msg.c.uid, _msg.c.flags, _msg.c.modseq)
    .where(_msg.c.mailbox_id == bindparam("mailbox_id"))
    .order_by(_msg.c.uid)
)
_STATES_OF = (
    select(_msg.c.uid, _msg.c.flags, _msg.c.modseq)
    .where(_msg.c.mailbox_id == bindparam("mailbox_id"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .order_by(_msg.c.uid)
)
#: messages changed and UIDs expunged with ``after < modseq <= upto``, in one statement
_DELTA = union_all(
    select(_msg.c.uid, _msg.c.flags, _msg.c.modseq, false().label("gone")).where(
        _msg.c.mailbox_id == bindparam("mailbox_id"),
        _msg.c.modseq > bindparam("after"),
        _msg.c.modseq <= bindparam("upto"),
    ),
    select(_gone.c.uid, literal("").label("flags"), _gone.c.modseq, true().label("gone")).where(
        _gone.c.mailbox_id == bindparam("mailbox_id"),
        _gone.c.modseq > bindparam("after"),
        _gone.c.modseq <= bindparam("upto"),
    ),
)
_FETCH_COLUMNS = (
    _msg.c.uid,
    _msg.c.flags,
    _msg.c.modseq,
    _msg.c.internal_date,
    _msg.c.size,
    _msg.c.blob_id,
    _msg.c.saved_at,
)
_FETCH_ROWS = (
    select(*_FETCH_COLUMNS)
    .where(_msg.c.mailbox_id == bindparam("mailbox_id"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .order_by(_msg.c.uid)
)
#: a FETCH's messages with their blob's sealed metadata (and body) joined: one statement per batch
_FETCH_META = (
    select(*_FETCH_COLUMNS, _blob.c.account_id, _blob.c.meta, _blob.c.size)
    .join_from(_msg, _blob, _blob.c.id == _msg.c.blob_id)
    .where(_msg.c.mailbox_id == bindparam("mailbox_id"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .order_by(_msg.c.uid)
)
_FETCH_BODY = (
    select(
        *_FETCH_COLUMNS,
        _blob.c.account_id,
        _blob.c.meta,
        _blob.c.size,
        func.coalesce(_blob.c.large_body, _blob.c.body),  # the sealed body wherever the row keeps it
    )
    .join_from(_msg, _blob, _blob.c.id == _msg.c.blob_id)
    .where(_msg.c.mailbox_id == bindparam("mailbox_id"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .order_by(_msg.c.uid)
)
#: compare-and-set: new flags only where they are still what the caller read
_SET_FLAGS_IF = (
    update(_msg)
    .where(
        _msg.c.mailbox_id == bindparam("mb"),
        _msg.c.uid.in_(bindparam("uids", expanding=True)),
        _msg.c.flags == bindparam("old"),
    )
    .values(flags=bindparam("new"), modseq=bindparam("ms"))
    .returning(_msg.c.uid)
)
_SET_FLAGS = (
    update(_msg)
    .where(_msg.c.mailbox_id == bindparam("mb"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .values(flags=bindparam("new"), modseq=bindparam("ms"))
    .returning(_msg.c.uid)
)
#: what a COPY needs of its source messages: their UIDs (the order of the copies), sizes (the quota) and flags
_COPY_SOURCES = (
    select(_msg.c.uid, _msg.c.size, _msg.c.flags)
    .where(_msg.c.mailbox_id == bindparam("mb"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .order_by(_msg.c.uid)
)
#: the copies, ``first``, ``first + 1``... in the order of the source UIDs; flags and blob copied as stored
_COPY_INTO = insert(_msg).from_select(
    ["mailbox_id", "uid", "modseq", "flags", "internal_date", "size", "blob_id"],
    select(
        bindparam("dest", type_=Integer),
        bindparam("first", type_=BigInteger) + func.row_number().over(order_by=_msg.c.uid) - 1,
        bindparam("ms", type_=BigInteger),
        _msg.c.flags,
        _msg.c.internal_date,
        _msg.c.size,
        _msg.c.blob_id,
    ).where(_msg.c.mailbox_id == bindparam("mb"), _msg.c.uid.in_(bindparam("uids", expanding=True))),
)
_EXPUNGE = (
    delete(_msg)
    .where(_msg.c.mailbox_id == bindparam("mb"), _msg.c.uid.in_(bindparam("uids", expanding=True)))
    .returning(_msg.c.blob_id)
)


def _tombstones(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO UPDATE`` of tombstones (one ``executemany``), in the dialect's words."""
    ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_gone)
    return ins.on_conflict_do_update(
        index_elements=[_gone.c.mailbox_id, _gone.c.uid], set_={"modseq": ins.excluded.modseq}
    )


_TOMBSTONES = {name: _tombstones(name) for name in ("postgresql", "sqlite")}


def _row(r: Any, key: MetadataSealer) -> MailboxRow:
    """A ``_ROW`` as a MailboxRow, its name opened."""
    name = open_mailbox_name(key, r[2], r[3])
    return MailboxRow(int(r[0]), int(r[1]), name, r[4], int(r[5]), int(r[6]), int(r[7]), int(r[8]), bool(r[9]))


def _chunks(items: Sequence[int]) -> Iterable[list[int]]:
    for i in range(0, len(items), CHUNK):
        yield list(items[i : i + CHUNK])


async def _allocate_uids(session: AsyncSession, counts: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    """``counts[id]`` new UIDs and one new modseq for each mailbox: {mailbox id: (first uid, modseq)}.

    The rows are locked in ascending id order first (PostgreSQL: ``SELECT ... ORDER BY id FOR UPDATE``), as
    every writer takes them, then moved with one ``UPDATE ... RETURNING`` per distinct count."""
    ids = sorted(counts)
    out: dict[int, tuple[int, int]] = {}
    postgresql = is_postgresql(session)
    for chunk in _chunks(ids):
        if postgresql and len(chunk) > 1:  # one: the UPDATE locks it
            await rows_of(session, _LOCK_MANY, {"ids": chunk})
        by_count: dict[int, list[int]] = {}
        for mailbox_id in chunk:
            by_count.setdefault(counts[mailbox_id], []).append(mailbox_id)
        for count, group in by_count.items():
            rows = await rows_of(session, _ALLOCATE, {"ids": group, "n": count})
            for mailbox_id, uidnext, modseq in rows:
                out[int(mailbox_id)] = (int(uidnext) - count, int(modseq))
    return out


#: a sealed body past this is written into its row in pieces of ``PIECE`` octets (``BlobRepository``)
LARGE_BODY = 2**20
PIECE = 2**20


def canonical_name(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 §5.1), every other name is taken as given."""
    if name.upper() == INBOX:
        return INBOX
    if name.upper().startswith(INBOX + "/"):
        return INBOX + name[len(INBOX) :]
    return name


def _sealed_name(key: MetadataSealer, account_id: int, name: str) -> dict[str, bytes]:
    digest, sealed = seal_mailbox_name(key, account_id, canonical_name(name))
    return {"name_digest": digest, "name_sealed": sealed}


class MailboxRepository(Repository):
    """Mailboxes, whose names are sealed (``mailserver.store.sealing``): found by the digest of a name, listed
    and sorted once opened."""

    def __init__(self, session: AsyncSession, key: Callable[[], MetadataSealer]) -> None:
        super().__init__(session)
        self._key = key

    def _digest(self, account_id: int, name: str) -> bytes:
        return mailbox_name_digest(self._key(), account_id, canonical_name(name))

    async def list(self, account_id: int) -> Sequence[Mailbox]:
        stmt = select(Mailbox).where(Mailbox.account_id == account_id)
        return sorted((await self.session.execute(stmt)).scalars().all(), key=lambda m: m.name)

    async def get(self, account_id: int, name: str) -> Mailbox | None:
        stmt = select(Mailbox).where(
            Mailbox.account_id == account_id, Mailbox.name_digest == self._digest(account_id, name)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get_many(self, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Mailbox]:
        """The mailboxes named by (account id, name) pairs, keyed by (account id, canonical name); a name an
        account lacks is absent. One query per 500 accounts (a delivery to many recipients)."""
        wanted = {(a, canonical_name(n)) for a, n in pairs}
        digests = sorted(self._digest(a, n) for a, n in wanted)
        found: dict[tuple[int, str], Mailbox] = {}
        for i in range(0, len(digests), 500):
            stmt = select(Mailbox).where(Mailbox.name_digest.in_(digests[i : i + 500]))
            for mb in (await self.session.execute(stmt)).scalars():
                if (mb.account_id, mb.name) in wanted:
                    found[(mb.account_id, mb.name)] = mb
        return found

    async def rows_many(self, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], MailboxRow]:
        """``get_many`` for the delivery path: the rows as ``MailboxRow`` (Core, one statement per 500 names, no
        ORM object), each named by the canonical name asked for (the name is known: nothing is opened)."""
        return (await self._targets(pairs, usage=False))[0]

    async def rows_and_usage(
        self, pairs: Iterable[tuple[int, str]]
    ) -> tuple[dict[tuple[int, str], MailboxRow], dict[int, Usage]]:
        """``rows_many`` with the quota usage of the accounts found (``UsageViews.usage_many``) read by the same
        statement: for a SQLite unit of work, which holds the one writer, so that nothing changes the usage
        before its rows are added (PostgreSQL locks the accounts' anchors first: ``quota.admit``)."""
        return await self._targets(pairs, usage=True)

    async def rows_locked(self, pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], MailboxRow]:
        """``rows_many`` on PostgreSQL for a delivery bounded by quotas: the target rows read and locked with the
        anchor of each account (its lowest mailbox row), in ascending id order, in one statement per 500 names:
        the lock ``quota.admit`` takes (``anchors_locked``), taken with the read instead of after it."""
        return (await self._targets(pairs, usage=False, lock=True))[0]

    async def _targets(
        self, pairs: Iterable[tuple[int, str]], *, usage: bool, lock: bool = False
    ) -> tuple[dict[tuple[int, str], MailboxRow], dict[int, Usage]]:
        key = self._key()
        wanted: dict[bytes, tuple[int, str]] = {}
        for a, n in pairs:
            name = canonical_name(n)
            wanted[mailbox_name_digest(key, a, name)] = (a, name)
        digests = sorted(wanted)
        found: dict[tuple[int, str], MailboxRow] = {}
        used: dict[int, Usage] = {}
        for i in range(0, len(digests), CHUNK):
            chunk = digests[i : i + CHUNK]
            if usage or lock:
                params = {"digests": chunk, "account_ids": sorted({wanted[d][0] for d in chunk})}
                rows = await rows_of(self.session, _ROWS_AND_USAGE if usage else _ROWS_AND_ANCHORS_FOR_UPDATE, params)
            else:
                rows = await rows_of(self.session, _ROWS_BY_DIGEST, {"digests": chunk})
            for r in rows:
                account_id, name = wanted.get(bytes(r[2]), (None, ""))
                if account_id != int(r[1]):  # an anchor only; or (keyed by its account, it cannot be) another's
                    continue
                found[(account_id, name)] = MailboxRow(
                    int(r[0]), account_id, name, r[4], int(r[5]), int(r[6]), int(r[7]), int(r[8]), bool(r[9])
                )
                if usage:
                    used[account_id] = Usage(int(r[10] or 0), int(r[11] or 0))
        return found, used

    async def get_by_id(self, mailbox_id: int) -> Mailbox | None:
        return await self.session.get(Mailbox, mailbox_id, populate_existing=True)

    async def row(self, mailbox_id: int) -> MailboxRow | None:
        r = (await self.session.execute(_ROW_BY_ID, {"mailbox_id": mailbox_id})).first()
        return None if r is None else _row(r, self._key())

    async def row_by_name(self, account_id: int, name: str) -> MailboxRow | None:
        params = {"account_id": account_id, "digest": self._digest(account_id, name)}
        r = (await self.session.execute(_ROW_BY_NAME, params)).first()
        return None if r is None else _row(r, self._key())

    async def lock_pair(
        self, source_id: int, account_id: int, dest_name: str
    ) -> tuple[MailboxRow | None, MailboxRow | None]:
        """COPY / MOVE: the source mailbox (by id) and the account's mailbox ``dest_name``, both rows read and
        locked in one statement, in ascending id order (mailbox rows by id, then messages); None for one
        that does not exist. They may be one and the same row."""
        params = {"source": source_id, "account_id": account_id, "digest": self._digest(account_id, dest_name)}
        key = self._key()
        rows = [_row(r, key) for r in (await self.session.execute(_PAIR_FOR_UPDATE, params)).all()]
        source = next((r for r in rows if r.id == source_id), None)
        dest = next((r for r in rows if r.account_id == account_id and r.name == canonical_name(dest_name)), None)
        return source, dest

    async def account_and_box(self, account_id: int, name: str) -> tuple[Account | None, int | None]:
        """APPEND: the account as the store has it now and the id of its mailbox ``name``, in one statement."""
        params = {"account_id": account_id, "digest": self._digest(account_id, name)}
        found = (await self.session.execute(_ACCOUNT_AND_BOX, params)).first()
        if found is None:
            return None, None
        return found[0], None if found[1] is None else int(found[1])

    async def allocate_move(self, source_id: int, dest_id: int, count: int) -> tuple[int, int, int]:
        """MOVE: ``count`` UIDs in ``dest_id`` and a new modseq for both mailboxes, their rows locked already
        (``lock_pair``): (first uid, destination modseq, source modseq), one statement."""
        rows = await self.session.execute(_ALLOCATE_MOVE, {"source": source_id, "dest": dest_id, "n": count})
        got = {int(i): (int(u), int(m)) for i, u, m in rows.all()}
        uidnext, modseq = got[dest_id]
        return uidnext - count, modseq, got[source_id][1]

    async def status(self, account_id: int, name: str) -> tuple[MailboxRow, int, int, int, int] | None:
        """The row and (messages, unseen, recent, total size) of a mailbox, in one statement."""
        params = {"account_id": account_id, "digest": self._digest(account_id, name)}
        r = (await self.session.execute(_STATUS, params)).first()
        if r is None:
            return None
        return _row(r, self._key()), int(r[10]), int(r[11]), int(r[12]), int(r[13])

    async def by_special_use(self, account_id: int, special_use: str) -> Mailbox | None:
        stmt = select(Mailbox).where(Mailbox.account_id == account_id, Mailbox.special_use == special_use)
        return (await self.session.execute(stmt)).scalars().first()

    async def create(
        self,
        account_id: int,
        name: str,
        *,
        uidvalidity: int,
        special_use: str | None = None,
        subscribed: bool = True,
    ) -> Mailbox:
        mailbox = Mailbox(
            account_id=account_id,
            name=canonical_name(name),
            special_use=special_use,
            uidvalidity=uidvalidity,
            uidnext=1,
            highestmodseq=1,
            first_recent_uid=1,
            subscribed=subscribed,
        )
        async with self._conflict_as(f"mailbox {name} already exists"):
            self.session.add(mailbox)
        return mailbox

    async def add_to_each(
        self,
        account_ids: Sequence[int],
        mailboxes: Sequence[tuple[str, str | None, int]],
        *,
        created_at: dt.datetime,
    ) -> None:
        """Give every account of ``account_ids`` the same new mailboxes, ``(name, special_use, uidvalidity)``,
        in one driver-level ``executemany`` (bulk opening: see ``insert_many``)."""
        key = self._key()
        rows = [
            {
                "account_id": account_id,
                **_sealed_name(key, account_id, name),
                "special_use": special_use,
                "uidvalidity": uidvalidity,
                "uidnext": 1,
                "highestmodseq": 1,
                "first_recent_uid": 1,
                "subscribed": True,
                "created_at": created_at,
            }
            for account_id in account_ids
            for name, special_use, uidvalidity in mailboxes
        ]
        await insert_many(self.session, _MAILBOXES, rows)

    async def largest_uidvalidity(self, account_id: int) -> int | None:
        """The largest UIDVALIDITY among the account's mailboxes, or None if it has none."""
        stmt = select(func.max(Mailbox.uidvalidity)).where(Mailbox.account_id == account_id)
        largest = (await self.session.execute(stmt)).scalar_one_or_none()
        return None if largest is None else int(largest)

    async def allocate(self, mailbox_id: int, count: int = 1) -> tuple[int, int]:
        """Reserve ``count`` consecutive UIDs and one new modseq: returns (first uid, modseq).

        Locks the mailbox row until the transaction ends.
        """
        t = _MAILBOXES
        stmt = (
            update(t)
            .where(t.c.id == mailbox_id)
            .values(uidnext=t.c.uidnext + count, highestmodseq=t.c.highestmodseq + 1)
            .returning(t.c.uidnext, t.c.highestmodseq)
        )
        uidnext, modseq = (await self.session.execute(stmt)).one()
        return int(uidnext) - count, int(modseq)

    async def lock(self, mailbox_id: int) -> bool:
        """Lock the mailbox row until the transaction ends (PostgreSQL; SQLite's write lock is already held).

        Every writer of a mailbox's messages takes this lock (or ``allocate`` / ``bump_modseq``) before
        touching them: mailbox rows by id, then messages, so that no two writers deadlock. False if the
        mailbox no longer exists.
        """
        t = _MAILBOXES
        row = await self.session.execute(select(t.c.id).where(t.c.id == mailbox_id).with_for_update())
        return row.first() is not None

    async def bump_modseq(self, mailbox_id: int) -> int:
        """A new modseq for a change that adds no message (flags, expunge). Locks the row."""
        return int((await self.session.execute(_BUMP, {"mailbox_id": mailbox_id})).scalar_one())

    async def bump_if_there(self, mailbox_id: int) -> int | None:
        """``bump_modseq``, None if the mailbox no longer exists (the lock and the new modseq at once)."""
        modseq = (await self.session.execute(_BUMP, {"mailbox_id": mailbox_id})).scalar_one_or_none()
        return None if modseq is None else int(modseq)

    async def claim_recent_from(self, mailbox_id: int, first: int) -> int | None:
        """``claim_recent`` in one statement, if \\Recent still starts at ``first``: the new start (UIDNEXT);
        None if it moved (or the mailbox is gone): use ``claim_recent``."""
        uidnext = (await self.session.execute(_CLAIM_FROM, {"mailbox_id": mailbox_id, "first": first})).scalar()
        return None if uidnext is None else int(uidnext)

    async def highest_modseqs(self, mailbox_ids: Iterable[int]) -> dict[int, int]:
        """HIGHESTMODSEQ of each of ``mailbox_ids`` that still exists."""
        t = _MAILBOXES
        ids = sorted(set(mailbox_ids))
        out: dict[int, int] = {}
        for i in range(0, len(ids), 500):
            rows = await self.session.execute(select(t.c.id, t.c.highestmodseq).where(t.c.id.in_(ids[i : i + 500])))
            out.update({int(mid): int(modseq) for mid, modseq in rows.all()})
        return out

    async def claim_recent(self, mailbox_id: int) -> tuple[int, int] | None:
        """RFC 3501 \\Recent: the UIDs [first, uidnext) are recent for the caller and for nobody after (the row
        locked until the transaction ends); None if the mailbox is gone."""
        t = _MAILBOXES
        row = (
            await self.session.execute(
                select(t.c.first_recent_uid, t.c.uidnext).where(t.c.id == mailbox_id).with_for_update()
            )
        ).first()
        if row is None:
            return None
        first, uidnext = int(row[0]), int(row[1])
        if first < uidnext:
            await self.session.execute(update(t).where(t.c.id == mailbox_id).values(first_recent_uid=uidnext))
        return first, uidnext

    async def delete(self, mailbox: Mailbox) -> None:
        await self.session.delete(mailbox)
        await self.session.flush()


#: PostgreSQL: a delivery's new messages in one statement: the blobs, their mailboxes' UIDs and modseqs moved, the
#: message rows (``MessageRepository.place``); the rows' foreign keys are checked at its end, the blobs written
_PLACE = text(
    "WITH new_blobs AS ("
    " INSERT INTO blobs (id, account_id, body, meta, size, created_at, large_body)"
    " SELECT b.id, b.account_id, b.body, b.meta, b.size, :created_at, NULL"
    " FROM unnest(CAST(:blob_id AS varchar[]), CAST(:blob_account AS integer[]), CAST(:blob_body AS bytea[]),"
    " CAST(:blob_meta AS bytea[]), CAST(:blob_size AS integer[])) AS b(id, account_id, body, meta, size)"
    "), moved AS ("
    " UPDATE mailboxes SET uidnext = mailboxes.uidnext + c.n, highestmodseq = mailboxes.highestmodseq + 1"
    " FROM unnest(CAST(:box AS integer[]), CAST(:box_count AS bigint[])) AS c(id, n) WHERE mailboxes.id = c.id"
    " RETURNING mailboxes.id, mailboxes.uidnext - c.n AS first_uid, mailboxes.highestmodseq AS modseq"
    ")"
    " INSERT INTO messages (mailbox_id, uid, modseq, flags, internal_date, size, blob_id)"
    " SELECT moved.id, moved.first_uid + m.nth, moved.modseq, :flags, :internal_date, m.size, m.blob_id"
    " FROM unnest(CAST(:mailbox AS integer[]), CAST(:nth AS bigint[]), CAST(:size AS integer[]),"
    " CAST(:blob_id AS varchar[])) AS m(mailbox_id, nth, size, blob_id)"
    " JOIN moved ON moved.id = m.mailbox_id"
    " RETURNING messages.mailbox_id, messages.uid, messages.modseq"
)


class MessageRepository(Repository):
    async def add(
        self,
        *,
        mailbox_id: int,
        uid: int,
        modseq: int,
        flags: str,
        internal_date: dt.datetime,
        size: int,
        blob_id: str,
    ) -> Message:
        msg = Message(
            mailbox_id=mailbox_id,
            uid=uid,
            modseq=modseq,
            flags=flags,
            internal_date=internal_date,
            size=size,
            blob_id=blob_id,
        )
        self.session.add(msg)
        await self.session.flush()
        return msg

    async def add_many(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """New messages, one driver-level ``executemany`` (a delivery to many recipients): each row has every
        column of ``messages`` but ``id``, in the same order."""
        await insert_many(self.session, _MESSAGES, rows)

    async def place(
        self, copies: Sequence[tuple[Blob, int, int]], *, flags: str, when: dt.datetime, locked: bool
    ) -> builtins.list[tuple[int, int]]:
        """A delivery's new messages, each copy ``(blob, mailbox id, size)`` with its blob (not written yet):
        the blobs, their mailboxes' next UIDs and a new modseq each, the message rows; the (uid, modseq) of each
        copy, in order. Copies into one mailbox take consecutive UIDs in their order. ``locked``: the caller
        holds the locks of the mailbox rows (``MailboxRepository.rows_locked``).

        PostgreSQL: one statement (``_PLACE``) for up to ``CHUNK`` copies without a large body, after the rows'
        locks in ascending id order when the caller holds none and there are several mailboxes. Otherwise, and
        on SQLite, the blobs (``BlobRepository.add_many``), the UIDs (``_allocate_uids``) and the rows each
        take their statements."""
        nth: list[int] = []  # each copy's place among the copies into its mailbox
        counts: Counter[int] = Counter()  # then: how many go into each mailbox
        for _, mailbox_id, _ in copies:
            nth.append(counts[mailbox_id])
            counts[mailbox_id] += 1
        if (
            is_postgresql(self.session)
            and len(copies) <= CHUNK
            and all(len(blob.body) <= LARGE_BODY for blob, _, _ in copies)
        ):
            if not locked and len(counts) > 1:
                await rows_of(self.session, _LOCK_MANY, {"ids": sorted(counts)})
            boxes = sorted(counts)
            params = {
                "created_at": utcnow(),
                "blob_id": [b.id for b, _, _ in copies],
                "blob_account": [b.account_id for b, _, _ in copies],
                "blob_body": [b.body for b, _, _ in copies],
                "blob_meta": [b.meta for b, _, _ in copies],
                "blob_size": [b.size for b, _, _ in copies],
                "box": boxes,
                "box_count": [counts[m] for m in boxes],
                "flags": flags,
                "internal_date": when,
                "mailbox": [m for _, m, _ in copies],
                "nth": nth,
                "size": [n for _, _, n in copies],
            }
            first: dict[int, tuple[int, int]] = {}
            for mailbox_id, uid, modseq in await rows_of(self.session, _PLACE, params):
                m, u = int(mailbox_id), int(uid)
                if m not in first or u < first[m][0]:
                    first[m] = (u, int(modseq))
        else:
            await BlobRepository(self.session).add_many([blob for blob, _, _ in copies])
            first = await _allocate_uids(self.session, counts)
            rows = [
                {
                    "mailbox_id": mailbox_id,
                    "uid": first[mailbox_id][0] + k,
                    "modseq": first[mailbox_id][1],
                    "flags": flags,
                    "internal_date": when,
                    "size": size,
                    "blob_id": blob.id,
                }
                for (blob, mailbox_id, size), k in zip(copies, nth, strict=True)
            ]
            await self.add_many(rows)
        return [(first[m][0] + k, first[m][1]) for (_, m, _), k in zip(copies, nth, strict=True)]

    async def add_copies(self, mailbox_id: int, rows: Sequence[Message], first_uid: int, modseq: int) -> list[int]:
        """Copies of ``rows`` into ``mailbox_id`` under the UIDs ``first_uid``, ``first_uid + 1``... the caller
        allocated (COPY, MOVE, RENAME of INBOX): same flags, date, size and blob; their new UIDs, in order."""
        uids = []
        for i, r in enumerate(rows):
            self.session.add(
                Message(
                    mailbox_id=mailbox_id,
                    uid=first_uid + i,
                    modseq=modseq,
                    flags=r.flags,
                    internal_date=r.internal_date,
                    size=r.size,
                    blob_id=r.blob_id,
                )
            )
            uids.append(first_uid + i)
        await self.session.flush()
        return uids

    async def copy_sources(self, mailbox_id: int, uids: Iterable[int]) -> builtins.list[tuple[int, int, str]]:
        """(uid, size, stored flags) of those of ``uids`` still in the mailbox, by UID: what a COPY copies."""
        out: list[tuple[int, int, str]] = []
        for chunk in _chunks(sorted(set(uids))):
            rows = await self.session.execute(_COPY_SOURCES, {"mb": mailbox_id, "uids": chunk})
            out.extend((int(u), int(n), f) for u, n, f in rows.all())
        return out

    async def copy_into(
        self, source_id: int, uids: Sequence[int], dest_id: int, first_uid: int, modseq: int
    ) -> builtins.list[int]:
        """Copies of the messages ``uids`` (ascending, all there: the caller holds both rows' locks) into
        ``dest_id`` under ``first_uid``, ``first_uid + 1``... the caller allocated: same flags, date, size and
        blob, one ``INSERT ... SELECT`` per CHUNK UIDs; their new UIDs, in order."""
        for offset in range(0, len(uids), CHUNK):
            chunk = list(uids[offset : offset + CHUNK])
            params = {"dest": dest_id, "first": first_uid + offset, "ms": modseq, "mb": source_id, "uids": chunk}
            await self.session.execute(_COPY_INTO, params)
        return list(range(first_uid, first_uid + len(uids)))

    async def blob_ids(self, mailbox_id: int) -> Sequence[str]:
        """The blobs the mailbox's messages use, each once."""
        stmt = select(Message.blob_id).where(Message.mailbox_id == mailbox_id).distinct()
        return (await self.session.execute(stmt)).scalars().all()

    async def list(self, mailbox_id: int) -> Sequence[Message]:
        stmt = select(Message).where(Message.mailbox_id == mailbox_id).order_by(Message.uid)
        return (await self.session.execute(stmt)).scalars().all()

    async def by_uids(self, mailbox_id: int, uids: Iterable[int]) -> Sequence[Message]:
        uid_list = sorted(set(uids))
        out: list[Message] = []
        for i in range(0, len(uid_list), 500):
            stmt = (
                select(Message)
                .where(Message.mailbox_id == mailbox_id, Message.uid.in_(uid_list[i : i + 500]))
                .order_by(Message.uid)
            )
            out.extend((await self.session.execute(stmt)).scalars().all())
        return out

    async def count(self, mailbox_id: int) -> int:
        stmt = select(func.count()).select_from(Message).where(Message.mailbox_id == mailbox_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def changed_since(self, mailbox_id: int, modseq: int) -> Sequence[Message]:
        """Messages added or changed after ``modseq``, by UID."""
        stmt = select(Message).where(Message.mailbox_id == mailbox_id, Message.modseq > modseq).order_by(Message.uid)
        return (await self.session.execute(stmt)).scalars().all()

    async def expunged_since(self, mailbox_id: int, modseq: int) -> builtins.list[int]:
        stmt = (
            select(ExpungedMessage.uid)
            .where(ExpungedMessage.mailbox_id == mailbox_id, ExpungedMessage.modseq > modseq)
            .order_by(ExpungedMessage.uid)
        )
        return [int(u) for u in (await self.session.execute(stmt)).scalars().all()]

    async def update_flags(self, mailbox_id: int, flags: dict[int, str], modseq: int) -> builtins.list[int]:
        """Set ``flags[uid]`` on each message still there, stamped with ``modseq``; the UIDs updated.

        One Core ``UPDATE ... WHERE uid IN ... RETURNING uid`` per distinct flag string: a message
        expunged meanwhile is simply not updated (no ORM flush expecting one row per object).
        """
        by_flags: dict[str, list[int]] = {}
        for uid, f in flags.items():
            by_flags.setdefault(f, []).append(uid)
        t = cast(Table, Message.__table__)
        done: list[int] = []
        for f, uids in sorted(by_flags.items()):
            uids.sort()
            for i in range(0, len(uids), 500):
                rows = await self.session.execute(
                    update(t)
                    .where(t.c.mailbox_id == mailbox_id, t.c.uid.in_(uids[i : i + 500]))
                    .values(flags=f, modseq=modseq)
                    .returning(t.c.uid)
                )
                done.extend(int(u) for (u,) in rows.all())
        return sorted(done)

    async def expunge(self, mailbox_id: int, uids: Iterable[int], modseq: int) -> builtins.list[str]:
        """Remove the messages, leave tombstones; returns the blob ids that may now be orphaned."""
        uid_list = sorted(set(uids))
        blob_ids: list[str] = []
        tombstones = _TOMBSTONES[self.session.get_bind().dialect.name]
        for chunk in _chunks(uid_list):
            rows = await self.session.execute(_EXPUNGE, {"mb": mailbox_id, "uids": chunk})
            blob_ids.extend(r for (r,) in rows.all())
            await self.session.execute(
                tombstones, [{"mailbox_id": mailbox_id, "uid": u, "modseq": modseq} for u in chunk]
            )
        return blob_ids

    async def states_of(self, mailbox_id: int, uids: Iterable[int]) -> dict[int, tuple[str, int]]:
        """uid -> (stored flags, modseq) of those of ``uids`` still there."""
        out: dict[int, tuple[str, int]] = {}
        for chunk in _chunks(sorted(set(uids))):
            rows = await self.session.execute(_STATES_OF, {"mailbox_id": mailbox_id, "uids": chunk})
            out.update({int(u): (f, int(m)) for u, f, m in rows.all()})
        return out

    async def set_flags(
        self, mailbox_id: int, changes: Mapping[int, tuple[str | None, str]], modseq: int
    ) -> builtins.list[int]:
        """Set ``changes[uid] = (old, new)`` flags, stamped ``modseq``; with ``old`` only where the flags
        still are ``old`` (compare-and-set; all or none of ``changes`` give one). One ``UPDATE ... WHERE uid IN
        (...) RETURNING uid`` per CHUNK UIDs (a ``CASE`` on the UID when they get different flags); the UIDs
        written."""
        done: list[int] = []
        for chunk in _chunks(sorted(changes)):
            news = {changes[u][1] for u in chunk}
            olds = {changes[u][0] for u in chunk}
            params: dict[str, Any] = {"mb": mailbox_id, "uids": chunk, "ms": modseq}
            if len(news) == 1 and olds == {None}:
                stmt: Any = _SET_FLAGS
                params["new"] = news.pop()
            elif len(news) == 1 and len(olds) == 1:
                stmt, params["new"], params["old"] = _SET_FLAGS_IF, news.pop(), olds.pop()
            else:  # several flag strings: one statement still, a CASE on the UID
                new = case({u: changes[u][1] for u in chunk}, value=_msg.c.uid)
                stmt = (
                    update(_msg)
                    .where(_msg.c.mailbox_id == mailbox_id, _msg.c.uid.in_(chunk))
                    .values(flags=new, modseq=modseq)
                    .returning(_msg.c.uid)
                )
                params = {}
                if olds != {None}:
                    stmt = stmt.where(_msg.c.flags == case({u: changes[u][0] or "" for u in chunk}, value=_msg.c.uid))
            rows = await self.session.execute(stmt, params) if params else await self.session.execute(stmt)
            done.extend(int(u) for (u,) in rows.all())
        return sorted(done)


class BlobRepository(Repository):
    async def add(self, blob: Blob) -> Blob:
        self.session.add(blob)
        await self.session.flush()
        return blob

    async def add_many(self, blobs: Sequence[Blob]) -> None:
        """New blobs, one driver-level ``executemany`` (ids are chosen before sealing, so nothing comes back).
        A body past ``LARGE_BODY`` is written afterwards, in pieces: on SQLite through incremental blob I/O
        (``_write_in_pieces``), on PostgreSQL through a large object (``_write_in_pieces_pg``)."""
        when = utcnow()
        dialect = self.session.get_bind().dialect
        sqlite_pieces = dialect.name == "sqlite" and dialect.driver == "aiosqlite"
        pg_pieces = dialect.name == "postgresql"
        large = [b for b in blobs if (sqlite_pieces or pg_pieces) and len(b.body) > LARGE_BODY]
        placeholder = {id(b) for b in large}
        await insert_many(
            self.session,
            _BLOBS,
            [
                {
                    "id": b.id,
                    "account_id": b.account_id,
                    "body": b"" if id(b) in placeholder else b.body,
                    "meta": b.meta,
                    "size": b.size,
                    "created_at": when,
                    "large_body": None,
                }
                for b in blobs
            ],
        )
        if large and sqlite_pieces:
            await self._write_in_pieces(large)
        elif large:
            await self._write_in_pieces_pg(large)

    async def _write_in_pieces(self, blobs: Sequence[Blob]) -> None:
        """SQLite: each body written into its row's ``large_body`` (the row inserted with an empty ``body``) through
        incremental blob I/O, ``PIECE`` octets at a time: ``zeroblob`` of its size (free in the record's last
        column), then ``sqlite3.Connection.blobopen``, in the session's transaction. A body bound as one parameter
        is copied twice by SQLite (the binding, then the row's record), which made a 49 MB message cost two more
        copies of itself while it was stored (issue 14 point 3).

        aiosqlite (0.22) has no ``blobopen`` and no public way to run on its thread, so the ``sqlite3.Connection``
        is taken through its public ``Cursor.connection`` and used on a worker thread (``asyncio.to_thread``):
        the database opens SQLite connections with ``check_same_thread=False`` for this (``store.db``), and
        the session holds this connection while it awaits, so nothing else uses it meanwhile (SQLite itself
        is serialized). The body is still written from a ``memoryview``, ``PIECE`` octets at a time: no copy."""
        conn = await self.session.connection()
        raw = await conn.get_raw_connection()
        driver: aiosqlite.Connection = raw.driver_connection  # type: ignore[assignment]
        cursor = await driver.cursor()
        try:
            db = cursor.connection  # the sqlite3.Connection under aiosqlite's proxy
        finally:
            await cursor.close()

        def write() -> None:
            for b in blobs:
                body = memoryview(b.body)
                (rowid,) = db.execute("SELECT rowid FROM blobs WHERE id = ?", (b.id,)).fetchone()
                db.execute("UPDATE blobs SET large_body = zeroblob(?) WHERE rowid = ?", (len(body), rowid))
                with db.blobopen("blobs", "large_body", rowid) as out:
                    for start in range(0, len(body), PIECE):
                        out.write(body[start : start + PIECE])

        await asyncio.to_thread(write)

    async def _write_in_pieces_pg(self, blobs: Sequence[Blob]) -> None:
        """PostgreSQL: each body sent in ``PIECE``-octet parameters into a large object created for it
        (``lo_create``, ``lo_put``), copied from it into the row's ``large_body`` by the server
        (``lo_get``), and the large object unlinked, all in the session's transaction (a rollback takes
        the large object with it). A body bound as one parameter is copied by asyncpg into its write
        buffer and again into the transport's: a 49 MB message cost about 5x its size (issue 14 point 3).
        ``large_body`` is an ordinary ``bytea``: every read path stays the same."""
        for b in blobs:
            body = memoryview(b.body)
            oid = (await self.session.execute(text("SELECT lo_create(0)"))).scalar_one()
            for start in range(0, len(body), PIECE):
                await self.session.execute(
                    text("SELECT lo_put(:oid, :at, :piece)"),
                    {"oid": oid, "at": start, "piece": bytes(body[start : start + PIECE])},
                )
            await self.session.execute(
                text("UPDATE blobs SET large_body = lo_get(:oid) WHERE id = :id"), {"oid": oid, "id": b.id}
            )
            await self.session.execute(text("SELECT lo_unlink(:oid)"), {"oid": oid})

    async def get(self, blob_id: str) -> Blob | None:
        return await self.session.get(Blob, blob_id)

    async def delete_orphans(self, blob_ids: Iterable[str]) -> int:
        """Delete those of ``blob_ids`` that no message refers to any more."""
        ids = sorted(set(blob_ids))
        deleted = 0
        for i in range(0, len(ids), 500):
            res = await self.session.execute(
                delete(Blob)
                .where(Blob.id.in_(ids[i : i + 500]), ~exists().where(Message.blob_id == Blob.id))
                .execution_options(synchronize_session=False)
            )
            deleted += res.rowcount or 0  # type: ignore[attr-defined]
        return deleted


class MessageViews(Repository):
    """Read paths the IMAP sessions need (bounded queries, no ORM identity map growth where avoidable)."""

    async def states(self, mailbox_id: int) -> builtins.list[tuple[int, str, int]]:
        """(uid, flags, modseq) of every message, by UID: what SELECT starts from."""
        rows = await self.session.execute(_STATES, {"mailbox_id": mailbox_id})
        return [(int(u), f, int(m)) for u, f, m in rows.all()]

    async def delta(self, mailbox_id: int, after: int, upto: int) -> builtins.list[tuple[int, str, int, bool]]:
        """(uid, flags, modseq, expunged) of the messages changed and the UIDs expunged with
        ``after < modseq <= upto``, by modseq: ``changes_between`` and ``expunged_between`` in one statement."""
        rows = await self.session.execute(_DELTA, {"mailbox_id": mailbox_id, "after": after, "upto": upto})
        return sorted(((int(u), f, int(m), bool(g)) for u, f, m, g in rows.all()), key=lambda r: r[2])

    async def fetch_rows(self, mailbox_id: int, uids: Iterable[int], *, meta: bool, body: bool) -> builtins.list[Any]:
        """FETCH's rows, by UID: (uid, flags, modseq, internal_date, size, blob_id), then with ``meta``
        (blob account id, sealed meta, blob size) and with ``body`` the sealed body; one statement per batch."""
        stmt = _FETCH_BODY if body else _FETCH_META if meta else _FETCH_ROWS
        out: list[Any] = []
        for chunk in _chunks(sorted(set(uids))):
            out.extend((await self.session.execute(stmt, {"mailbox_id": mailbox_id, "uids": chunk})).all())
        return out

    async def changes_between(self, mailbox_id: int, after: int, upto: int) -> builtins.list[tuple[int, str, int]]:
        """(uid, flags, modseq) of messages added or changed with ``after < modseq <= upto``."""
        stmt = (
            select(Message.uid, Message.flags, Message.modseq)
            .where(Message.mailbox_id == mailbox_id, Message.modseq > after, Message.modseq <= upto)
            .order_by(Message.uid)
        )
        return [(int(u), f, int(m)) for u, f, m in (await self.session.execute(stmt)).all()]

    async def expunged_between(self, mailbox_id: int, after: int, upto: int) -> builtins.list[int]:
        stmt = select(ExpungedMessage.uid).where(
            ExpungedMessage.mailbox_id == mailbox_id, ExpungedMessage.modseq > after, ExpungedMessage.modseq <= upto
        )
        return sorted(int(u) for u in (await self.session.execute(stmt)).scalars().all())

    async def status_counts(self, mailbox_id: int, first_recent_uid: int) -> tuple[int, int, int, int]:
        """(messages, unseen, recent, total size) of a mailbox."""
        seen = Message.flags.contains("\\Seen", autoescape=True)
        stmt = select(
            func.count(),
            func.coalesce(func.sum(case((seen, 0), else_=1)), 0),
            func.coalesce(func.sum(case((Message.uid >= first_recent_uid, 1), else_=0)), 0),
            func.coalesce(func.sum(Message.size), 0),
        ).where(Message.mailbox_id == mailbox_id)
        n, unseen, recent, size = (await self.session.execute(stmt)).one()
        return int(n), int(unseen), int(recent), int(size)

    async def deleted_count(self, mailbox_id: int) -> int:
        """How many messages of the mailbox carry \\Deleted (RFC 9051 STATUS DELETED)."""
        stmt = select(func.count()).where(
            Message.mailbox_id == mailbox_id, Message.flags.contains("\\Deleted", autoescape=True)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def blob_parts(self, blob_ids: Iterable[str], *, body: bool) -> dict[str, Blob]:
        """Blobs by id; without ``body`` only the (small) sealed metadata is read."""
        ids = sorted(set(blob_ids))
        out: dict[str, Blob] = {}
        for i in range(0, len(ids), 500):
            stmt = select(Blob).where(Blob.id.in_(ids[i : i + 500]))
            if not body:
                stmt = stmt.options(load_only(Blob.id, Blob.account_id, Blob.meta, Blob.size, raiseload=True))
            for b in (await self.session.execute(stmt)).scalars().all():
                out[b.id] = b
        return out
