"""The unit of work: one session, one transaction, repositories bound to it.

    async with UnitOfWork(db) as uow:
        ...
        uow.audit("dr.martin@...", "login", "account:3", "success")
        uow.touch(mailbox.id)
        await uow.commit()      # audit chained, committed, then IDLE sessions woken

Leaving the block without ``commit()`` rolls everything back; objects read stay usable after it. Audit entries are
written at commit, in the same transaction as what they describe: the log holds
what happened, not what was attempted and rolled back (record refusals in a
unit of work of their own). On SQLite (one writer) they are chained at the unit's commit and written in that
transaction (the batch its group commit shares, ``store.groupcommit``: with the batch's other entries, just
before its COMMIT, and only if the unit's savepoint was released);
on PostgreSQL they are staged in it, unchained, and chained soon after the commit by the process's sealer, in
the background (``AuditSealer``): writers neither queue on the chain's head row nor wait for the chaining, and a
reader of the chain (``audit_log.report``, ``tail``...) has what is committed sealed first. Either way the new
head of the chain is handed to the database's audit trail, which anchors it outside the database when due.

On SQLite the writing units of work of this process share one transaction and one fsync (group commit,
``mailserver.store.groupcommit``): each works in a savepoint of its own, rolled back alone when it fails or
leaves without committing, and ``commit()`` returns once the batch's COMMIT is done; the audit head and the
IDLE watchers hear of it only then. PostgreSQL keeps a transaction per unit (see that module for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mailserver import metrics
from mailserver.clock import Clock, SystemClock
from mailserver.notify import CHANNEL
from mailserver.store.db import Database
from mailserver.store.groupcommit import Turn, group_of
from mailserver.store.models.base import utcnow
from mailserver.store.repositories import (
    AccountRepository,
    ActivityRepository,
    AgendaRepository,
    AuditRepository,
    BlobRepository,
    BroadcastRepository,
    CredentialRepository,
    DirectoryRepository,
    DkimKeyRepository,
    DomainRepository,
    GrantRepository,
    LoginCounterRepository,
    MailboxRepository,
    MessageRepository,
    MessageViews,
    PendingAudit,
    QueueRepository,
    TrustRepository,
)
from mailserver.store.repositories.audit import ChainedRow
from mailserver.store.repositories.certificates import CertificateRepository
from mailserver.store.sealing import SESSION_SEALER, MetadataSealer

R = TypeVar("R")

log = logging.getLogger("masante.store")

#: seconds the background sealer waits after a commit before its run, so that one run chains the entries of
#: every commit of that moment: under the SMTP letters, 45 runs for 3,000 deliveries (328 with 20 ms). A reader
#: of the chain does not wait for it (``AuditSealer.caught_up``), nor does closing the database (``close``)
SEAL_LINGER = 0.25


class _Repository(Generic[R]):
    """A repository of the unit of work, made on first use and kept (a unit uses two or three of its nineteen)."""

    def __init__(self, make: Callable[[UnitOfWork], R]) -> None:
        self._make = make
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, uow: UnitOfWork, owner: type | None = None) -> R:
        repo = self._make(uow)
        uow.__dict__[self._name] = repo  # the instance's attribute from now on: this is not called again
        return repo


def _metadata_key(uow: UnitOfWork) -> Callable[[], MetadataSealer]:
    return lambda: uow.db.metadata_key


class UnitOfWork:
    db: Database
    session: AsyncSession
    domains = _Repository(lambda u: DomainRepository(u.session))
    accounts = _Repository(lambda u: AccountRepository(u.session))
    mailboxes = _Repository(lambda u: MailboxRepository(u.session, _metadata_key(u)))
    messages = _Repository(lambda u: MessageRepository(u.session))
    blobs = _Repository(lambda u: BlobRepository(u.session))
    audit_log = _Repository(
        lambda u: AuditRepository(
            u.session, trail=u.db.audit, catch_up=sealer_of(u.db).caught_up if u.db.is_postgresql else None
        )
    )
    queue = _Repository(lambda u: QueueRepository(u.session))
    trust = _Repository(lambda u: TrustRepository(u.session))
    directory = _Repository(lambda u: DirectoryRepository(u.session))
    grants = _Repository(lambda u: GrantRepository(u.session, _metadata_key(u)))
    dkim_keys = _Repository(lambda u: DkimKeyRepository(u.session))
    certificates = _Repository(lambda u: CertificateRepository(u.session))
    credentials = _Repository(lambda u: CredentialRepository(u.session))
    login_counters = _Repository(lambda u: LoginCounterRepository(u.session))
    activity = _Repository(lambda u: ActivityRepository(u.session))
    message_views = _Repository(lambda u: MessageViews(u.session))
    broadcasts = _Repository(lambda u: BroadcastRepository(u.session))
    agenda = _Repository(lambda u: AgendaRepository(u.session))

    def __init__(self, db: Database, *, readonly: bool = False, clock: Clock | None = None) -> None:
        self._turn: Turn | None = None
        self.db = db
        #: the process's injected clock (``Context.uow`` passes ``ctx.clock``): what the work decides by time
        self.clock: Clock = clock or SystemClock()
        self.readonly = readonly
        self._pending_audit: list[PendingAudit] = []
        self._touched: set[int] = set()
        self._after_commit: list[Callable[[], None]] = []

    async def __aenter__(self) -> UnitOfWork:
        if not self.readonly and self.db.is_sqlite:
            # SQLite has one writer: take turns in this process's group commit (``groupcommit``), in order,
            # rather than in SQLite's busy handler, which sleeps and retries (seconds of latency under load)
            self._turn = Turn(group_of(self.db))
            await self._turn.group.acquire(self._turn)  # a writer nested in another fails with StoreBusy
            self.session = self._turn.session()
        else:
            self.session = (self.db.reader if self.readonly else self.db.writer)()
        self.session.sync_session.info[SESSION_SEALER] = _metadata_key(self)  # opens and seals mailbox names
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() ends the transaction (rolling back anything not committed: on SQLite, to the unit's savepoint)
        # and detaches the objects without expiring them, so what was read stays readable after the block.
        turn = self._turn
        try:
            await self.session.close()
        except BaseException as err:
            if turn is not None and turn.holding:
                turn.group.break_batch(err)
            raise
        finally:
            if turn is not None and turn.holding and (rollback := turn.group.release(turn, None)) is not None:
                await asyncio.shield(rollback)

    def audit(
        self,
        actor: str,
        action: str,
        object_id: str,
        outcome: str,
        detail: str | None = None,
        *,
        at: dt.datetime | None = None,
    ) -> None:
        """Record an entry, written at commit. ``detail`` holds ids and reasons, never content or secrets."""
        self._pending_audit.append(PendingAudit(at or utcnow(), actor, action, object_id, outcome, detail))

    def touch(self, mailbox_id: int) -> None:
        """Say that a mailbox changed: its watchers are woken after the commit."""
        self._touched.add(mailbox_id)

    def after_commit(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once this unit commits (a metric of what it did); dropped if it rolls back, so a unit
        run again after a conflict (``retry``) counts once, not once a run."""
        self._after_commit.append(fn)

    async def commit(self) -> None:
        if self.readonly:
            raise RuntimeError("a read-only unit of work cannot commit")
        started = time.perf_counter()
        rows: list[ChainedRow] = []
        touched = sorted(self._touched)
        if self.db.is_postgresql:
            # no lock shared by every writer: the entries wait in audit_pending, chained after the commit; the
            # mailboxes changed told to every LISTENing process when (and only if) this commits, by the same
            # statement
            notify = (CHANNEL, ",".join(map(str, touched))) if touched else None
            staged = await self.audit_log.stage(self._pending_audit, notify=notify)
            head = None
        elif self._turn is not None and self._pending_audit:
            # chained from the batch's head; the entries and the head row written once for the batch, before its
            # COMMIT (``groupcommit``)
            staged = False
            await self._turn.hold()
            head, rows = await self.audit_log.link(self._pending_audit, known=self._turn.audit_head())
        else:
            staged = False
            head = await self.audit_log.append(self._pending_audit)
        await self.session.commit()  # on SQLite, releases the unit's savepoint in the batch
        if self._turn is not None:
            # the batch writes the entries, and its COMMIT anchors the head and wakes the watchers, once committed
            await self._turn.committed(head, touched, rows)
        else:
            metrics.STORE_GROUP_COMMIT_UNITS.labels("postgresql").observe(1)
        metrics.STORE_COMMIT_SECONDS.labels("postgresql" if self.db.is_postgresql else "sqlite").observe(
            time.perf_counter() - started
        )
        self._pending_audit.clear()
        self._touched.clear()
        done, self._after_commit = self._after_commit, []
        for fn in done:
            fn()
        if self._turn is None:
            if head is not None and self.db.audit is not None:
                self.db.audit.committed(head)  # anchored outside the database if due (never before the commit)
            self.db.notifier.publish(touched)
        if staged:
            sealer_of(self.db).soon()

    async def rollback(self) -> None:
        await self.session.rollback()
        self._pending_audit.clear()
        self._touched.clear()
        self._after_commit.clear()


