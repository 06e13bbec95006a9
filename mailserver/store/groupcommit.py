"""Group commit on SQLite: the writing units of work of this process share one transaction and one fsync.

SQLite has one writer, and with ``synchronous=FULL`` every COMMIT fsyncs the WAL. Rather than queue
for the writer and pay one fsync each, concurrent units of work take turns in one transaction (a
*batch*) and the batch commits once for all of them.

Invariants:
- One ``GroupWriter`` per SQLite database of this process. At most one unit of work holds the writer at a
  time (the *holder*), and only the holder runs statements on the batch's connection; the others wait
  in arrival order.
- Across the processes of one database file, the group writers take turns through ``writerlock`` (a lock
  file taken before the batch's BEGIN, let go after its COMMIT or ROLLBACK): a process waiting for another's
  batch is woken when it ends, instead of sleeping in SQLite's busy handler.
- A batch is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) on one connection. Its BEGIN and COMMIT run on
  aiosqlite's thread; its statements in between on the event loop's, without a round trip
  (``sqlite_driver.OneTripConnection.run_inline``): the batch holds the write lock, so they wait for nobody.
  Each unit's work runs in a SAVEPOINT of it, through a session of its own joined with
  ``join_transaction_mode="create_savepoint"``: a unit that raises (a constraint, ``KeyDestroyed``,
  anything) or leaves without committing is rolled back to its savepoint, alone, and only its caller sees its
  error. Its neighbours' work is untouched.
- A unit's ``commit()`` releases its savepoint, hands the writer to the next waiting unit (the batch stays
  open) and waits for the batch's COMMIT. The batch commits when the writer is released and no one waits,
  or when it holds ``MAX_UNITS`` committed units, or ``MAX_SECONDS`` after its first unit committed. If the
  COMMIT fails, every unit committed in the batch gets that error.
- What a commit promises beyond the database happens after the COMMIT returns, never before: the audit
  head handed to ``AuditTrail.committed`` (anchoring), and IDLE watchers woken (``ChangeNotifier.publish``).
  Audit entries are chained in the batch's transaction, unit after unit, in the order they commit: a unit
  chains from the head the batch's earlier units left (read from its row by the first one only), and the
  entries of every committed unit, then the head row, are written once for the batch, in its transaction,
  just before its COMMIT (one ``executemany``): the transaction they describe, and a unit rolled back to its
  savepoint never has its entries written.
- The COMMIT runs in a task of its own: a caller cancelled while it waits does not cancel its neighbours.
- A unit used again after its ``commit()`` queues for the writer again at its next statement (the session's
  ``get_bind``) and works in a new savepoint of whichever batch is open then.
- A writer nested in another one of the same task cannot get the writer: it fails with ``StoreBusy`` after
  ``SQLITE_BUSY_TIMEOUT_MS`` instead of hanging. Likewise a unit holding the writer must not wait for
  another unit's ``commit()`` to return: that commit waits for the holder to hand the writer on.

PostgreSQL keeps a transaction per unit of work (``UnitOfWork``): its writers run at once on separate
connections and meet only on the rows they share, and PostgreSQL already flushes the WAL of concurrent
commits together (one fsync covers every commit record written meanwhile). One shared transaction there
would serialise this process's writers behind one connection, keep each unit's row locks until the
batch commits, and turn one unit's deadlock into a wait for all. Measured (``bench/pg_group_commit.py``,
2-core machine, ``synchronous_commit=on``): a transaction per unit on 20 connections, 370-510 units/s;
20 units per transaction, a savepoint each, on one connection, 115-195 units/s.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.util.concurrency import await_, in_greenlet

from mailserver import metrics
from mailserver.store.auditchain import Checkpoint
from mailserver.store.db import SQLITE_BUSY_TIMEOUT_MS, Database
from mailserver.store.errors import StoreBusy
from mailserver.store.repositories.audit import ChainedRow, write_chained
from mailserver.store.sqlite_driver import OneTripConnection

#: committed units of work after which a batch commits even if more are waiting
MAX_UNITS = 64
#: seconds after its first unit committed after which a batch commits even if more are waiting (what
#: group commit may add to that unit's wait, beyond the work of the unit holding the writer then)
MAX_SECONDS = 0.010

_TURN = "masante_turn"


@dataclass(eq=False)
class _Share:
    """A committed unit's part of a batch: what to answer and what to do after the COMMIT."""

    answer: asyncio.Future[None]
    head: Checkpoint | None
    touched: Sequence[int]
    audit_rows: Sequence[ChainedRow] = ()  # the unit's entries, chained after the previous share's


