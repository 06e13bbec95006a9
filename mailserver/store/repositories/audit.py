"""The audit chain: append under a lock at commit time, verify from the first row with the key and the anchors.

hash(n) = HMAC-SHA256(chain key, hash(n-1) "\\n" canonical(n)), canonical(n) being compact
JSON of [seq, at, actor, action, object_id, outcome, detail]; hash(0) is 64 zeros. Entries
below the head's ``keyed_from`` (written before migration 0004) use plain SHA-256 instead
and are reported as legacy. See ``mailserver.store.auditchain`` for the key and the anchors.

Client text (login names, addresses, mailbox names) is escaped here, on write
(``mailserver.text.escape``): no entry holds a raw control character.

Every unit of work that commits runs the writing statements below (the chain's head, the entries): Core,
built once with bound parameters, the entries inserted with one driver-level ``executemany``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BigInteger, Integer, Table, Update, bindparam, delete, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from mailserver.store.auditchain import GENESIS, AuditTrail, BadAnchor, Checkpoint, canonical, legacy_link
from mailserver.store.errors import StoreError
from mailserver.store.models import AuditEntry, AuditHead
from mailserver.store.models.audit import AuditPending
from mailserver.store.repositories.base import Repository, execute, insert_many, is_postgresql, rows_of
from mailserver.text import escape, escape_optional

HEAD_ID = 1
#: PostgreSQL advisory lock held by the one sealer at a time (``pg_advisory_xact_lock``): "maudit"
SEALER_LOCK = 0x6D6175646974
#: pending entries chained per sealing transaction
SEAL_BATCH = 1000


_LOG = cast(Table, AuditEntry.__table__)
_HEAD = cast(Table, AuditHead.__table__)
_PENDING = cast(Table, AuditPending.__table__)
_HEAD_FOR_UPDATE = (
    select(_HEAD.c.seq, _HEAD.c.hash, _HEAD.c.keyed_from).where(_HEAD.c.id == bindparam("id")).with_for_update()
)
#: a sealer's batch: the oldest pending entries, deleted and returned (any order: sorted by id after)
_TAKE_PENDING = (
    delete(_PENDING)
    .where(_PENDING.c.id.in_(select(_PENDING.c.id).order_by(_PENDING.c.id).limit(bindparam("n", type_=Integer))))
    .returning(
        _PENDING.c.id,
        _PENDING.c.at,
        _PENDING.c.actor,
        _PENDING.c.action,
        _PENDING.c.object_id,
        _PENDING.c.outcome,
        _PENDING.c.detail,
    )
)
_HEAD_UPDATE = (
    update(_HEAD)
    .where(_HEAD.c.id == bindparam("head_id"))
    .values(seq=bindparam("new_seq", type_=_HEAD.c.seq.type), hash=bindparam("new_hash", type_=_HEAD.c.hash.type))
)


_INSERT_ENTRIES = insert(_LOG)
#: PostgreSQL: a unit's entries staged in one statement (arrays, ``unnest``), with its change notification or not
_STAGED = ("at", "actor", "action", "object_id", "outcome", "detail")
_STAGE_ROWS = (
    "INSERT INTO audit_pending (at, actor, action, object_id, outcome, detail)"
    " SELECT * FROM unnest(CAST(:at AS timestamptz[]), CAST(:actor AS varchar[]), CAST(:action AS varchar[]),"
    " CAST(:object_id AS varchar[]), CAST(:outcome AS varchar[]), CAST(:detail AS text[]))"
)
_STAGE = text(_STAGE_ROWS)
#: a data-modifying WITH runs once whether or not the query reads it: the entries and the NOTIFY, one round trip
_STAGE_AND_NOTIFY = text(f"WITH staged AS ({_STAGE_ROWS}) SELECT pg_notify(:channel, :payload)")
#: PostgreSQL: one sealer of any process at a time, until its transaction ends
_SEALER_LOCK = select(func.pg_advisory_xact_lock(bindparam("key", SEALER_LOCK, type_=BigInteger)))

#: an entry chained, as its row is written (``AuditRepository.link``)
ChainedRow = dict[str, Any]


def head_row_update(head: Checkpoint) -> tuple[Update, Mapping[str, Any]]:
    """The statement that makes ``head`` the chain's head row, and its parameters."""
    return _HEAD_UPDATE, {"head_id": HEAD_ID, "new_seq": head.seq, "new_hash": head.hash}


