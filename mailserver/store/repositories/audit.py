"""The audit chain: append under a lock at commit time, verify from the first row.

hash(n) = SHA-256(hash(n-1) "\\n" canonical(n)), canonical(n) being compact JSON of
[seq, at, actor, action, object_id, outcome, detail]; hash(0) is 64 zeros.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, update

from mailserver.store.models import AuditEntry, AuditHead
from mailserver.store.repositories.base import Repository

GENESIS = "0" * 64
HEAD_ID = 1


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


def chain_hash(
    prev_hash: str, seq: int, at: dt.datetime, actor: str, action: str, object_id: str, outcome: str, detail: str | None
) -> str:
    canonical = json.dumps(
        [seq, at.astimezone(dt.UTC).isoformat(timespec="microseconds"), actor, action, object_id, outcome, detail],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical.encode()).hexdigest()


def _entry_hash(prev_hash: str, e: AuditEntry) -> str:
    return chain_hash(prev_hash, e.seq, e.at, e.actor, e.action, e.object_id, e.outcome, e.detail)


class AuditRepository(Repository):
    async def append(self, pending: Sequence[PendingAudit]) -> None:
        """Chain and insert ``pending``. Takes the head row's lock: call it last in a transaction."""
        if not pending:
            return
        head = (
            await self.session.execute(
                select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == HEAD_ID).with_for_update()
            )
        ).one_or_none()
        if head is None:
            seq, prev = 0, GENESIS
            self.session.add(AuditHead(id=HEAD_ID, seq=0, hash=GENESIS))
            await self.session.flush()
        else:
            seq, prev = int(head[0]), str(head[1])
        for p in pending:
            seq += 1
            h = chain_hash(prev, seq, p.at, p.actor, p.action, p.object_id, p.outcome, p.detail)
            self.session.add(
                AuditEntry(
                    seq=seq,
                    at=p.at,
                    actor=p.actor,
                    action=p.action,
                    object_id=p.object_id,
                    outcome=p.outcome,
                    detail=p.detail,
                    prev_hash=prev,
                    hash=h,
                )
            )
            prev = h
        await self.session.flush()
        await self.session.execute(update(AuditHead).where(AuditHead.id == HEAD_ID).values(seq=seq, hash=prev))

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
        """Walk the chain: (entries checked, the first break or None)."""
        expected_seq, prev = 1, GENESIS
        checked = 0
        async for e in self._rows():
            if e.seq != expected_seq:
                return checked, AuditBreak(expected_seq, f"entry {expected_seq} is missing (next found is {e.seq})")
            if e.prev_hash != prev:
                return checked, AuditBreak(
                    e.seq, f"entry {e.seq} does not follow entry {e.seq - 1} (its previous-hash differs)"
                )
            if _entry_hash(prev, e) != e.hash:
                return checked, AuditBreak(e.seq, f"entry {e.seq} was altered (its content no longer matches its hash)")
            prev = e.hash
            expected_seq += 1
            checked += 1
        head = (await self.session.execute(select(AuditHead.seq, AuditHead.hash))).one_or_none()
        head_seq, head_hash = (0, GENESIS) if head is None else (int(head[0]), str(head[1]))
        if head_seq != checked or head_hash != prev:
            return checked, AuditBreak(
                checked + 1,
                f"the log ends at entry {checked} but its head records "
                f"entry {head_seq}: entries were removed from the end",
            )
        return checked, None

    async def tail(self, n: int) -> Sequence[AuditEntry]:
        stmt = select(AuditEntry).order_by(AuditEntry.seq.desc()).limit(n)
        return list(reversed((await self.session.execute(stmt)).scalars().all()))

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(AuditEntry))).scalar_one())