@dataclass(eq=False)
class _Batch:
    conn: AsyncConnection
    shares: list[_Share] = field(default_factory=list)
    first_commit: float = 0.0
    broken: BaseException | None = None  # a unit could not be rolled back to its savepoint: roll back all
    #: the audit chain's head as the batch's committed units left it, written into its row once, before the
    #: COMMIT (a unit chains from it without reading the row; a failed unit's entries never reach it)
    audit_head: Checkpoint | None = None
    #: the committed units' entries, in chain order, written with the head row before the COMMIT
    audit_rows: list[ChainedRow] = field(default_factory=list)

    def add(self, share: _Share) -> None:
        if not self.shares:
            self.first_commit = time.perf_counter()
        self.shares.append(share)
        if share.head is not None:
            self.audit_head = share.head
        self.audit_rows.extend(share.audit_rows)

    def full(self) -> bool:
        if not self.shares:
            return False
        return len(self.shares) >= MAX_UNITS or time.perf_counter() - self.first_commit >= MAX_SECONDS


class Turn:
    """One unit of work's place at the writer."""

    def __init__(self, group: GroupWriter) -> None:
        self.group = group
        self.holding = False

    def session(self) -> AsyncSession:
        """The unit's session: its statements go to the open batch's connection, inside a savepoint."""
        s = AsyncSession(
            sync_session_class=_UnitSession, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        s.sync_session.info[_TURN] = self
        return s

    def bind(self) -> Engine | Connection:
        if not self.holding:
            if not in_greenlet():
                return self.group.db.engine.sync_engine  # a question about the dialect, not a statement
            await_(self.group.acquire(self))  # used again after its commit: queue again
        conn = self.group.connection().sync_connection
        if conn is None:
            raise RuntimeError("the batch's connection is closed")
        return conn

    async def hold(self) -> None:
        """Hold the writer (queue for it if this unit does not hold it yet)."""
        if not self.holding:
            await self.group.acquire(self)

    def audit_head(self) -> Checkpoint | None:
        """The audit head the open batch's earlier units left (None: none chained yet; read the row). Only
        while this unit holds the writer: the head is the batch's, and no other writer can move it meanwhile
        (the batch holds SQLite's write lock)."""
        if not self.holding:
            raise RuntimeError("only the holder of the writer knows the batch's audit head")
        return self.group.batch_audit_head()

    async def committed(
        self, head: Checkpoint | None, touched: Sequence[int], audit_rows: Sequence[ChainedRow] = ()
    ) -> None:
        """The unit's savepoint is released: hand the writer on, with the audit entries it chained (``head``
        the chain's head after them) for the batch to write, and return once the batch has committed."""
        if not self.holding:  # nothing ran since the last commit: nothing to wait for
            if audit_rows:
                raise RuntimeError("audit entries are chained by the holder of the writer")
            self.group.db.notifier.publish(touched)
            return
        answer = asyncio.get_running_loop().create_future()
        self.group.release(self, _Share(answer, head, touched, audit_rows))
        await answer


class _UnitSession(Session):
    def get_bind(self, mapper: Any = None, **kw: Any) -> Engine | Connection:
        turn: Turn | None = self.info.get(_TURN)
        if turn is None:
            return super().get_bind(mapper, **kw)
        return turn.bind()


class GroupWriter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._holder: Turn | None = None
        self._waiting: deque[tuple[Turn, asyncio.Future[None]]] = deque()
        self._batch: _Batch | None = None
        self._ending: asyncio.Task[None] | None = None  # the COMMIT (or ROLLBACK) of the last batch

    @property
    def waiting(self) -> int:
        """Units of work queued for the writer."""
        return sum(1 for _, granted in self._waiting if not granted.done())

    def batch_audit_head(self) -> Checkpoint | None:
        return None if self._batch is None else self._batch.audit_head

    def connection(self) -> AsyncConnection:
        if self._batch is None:
            raise RuntimeError("no batch is open: only the holder of the writer runs statements")
        return self._batch.conn

    async def acquire(self, turn: Turn) -> None:
        """Wait for the writer (``StoreBusy`` after the busy timeout), then open a batch if none is."""
        queued = time.perf_counter()
        if self._holder is None and self._ending is None and not self._waiting:
            self._holder = turn
        else:
            granted = asyncio.get_running_loop().create_future()
            self._waiting.append((turn, granted))
            try:
                async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                    await granted
            except TimeoutError:
                self._give_up(turn, granted)
                raise StoreBusy("the database stayed busy with other writes; try again") from None
            except BaseException:
                self._give_up(turn, granted)
                raise
        metrics.STORE_WRITER_WAIT_SECONDS.observe(time.perf_counter() - queued)
        turn.holding = True
        if self._batch is None:
            try:
                self._batch = await self._begin()
            except BaseException:
                self.release(turn, None)
                raise

    def release(self, turn: Turn, share: _Share | None) -> asyncio.Task[None] | None:
        """The holder hands the writer on, with its committed ``share`` of the batch (None: nothing of it stays).

        If that ends a batch in which no unit committed: its ROLLBACK, for the caller to await (nothing
        of the database is left in flight once the last unit of work has left)."""
        if self._holder is not turn:
            raise RuntimeError("only the holder of the writer can hand it on")
        turn.holding = False
        self._holder = None
        batch = self._batch
        if batch is None:
            self._grant_next()
            return None
        if share is not None:
            batch.add(share)
        if batch.broken is None and not batch.full() and self._anyone_waiting():
            self._grant_next()
            return None
        self._batch = None
        self._ending = asyncio.create_task(self._end(batch), name="store-group-commit")
        return None if batch.shares else self._ending

    def break_batch(self, exc: BaseException) -> None:
        """The holder's savepoint could not be rolled back: the batch is rolled back whole, every unit told."""
        if self._batch is not None and self._batch.broken is None:
            self._batch.broken = exc

    async def _begin(self) -> _Batch:
        # the other processes' group writers first (``writerlock``): then BEGIN IMMEDIATE finds SQLite's lock free
        await self.db.writer_lock.acquire(SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            conn = await self.db.engine.connect()
        except BaseException:
            self.db.writer_lock.release()
            raise
        try:
            await conn.begin()  # BEGIN IMMEDIATE (db.py): the write lock, taken once for the batch
            raw = await conn.get_raw_connection()
            if isinstance(raw.dbapi_connection, OneTripConnection):
                # the lock taken now, on aiosqlite's thread; the batch's statements then run on the event loop
                await raw.dbapi_connection.run_inline()
        except BaseException:
            await conn.close()
            self.db.writer_lock.release()
            raise
        return _Batch(conn)

    async def _end(self, batch: _Batch) -> None:
        error: BaseException | None = batch.broken
        try:
            if batch.shares and error is None:
                if batch.audit_head is not None:
                    await write_chained(batch.conn, batch.audit_head, batch.audit_rows)
                await batch.conn.commit()
            else:
                await batch.conn.rollback()
        except BaseException as exc:  # noqa: BLE001 - every unit of the batch is answered with it
            error = exc
            # SQLite leaves a transaction whose COMMIT failed open: the connection goes, never back to the pool
            await batch.conn.invalidate()
        finally:
            try:
                await batch.conn.close()
            finally:
                self.db.writer_lock.release()
                self._answer(batch, error)
                self._ending = None
                self._grant_next()

    def _answer(self, batch: _Batch, error: BaseException | None) -> None:
        if error is None and batch.shares:
            metrics.STORE_GROUP_COMMIT_UNITS.labels("sqlite").observe(len(batch.shares))
            heads = [s.head for s in batch.shares if s.head is not None]
            if heads and self.db.audit is not None:
                self.db.audit.committed(max(heads, key=lambda h: h.seq))  # anchored only once committed
            for share in batch.shares:  # one publish per unit: the IMAP cache counts them (``mailboxcache``)
                self.db.notifier.publish(share.touched)
        for share in batch.shares:
            if share.answer.done():  # its caller was cancelled meanwhile
                continue
            if error is None:
                share.answer.set_result(None)
            else:
                share.answer.set_exception(error)

    def _anyone_waiting(self) -> bool:
        while self._waiting and self._waiting[0][1].done():
            self._waiting.popleft()  # gave up
        return bool(self._waiting)

    def _grant_next(self) -> None:
        if self._holder is not None or self._ending is not None:
            return
        while self._waiting:
            turn, granted = self._waiting.popleft()
            if not granted.done():
                self._holder = turn
                granted.set_result(None)
                return

    def _give_up(self, turn: Turn, granted: asyncio.Future[None]) -> None:
        """A waiter leaves (timeout, cancellation): out of the queue, or, if it got the writer meanwhile, pass it on."""
        if granted.done() and not granted.cancelled():
            turn.holding = True
            self.release(turn, None)
            return
        granted.cancel()
        try:
            self._waiting.remove((turn, granted))
        except ValueError:
            pass


#: one group writer per SQLite database of this process
_GROUPS: weakref.WeakKeyDictionary[Database, GroupWriter] = weakref.WeakKeyDictionary()


def group_of(db: Database) -> GroupWriter:
    group = _GROUPS.get(db)
    if group is None:
        group = _GROUPS[db] = GroupWriter(db)
    return group