class AuditSealer:
    """Chains committed ``audit_pending`` entries into the audit log, in batches, one sealer at a time.

    A unit of work that staged entries calls ``soon()`` after its commit and goes on: the process's sealing
    task chains them in the background, the entries of every commit since its last run in one run. Nothing is
    lost meanwhile: the entries were committed with what they describe, and whoever runs next (this process,
    another, the CLI, the next start after a crash) chains them. A reader of the chain awaits ``caught_up()``
    first, which returns once a run that started after the call has finished. Concurrent callers of one process
    share runs; across processes the advisory lock taken in ``AuditRepository.seal`` lets one run at a time.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        self._asked = 0  # commits and readers of this process that asked for a run
        self._sealed = 0  # of those, how many a finished run is known to have seen
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()  # set by ``close``: the lingering run starts at once

    def soon(self) -> None:
        """A commit staged entries: chain them in the background (the running task takes them on its next run)."""
        self._asked += 1
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._background(), name="audit-sealer")

    async def caught_up(self) -> None:
        """Return once every entry committed before this call is chained (by a run started after it)."""
        self._asked += 1
        await self._until(self._asked)

    async def _until(self, mine: int) -> None:
        while self._sealed < mine:
            async with self._lock:
                if self._sealed >= mine:
                    return
                seen = self._asked  # every commit counted so far is visible to the run starting now
                await self.run()
                self._sealed = max(self._sealed, seen)

    async def _background(self) -> None:
        while self._sealed < self._asked:
            try:
                await self._linger()  # the commits of the next moment chained in the same run
                await self._until(self._asked)
            except Exception as err:  # the entries stay staged: the next commit's run, or a reader's, chains them
                log.warning("audit sealing failed, entries stay pending: %s", type(err).__name__)
                return

    async def _linger(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), SEAL_LINGER)

    async def close(self) -> None:
        """Let the background run finish, started at once (the database is being disposed of); what it leaves
        stays staged."""
        task = self._task
        if task is not None and not task.done():
            self._hurry.set()
            await asyncio.shield(task)

    async def run(self) -> int:
        """Seal every pending entry committed so far; how many were chained."""
        sealed = 0
        more = True
        while more:
            session = self.db.writer()
            try:
                repo = AuditRepository(session, trail=self.db.audit)
                head, more = await repo.seal()
                await session.commit()
            finally:
                await session.close()
            if head is None:
                break
            if self.db.audit is not None:
                self.db.audit.committed(head)
            sealed += 1
        return sealed


#: one sealer per PostgreSQL database of this process
_SEALERS: weakref.WeakKeyDictionary[Database, AuditSealer] = weakref.WeakKeyDictionary()


def sealer_of(db: Database) -> AuditSealer:
    sealer = _SEALERS.get(db)
    if sealer is None:
        sealer = _SEALERS[db] = AuditSealer(db)
        db.before_dispose(sealer.close)
    return sealer