async def write_chained(conn: AsyncConnection, head: Checkpoint, rows: Sequence[ChainedRow]) -> None:
    """A group-commit batch's audit, just before its COMMIT: the entries its units chained (``link``), in the
    order they chained them, in one ``executemany``, then ``head`` into the head row."""
    if rows:
        await conn.execute(_INSERT_ENTRIES, list(rows))
    await conn.execute(*head_row_update(head))


class AuditKeyMissing(StoreError):
    """This process has no audit key: it cannot extend (or verify) the keyed chain."""


@dataclass(frozen=True, slots=True)
class PendingAudit:
    at: dt.datetime
    actor: str
    action: str
    object_id: str
    outcome: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class AuditBreak:
    """Where the chain is broken, and how."""

    seq: int
    reason: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The outcome of a walk of the chain, with what it lets one trust."""

    checked: int  # entries verified, from entry 1, before the first break (or all of them)
    keyed_from: int  # the first keyed entry; those before it are legacy (plain SHA-256)
    broken: AuditBreak | None
    anchored_seq: int | None  # the newest anchor the chain agrees with
    anchored_at: dt.datetime | None
    anchors: int  # signed checkpoints read
    pending: int = 0  # entries committed and not chained yet (a sealer is on its way, or the next one will)

    @property
    def intact(self) -> bool:
        return self.broken is None

    def sentence(self) -> str:
        """One sentence for the operator: from which entry the log can be trusted, where it breaks."""
        last = self.checked
        legacy_to = min(self.keyed_from - 1, last)
        if legacy_to >= 1:
            legacy = (
                f"entries 1-{legacy_to} are legacy (written before migration 0004 with unkeyed SHA-256: "
                "whoever could write the database could have rewritten them)"
            )
        else:
            legacy = ""
        if last >= self.keyed_from:
            trusted = f"entries {self.keyed_from}-{last} are keyed and can be trusted"
        else:
            trusted = "no keyed entry can be trusted" if self.broken else "no keyed entry yet"
        if self.anchored_seq is not None and self.anchored_at is not None:
            anchor = (
                f"the newest matching anchor ({self.anchored_at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC) "
                f"covers entry {self.anchored_seq}"
            )
        elif self.anchors == 0:
            anchor = "no anchor outside the database yet, so a cut tail would not show"
        else:
            anchor = ""
        waiting = f"{self.pending} newer entries are committed and wait to be chained" if self.pending else ""
        if self.broken is None:
            trust = "; ".join(p for p in (legacy, trusted, anchor, waiting) if p)
            return f"audit log intact: {self.checked} entries; {trust}."
        if self.broken.seq <= 0:
            return f"audit log cannot be trusted: {self.broken.reason}."
        trust = "; ".join(p for p in (legacy, trusted) if p)
        seq = self.broken.seq
        return f"audit log broken at entry {seq}: {self.broken.reason}; {trust}, nothing from entry {seq} on."


class AuditRepository(Repository):
    """The audit log. ``catch_up`` (PostgreSQL: ``uow.AuditSealer.caught_up``) chains what is committed and still
    staged before a read of the chain (``report``, ``verify``, ``tail``, ``count``), so a reader sees every entry
    committed before it asked."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        trail: AuditTrail | None = None,
        catch_up: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(session)
        self.trail = trail
        self._catch_up = catch_up

    async def caught_up(self) -> None:
        """Every entry committed so far is in the chain (run before this unit's first read)."""
        if self._catch_up is not None:
            await self._catch_up()

    def _key(self) -> AuditTrail:
        if self.trail is None:
            raise AuditKeyMissing(
                "no audit key is loaded, so the keyed audit log cannot be written or verified: "
                "run `masante-admin init` (it creates [audit] key_file) or set MASANTE_AUDIT_KEY"
            )
        return self.trail

    async def append(
        self, pending: Sequence[PendingAudit], *, known: Checkpoint | None = None, write_head: bool = True
    ) -> Checkpoint | None:
        r"""Chain and insert ``pending``; the new head. Takes the head row's lock: call it last in a transaction.

        The SQLite path (one writer at a time anyway); on PostgreSQL a unit of work ``stage``\ s instead.
        ``known``: the head as this transaction already left it (an earlier unit of the same group-commit
        batch), so it is not read again; without ``write_head`` the head row is left for the caller to write
        (``head_row_update``) once for the whole batch, before its COMMIT."""
        if not pending:
            return None
        return await self._chain([_escaped(p) for p in pending], known=known, write_head=write_head)

    async def link(
        self, pending: Sequence[PendingAudit], *, known: Checkpoint | None
    ) -> tuple[Checkpoint, list[ChainedRow]]:
        """Chain ``pending`` after ``known`` (None: after the head row, read with its lock) without writing the
        entries: (the new head, their rows). A SQLite group-commit batch writes its units' rows together, in
        its transaction, before its COMMIT (``write_chained``); ``pending`` must not be empty."""
        return await self._link([_escaped(p) for p in pending], known=known)

    async def stage(self, pending: Sequence[PendingAudit], *, notify: tuple[str, str] | None = None) -> bool:
        """PostgreSQL (its units of work stage, its sealer chains): insert ``pending`` unchained, in the caller's
        transaction, taking no shared lock, in one statement whatever their number (``_STAGE``); ``notify``
        (channel, payload: the unit's ``pg_notify``) sent by the same statement. True if any entry."""
        entries = list(map(_escaped, pending))
        if entries:
            self._key()  # staged without the key, they could never be chained: refused before the commit
        elif notify is None:
            return False
        params: dict[str, Any] = {name: [getattr(e, name) for e in entries] for name in _STAGED}
        if notify is not None:
            params["channel"], params["payload"] = notify
        await execute(self.session, _STAGE if notify is None else _STAGE_AND_NOTIFY, params)
        return bool(entries)

    async def seal(self, batch: int = SEAL_BATCH) -> tuple[Checkpoint | None, bool]:
        """Chain up to ``batch`` committed pending entries, oldest first: (new head or None, more left).

        Run in a transaction of its own, after the commits it seals. PostgreSQL: waits for the advisory lock,
        so one sealer of any process runs at a time; the entries it sees are those committed before its
        snapshot, and the next sealer takes the rest."""
        if is_postgresql(self.session):  # a statement of its own: the next one's snapshot sees what the last holder did
            await execute(self.session, _SEALER_LOCK)
        # the oldest ``batch`` taken out of the pending table and read in one statement (the transaction chains
        # them before it commits: both or neither)
        rows = sorted(await rows_of(self.session, _TAKE_PENDING, {"n": batch}), key=lambda r: int(r[0]))
        if not rows:
            return None, False
        entries = [PendingAudit(r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]
        head = await self._chain(entries)
        return head, len(rows) == batch

    async def pending_count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(AuditPending))).scalar_one())

    async def _chain(
        self, pending: Sequence[PendingAudit], *, known: Checkpoint | None = None, write_head: bool = True
    ) -> Checkpoint:
        new, values = await self._link(pending, known=known)
        await insert_many(self.session, _LOG, values)
        if write_head:
            await execute(self.session, *head_row_update(new))
        return new

    async def _link(
        self, pending: Sequence[PendingAudit], *, known: Checkpoint | None
    ) -> tuple[Checkpoint, list[ChainedRow]]:
        trail = self._key()
        if known is not None:
            seq, prev, keyed_from = known.seq, known.hash, known.keyed_from
        else:
            found = await rows_of(self.session, _HEAD_FOR_UPDATE, {"id": HEAD_ID})
            head = found[0] if found else None
            if head is None:
                seq, prev, keyed_from = 0, GENESIS, 1
                self.session.add(AuditHead(id=HEAD_ID, seq=0, hash=GENESIS, keyed_from=1))
                await self.session.flush()
            else:
                seq, prev, keyed_from = int(head[0]), str(head[1]), int(head[2])
        values: list[ChainedRow] = []
        for p in pending:
            seq += 1
            h = trail.link(prev, canonical(seq, p.at, p.actor, p.action, p.object_id, p.outcome, p.detail))
            values.append(
                {
                    "seq": seq,
                    "at": p.at,
                    "actor": p.actor,
                    "action": p.action,
                    "object_id": p.object_id,
                    "outcome": p.outcome,
                    "detail": p.detail,
                    "prev_hash": prev,
                    "hash": h,
                }
            )
            prev = h
        return Checkpoint(seq, prev, keyed_from), values

    async def _rows(self, batch: int = 1000) -> AsyncIterator[AuditEntry]:
        last = 0
        while True:
            stmt = select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch)
            rows = (await self.session.execute(stmt)).scalars().all()
            if not rows:
                return
            for r in rows:
                yield r
            last = rows[-1].seq
            self.session.expunge_all()

    async def verify(self) -> tuple[int, AuditBreak | None]:
        """Walk the chain: (entries checked, the first break or None). See ``report``."""
        r = await self.report()
        return r.checked, r.broken

    async def report(self) -> AuditReport:
        """Walk the chain with the key, check it against the anchors, and say what can be trusted.

        Called first in its unit of work: on PostgreSQL the walk reads one snapshot (REPEATABLE READ), so a sealer
        chaining entries meanwhile does not show a head older than the entries read after it."""
        await self.caught_up()
        if is_postgresql(self.session) and not self.session.in_transaction():
            await self.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        trail = self._key()
        head = (await self.session.execute(select(AuditHead.seq, AuditHead.hash, AuditHead.keyed_from))).one_or_none()
        keyed_from = 1 if head is None else int(head[2])
        anchors: list[Checkpoint] = []
        bad: list[BadAnchor] = []
        if trail.anchors is not None:
            anchors, bad = trail.anchors.read()
        by_seq: dict[int, Checkpoint] = {}
        for cp in sorted(anchors, key=lambda c: c.at or dt.datetime.min.replace(tzinfo=dt.UTC)):
            by_seq.setdefault(cp.seq, cp)
        newest = max(anchors, key=lambda c: c.seq, default=None)

        pending = await self.pending_count()

        def done(checked: int, broken: AuditBreak | None, matched: Checkpoint | None) -> AuditReport:
            return AuditReport(
                checked,
                keyed_from,
                broken,
                matched.seq if matched else None,
                matched.at if matched else None,
                len(anchors),
                pending,
            )

        if bad:
            first = bad[0]
            return done(0, AuditBreak(0, f"the anchor file was tampered with: {first.reason}"), None)
        marked = {cp.keyed_from for cp in anchors}
        if marked and marked != {keyed_from}:
            was = sorted(marked)[0]
            return done(
                0,
                AuditBreak(
                    min(was, keyed_from),
                    f"the legacy marker was moved: the anchors say keyed entries start at {was}, "
                    f"the database says {keyed_from}",
                ),
                None,
            )

        expected_seq, prev = 1, GENESIS
        checked = 0
        matched: Checkpoint | None = None
        async for e in self._rows():
            if e.seq != expected_seq:
                return done(
                    checked,
                    AuditBreak(expected_seq, f"entry {expected_seq} is missing (next found is {e.seq})"),
                    matched,
                )
            if e.prev_hash != prev:
                return done(
                    checked,
                    AuditBreak(e.seq, f"entry {e.seq} does not follow entry {e.seq - 1} (its previous-hash differs)"),
                    matched,
                )
            entry = canonical(e.seq, e.at, e.actor, e.action, e.object_id, e.outcome, e.detail)
            expected = legacy_link(prev, entry) if e.seq < keyed_from else trail.link(prev, entry)
            if expected != e.hash:
                kind = "unkeyed hash" if e.seq < keyed_from else "keyed hash, an HMAC under the audit key"
                return done(
                    checked,
                    AuditBreak(e.seq, f"entry {e.seq} was altered (its content no longer matches its {kind})"),
                    matched,
                )
            anchored = by_seq.get(e.seq)
            if anchored is not None:
                if anchored.hash != e.hash:
                    return done(
                        checked,
                        AuditBreak(e.seq, f"entry {e.seq} differs from the anchor written at {_when(anchored)}"),
                        matched,
                    )
                matched = anchored
            prev = e.hash
            expected_seq += 1
            checked += 1
        if head is None:
            if checked:
                return done(checked, AuditBreak(checked + 1, "the audit head row is missing"), matched)
            head_seq, head_hash = 0, GENESIS
        else:
            head_seq, head_hash = int(head[0]), str(head[1])
        if head_seq != checked or head_hash != prev:
            return done(
                checked,
                AuditBreak(
                    checked + 1,
                    f"the log ends at entry {checked} but its head records "
                    f"entry {head_seq}: entries were removed from the end",
                ),
                matched,
            )
        if newest is not None and newest.seq > checked:
            return done(
                checked,
                AuditBreak(
                    checked + 1,
                    f"the log ends at entry {checked} but the anchor written at {_when(newest)} records entry "
                    f"{newest.seq}: entries {checked + 1}-{newest.seq} were removed from the end and the head "
                    "rewound",
                ),
                matched,
            )
        return done(checked, None, matched)

    async def tail(self, n: int) -> Sequence[AuditEntry]:
        await self.caught_up()
        stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(n)
        return list(reversed((await self.session.execute(stmt)).scalars().all()))

    async def count(self) -> int:
        await self.caught_up()
        return int((await self.session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


def _escaped(p: PendingAudit) -> PendingAudit:
    """Client text as it is stored: control characters escaped (``mailserver.text``)."""
    return PendingAudit(
        p.at, escape(p.actor), escape(p.action), escape(p.object_id), escape(p.outcome), escape_optional(p.detail)
    )


def _when(cp: Checkpoint) -> str:
    return f"{cp.at.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC" if cp.at else "an unknown time"
