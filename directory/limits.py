"""Login limits that hold under parallel attack, and caps on concurrent connections.

``LoginLimits`` is what every ``Authenticator.authenticate_*`` path goes through::

    attempt = await limits.guard(name, peer=peer, protocol="imap")
    if attempt.refusal is not None:          # locked out: refused at once, unchecked
        return AuthResult(None, refusal=attempt.refusal)
    ok = ...check the credential...
    await limits.record(attempt, ok)

Invariants:
- Failures are counted per source address (``peer:<ip>``) and per account name
  (``acct:<digest>``). On PostgreSQL they are rows of ``login_counters``, so every
  process on the database shares them: the guards and records waiting in a
  process run in batches, one transaction each, that lock their rows
  (``FOR UPDATE``, in key order) and apply each step in the order it came. On SQLite (one process serves the file) the
  same counters live in this process's memory, shared by every ``LoginLimits``
  on that database: a transaction per attempt on the one SQLite writer would
  queue a legitimate login behind an attack's. Either way the doors of a
  process (IMAP, SMTP, web) share them, and ``guard`` counts the attempt
  *before* it is checked: parallel connections cannot get more tries in flight
  than the threshold allows; a success gives its count back in ``record``.
- An attempt in flight is not a failure. Only failures that happened refuse a
  login; past the threshold, attempts still in flight make the next one wait
  for a result (``IN_FLIGHT_WAIT`` at most), not fail: six mail clients behind
  one address logging in at once all get in, and a guesser still has no more
  tries in flight than the threshold. The process knows its own attempts in
  flight; on PostgreSQL, another process's in flight count as failures until
  they end.
- Lockouts and failing addresses seen are also remembered by the process, so
  that an attempt it already knows to refuse costs no transaction.
- Past ``limits.login_failures_per_source`` failures an address is refused, for
  every account, for a window of ``lockout_base`` seconds, doubled at each
  further lockout within a day, up to ``lockout_max``. Past
  ``login_failures_per_account`` failures on an account name, the addresses
  that have failed lately are refused for that name; an address with no recent
  failure still gets its try, so an attack from elsewhere never locks the owner
  out (and a distributed guess gets one try per address per window). A success
  resets the account's count; it never resets an address's, or an attacker
  holding one account could clear its own count between guesses.
- Refused attempts are answered at once, never slept on: ``Attempt.refusal`` is
  the sentence for the client (IMAP ``NO [UNAVAILABLE]``, SMTP ``454 4.7.0``).
  They are counted (``masante_login_refused``) and not checked; each lockout
  begun is audited (``login.lockout``; the audit store escapes the names) and counted
  (``masante_login_lockouts``).
- Every window reads the context's clock (``ctx.clock``): tests move it with
  ``FakeClock.advance``. Failures are forgotten after ``login_failure_window``
  seconds of quiet, and rows idle for a day are pruned.
- The account name is stored as a digest: no client text reaches the table.

``ConnectionCaps`` bounds the connections one process holds open: per source
address (all doors together, ``limits.connections_per_source``), of which not yet
logged in (``unauthenticated_per_source``; the MX door counts in the first cap
only), and per account (``connections_per_account``, checked at login). A refusal
is a sentence for the door to answer (``* BYE [UNAVAILABLE]``, ``421 4.7.0``) and
a ``limits.connection-refused`` log line with the door, the cap and the address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailserver import metrics
from mailserver.config import LimitsSection
from mailserver.context import Context
from mailserver.store.models import Account, LoginCounter
from mailserver.store.repositories.limits import give_back
from mailserver.text import escape

if TYPE_CHECKING:
    from mailserver.store.db import Database
    from mailserver.store.uow import UnitOfWork

log = logging.getLogger("masante.limits")

#: lockouts are remembered (and lengthen the next one) for this long after the last
LOCKOUT_MEMORY = dt.timedelta(days=1)
#: a ``guard`` in this many prunes the counters idle for ``LOCKOUT_MEMORY``
PRUNE_EVERY = 500
#: lockouts and failing addresses a process remembers (to refuse without a transaction), at most
MAX_REMEMBERED = 100_000
#: seconds an attempt waits for the attempts in flight before it (past the threshold) to end, at most
IN_FLIGHT_WAIT = 30.0


def peer_key(peer: str) -> str:
    return f"peer:{peer[:64]}"


def account_key(name: str) -> str:
    return "acct:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _minutes(seconds: float) -> str:
    n = max(1, int((seconds + 59) // 60))
    return "1 minute" if n == 1 else f"{n} minutes"


@dataclass
class MemoryCounter:
    """A ``login_counters`` row kept in this process (SQLite: one process serves a database)."""

    failures: int = 0
    last_failure_at: dt.datetime | None = None
    locked_until: dt.datetime | None = None
    lockouts: int = 0
    last_lockout_at: dt.datetime | None = None


#: a counter, in the store (PostgreSQL) or in memory (SQLite)
_Row = LoginCounter | MemoryCounter
#: the in-memory counters of each SQLite database this process serves, by URL (every ``LoginLimits`` on it
#: shares them), least recently used first
_MEMORY: dict[str, OrderedDict[str, MemoryCounter]] = {}
_MEMORY_LOCK = threading.Lock()
#: per database object (a context: like a process of its own): the lockouts and failing addresses learnt
#: (``LoginLimits._known_refusal``)
_LEARNT: weakref.WeakKeyDictionary[Database, tuple[OrderedDict[str, dt.datetime], OrderedDict[str, dt.datetime]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class Attempt:
    """One login attempt between ``guard`` and ``record``."""

    name: str | None  # the canonical account name tried (None: not known before the check, e.g. a token)
    peer: str
    protocol: str
    refusal: str | None = None  # set: refused at once, do not check, do not ``record``
    scope: str | None = None  # what refused it: "source" or "account"
    keys: tuple[str, ...] = ()  # the counters this attempt was counted in
    recorded: bool = False
    busy: bool = False  # not refused, not counted: attempts in flight fill the count, wait for one to end
    #: ends this attempt's time in flight: at ``record``, or when an attempt never recorded (its task cancelled
    #: by a client gone mid-login) is dropped; its count stays a failure, as a guess would
    end_flight: Callable[[], object] | None = None


@dataclass(eq=False)
class _Step:
    """A guard or a record waiting for the next batch of counter steps (PostgreSQL: ``LoginLimits._in_batch``)."""

    attempt: Attempt
    keys: tuple[str, ...]
    apply: Callable[[UnitOfWork, Mapping[str, _Row], dt.datetime], None]  # under the rows' lock, in the batch
    guard: bool = False  # its keys' rows are made where missing
    success: bool = False  # a record of a success: its count given back, nothing else
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class LoginLimits:
    """Failure counts and lockouts in the store (see the module notes); one per process, shared by every door."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._guards = 0
        # what this process learnt from the store, so that an attempt it already knows to refuse costs no
        # transaction: lockouts (key -> until) and addresses that failed (peer key -> when); shared by every
        # LoginLimits of the process on this database, so that ``reset`` from any of them clears it
        self._locked, self._dirty = _LEARNT.setdefault(ctx.db, (OrderedDict(), OrderedDict()))
        self._in_flight: dict[str, int] = {}  # key -> attempts of this process counted and not recorded yet
        self._waiting: deque[asyncio.Future[None]] = deque()  # attempts waiting for one in flight to end, in order
        self._pending: list[_Step] = []  # counter steps for the next batch (PostgreSQL)
        self._batches: asyncio.Task[None] | None = None  # the task running them, while there are any

    @staticmethod
    def _remember(table: OrderedDict[str, dt.datetime], key: str, when: dt.datetime) -> None:
        table[key] = when
        table.move_to_end(key)
        while len(table) > MAX_REMEMBERED:
            table.popitem(last=False)

    def _known_refusal(self, attempt: Attempt, pk: str, ak: str | None, now: dt.datetime) -> bool:
        """Refuse from this process's memory alone when it saw enough in the store (a lockout still running, and
        for an account, a failure of this address within the window)."""
        until = self._locked.get(pk)
        if until is not None and until > now:
            attempt.scope = "source"
            attempt.refusal = (
                f"Too many failed logins from your address: try again in {_minutes((until - now).total_seconds())}"
            )
            return True
        until = self._locked.get(ak) if ak is not None else None
        failed = self._dirty.get(pk)
        window = dt.timedelta(seconds=self._cfg.login_failure_window)
        if until is not None and until > now and failed is not None and now - failed <= window:
            attempt.scope = "account"
            attempt.refusal = (
                "Too many failed logins on this account from your address: "
                f"try again in {_minutes((until - now).total_seconds())}"
            )
            return True
        return False

    @property
    def _cfg(self) -> LimitsSection:
        return self.ctx.config.limits

    def _expire(self, row: _Row, now: dt.datetime) -> None:
        """Bring a counter to ``now``: an ended lockout or a quiet window starts again from zero."""
        if row.locked_until is not None and row.locked_until <= now:
            row.locked_until, row.failures = None, 0
        elif (
            row.locked_until is None
            and row.last_failure_at is not None
            and now - row.last_failure_at > dt.timedelta(seconds=self._cfg.login_failure_window)
        ):
            row.failures = 0
        if row.last_lockout_at is not None and now - row.last_lockout_at > LOCKOUT_MEMORY:
            row.lockouts = 0

    def _wait(self, row: _Row, now: dt.datetime) -> float:
        if row.locked_until is not None:
            return (row.locked_until - now).total_seconds()
        return float(self._cfg.lockout_base)  # attempts in flight fill the count: about one window

    def _memory_rows(self, keys: Sequence[str]) -> dict[str, _Row]:
        table = _MEMORY.setdefault(self.ctx.db.url, OrderedDict())
        rows: dict[str, _Row] = {}
        for key in keys:
            row = table.get(key)
            if row is None:
                row = table[key] = MemoryCounter()
            table.move_to_end(key)
            rows[key] = row
        while len(table) > MAX_REMEMBERED:
            table.popitem(last=False)
        return rows

    async def guard(self, name: str | None, *, peer: str, protocol: str) -> Attempt:
        """Count an attempt before it is checked, or refuse it at once (``Attempt.refusal``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IN_FLIGHT_WAIT
        first = False  # a waiter woken and still not let in keeps its place at the head of the queue
        while True:
            attempt = await self._guard_once(name, peer=peer, protocol=protocol)
            if not attempt.busy:
                if first:
                    self._wake_next()  # settled either way: the next waiter may be let in (or refused) too
                return attempt
            turn: asyncio.Future[None] = loop.create_future()
            if first:
                self._waiting.appendleft(turn)
            else:
                self._waiting.append(turn)
            try:
                await asyncio.wait_for(turn, deadline - loop.time())
            except TimeoutError:
                attempt.busy = False
                attempt.refusal = "Too many logins at once from your address: try again in 1 minute"
                self._wake_next()
                return self._refused(attempt)
            finally:
                if turn in self._waiting:
                    self._waiting.remove(turn)
            first = True

    async def _guard_once(self, name: str | None, *, peer: str, protocol: str) -> Attempt:
        attempt = Attempt(name, peer, protocol)
        pk = peer_key(peer)
        ak = account_key(name) if name is not None else None
        keys = [pk] if ak is None else [pk, ak]
        now = self.ctx.clock()
        if self._known_refusal(attempt, pk, ak, now):
            return self._refused(attempt)
        if not self.ctx.db.is_postgresql:
            with _MEMORY_LOCK:
                self._decide(attempt, self._memory_rows(keys), pk, ak, now)
                self._take_off(attempt)
        else:

            def decide(uow: UnitOfWork, rows: Mapping[str, _Row], now: dt.datetime) -> None:
                self._decide(attempt, {key: rows[key] for key in keys}, pk, ak, now)
                self._take_off(attempt)  # now, not at COMMIT: the next attempt of the batch counts it in flight

            await self._in_batch(_Step(attempt, tuple(keys), decide, guard=True))
        return self._refused(attempt) if attempt.refusal is not None else attempt

    def _take_off(self, attempt: Attempt) -> None:
        """An attempt counted (``_decide`` gave it keys) is in flight until ``record`` (or until it is dropped)."""
        if not attempt.keys:
            return
        for key in attempt.keys:
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        attempt.end_flight = weakref.finalize(attempt, self._land, attempt.keys)

    async def _in_batch(self, step: _Step) -> None:
        """Run ``step`` in the next batch of this process's counter steps (PostgreSQL), returned once committed.

        A batch is one transaction: the counters of all its steps locked once (in key order), each step applied
        in the order it came, one COMMIT. A burst of logins from one address (a hospital's, at 8 am) thus waits
        for a few transactions on its address's row instead of queueing for it one transaction each, each
        holding a pooled connection while it waits. The batch runs in a task of its own: a caller gone (a client
        that hung up) does not cut it short for the others."""
        loop = asyncio.get_running_loop()
        self._pending.append(step)
        if self._batches is None:
            self._batches = loop.create_task(self._run_batches())
        await asyncio.shield(step.done)

    async def _run_batches(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._apply(batch)
                except BaseException as exc:
                    for step in batch:
                        self._ended_in_flight(step.attempt)  # a guard counted in a batch that did not commit
                        if not step.done.done():
                            step.done.set_exception(exc)
                            step.done.exception()  # retrieved, even when its caller has gone
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for step in batch:
                        if not step.done.done():
                            step.done.set_result(None)
        finally:
            self._batches = None

    async def _apply(self, batch: list[_Step]) -> None:
        if all(step.success for step in batch):
            # successes only (a client logging in alone, most often): their counts given back in one statement,
            # no transaction of four round trips; what ``_settle`` does for a success, to the same next decision
            counts: dict[str, tuple[int, bool]] = {}
            for step in batch:
                pk = peer_key(step.attempt.peer)
                for key in step.keys:
                    n, _ = counts.get(key, (0, False))
                    counts[key] = (n + 1, key != pk)
            await give_back(self.ctx.db.engine, [(key, n, zero) for key, (n, zero) in counts.items()])
            for step in batch:
                self._ended_in_flight(step.attempt)
            return
        now = self.ctx.clock()
        guards = sum(step.guard for step in batch)
        async with self.ctx.uow() as uow:
            rows = await uow.login_counters.lock(
                (key for step in batch for key in step.keys),
                create=(key for step in batch if step.guard for key in step.keys),
            )
            for step in batch:
                step.apply(uow, rows, now)
            if self._guards // PRUNE_EVERY != (self._guards + guards) // PRUNE_EVERY:
                await uow.login_counters.prune(now - LOCKOUT_MEMORY)
            self._guards += guards
            await uow.commit()

    @staticmethod
    def _ended_in_flight(attempt: Attempt) -> None:
        if attempt.end_flight is not None:
            attempt.end_flight()  # once: a finalizer runs at most one time

    def _land(self, keys: tuple[str, ...]) -> None:
        for key in keys:
            n = self._in_flight.get(key, 0) - 1
            if n > 0:
                self._in_flight[key] = n
            else:
                self._in_flight.pop(key, None)
        self._wake_next()

    def _wake_next(self) -> None:
        """One attempt ended, or a waiter was settled: the next waiter tries again (one wake-up each, in order)."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return

    def _decide(self, attempt: Attempt, rows: Mapping[str, _Row], pk: str, ak: str | None, now: dt.datetime) -> None:
        cfg = self._cfg
        source = rows[pk]
        account = rows[ak] if ak is not None else None
        for key, row in rows.items():
            self._expire(row, now)
            if row.locked_until is not None:
                self._remember(self._locked, key, row.locked_until)
        # what failed, apart from this process's attempts still in flight (counted in ``failures`` at their start)
        source_failed = max(0, source.failures - self._in_flight.get(pk, 0))
        clean = source_failed == 0 and source.locked_until is None
        if not clean:
            self._remember(self._dirty, pk, source.last_failure_at or now)
        account_failed = max(0, account.failures - self._in_flight.get(ak, 0)) if account is not None and ak else 0
        if source.locked_until is not None or source_failed >= cfg.login_failures_per_source:
            attempt.scope = "source"
            attempt.refusal = (
                f"Too many failed logins from your address: try again in {_minutes(self._wait(source, now))}"
            )
        elif (
            account is not None
            and not clean
            and (account.locked_until is not None or account_failed >= cfg.login_failures_per_account)
        ):
            attempt.scope = "account"
            attempt.refusal = (
                "Too many failed logins on this account from your address: "
                f"try again in {_minutes(self._wait(account, now))}"
            )
        elif source.failures >= cfg.login_failures_per_source or (
            account is not None and not clean and account.failures >= cfg.login_failures_per_account
        ):
            attempt.busy = True  # the count is full of attempts in flight: wait for one to end
            attempt.scope = "source" if source.failures >= cfg.login_failures_per_source else "account"
        else:
            for row in rows.values():
                row.failures += 1
                row.last_failure_at = now
            attempt.keys = tuple(rows)

    @staticmethod
    def _refused(attempt: Attempt) -> Attempt:
        attempt.recorded = True
        metrics.LOGIN_REFUSED.labels(attempt.protocol, attempt.scope or "source").inc()
        log.info(
            "auth.refused",
            extra={"fields": {"protocol": attempt.protocol, "peer": escape(attempt.peer), "scope": attempt.scope}},
        )
        return attempt

    async def record(self, attempt: Attempt, ok: bool, *, account: Account | None = None) -> None:
        """The end of a guarded attempt: a success gives its count back, a failure may begin a lockout (audited,
        in the transaction that begins it). Called once the attempt's own unit of work has committed: never
        inside one, which would hold its pooled connection while this waits for the counters."""
        if attempt.recorded or not attempt.keys:
            return
        attempt.recorded = True
        if not ok:
            self._remember(self._dirty, peer_key(attempt.peer), self.ctx.clock())
        if not self.ctx.db.is_postgresql:
            with _MEMORY_LOCK:
                lockouts = self._settle(attempt, ok, self._memory_rows(attempt.keys))
                self._ended_in_flight(attempt)
            if lockouts:
                async with self.ctx.uow() as uow:
                    for scope, row, seconds in lockouts:
                        self._audit_lockout(uow, attempt, scope, row, seconds, account)
                    await uow.commit()
            return

        def settle(uow: UnitOfWork, rows: Mapping[str, _Row], now: dt.datetime) -> None:
            # the guard made these rows and counted the attempt in them: a row gone since (an administrator's
            # reset) has nothing to give back nor to lock out, so none is made again
            mine = {key: rows[key] for key in attempt.keys if key in rows}
            for scope, row, seconds in self._settle(attempt, ok, mine):
                self._audit_lockout(uow, attempt, scope, row, seconds, account)
            self._ended_in_flight(attempt)  # a waiting attempt of the batch reads the counters as settled

        await self._in_batch(_Step(attempt, attempt.keys, settle, success=ok))

    def _settle(self, attempt: Attempt, ok: bool, rows: Mapping[str, _Row]) -> list[tuple[str, _Row, int]]:
        """Apply the outcome to the counters; the lockouts it begins (scope, counter, seconds)."""
        cfg = self._cfg
        now = self.ctx.clock()
        pk = peer_key(attempt.peer)
        begun: list[tuple[str, _Row, int]] = []
        for key, row in rows.items():
            self._expire(row, now)
            if ok:
                # the attempt was counted as a failure when it started
                row.failures = max(0, row.failures - 1) if key == pk else 0
                continue
            threshold = cfg.login_failures_per_source if key == pk else cfg.login_failures_per_account
            if row.locked_until is None and row.failures >= threshold:
                row.lockouts += 1
                seconds = min(cfg.lockout_max, cfg.lockout_base * 2 ** (row.lockouts - 1))
                row.locked_until = now + dt.timedelta(seconds=seconds)
                row.last_lockout_at = now
                self._remember(self._locked, key, row.locked_until)
                begun.append(("source" if key == pk else "account", row, seconds))
        return begun

    def _audit_lockout(
        self,
        uow: UnitOfWork,
        attempt: Attempt,
        scope: str,
        row: _Row,
        seconds: int,
        account: Account | None,
    ) -> None:
        # the audit store escapes client text on write (``AuditRepository``): given raw here, escaped once
        peer, name = attempt.peer, attempt.name
        if scope == "source":
            actor, object_id = f"peer:{peer}", f"peer:{peer}"
        else:
            actor = name or f"peer:{peer}"
            object_id = account.owner_id if account is not None else f"address:{name}"
        detail = (
            f"{attempt.protocol} from {peer}; {scope}; {row.failures} failures; "
            f"locked {seconds} s (lockout {row.lockouts})"
        )
        uow.audit(actor[:320], "login.lockout", object_id[:512], "locked", detail, at=self.ctx.clock())
        metrics.LOGIN_LOCKOUTS.labels(scope).inc()
        log.info("auth.lockout", extra={"fields": {"scope": scope, "peer": escape(peer), "seconds": seconds}})

    async def reset(self) -> None:
        """Forget every count and lockout (an administrator's reset; tests between two cases). Other processes
        on the same PostgreSQL keep what they learnt until its window ends."""
        self._locked.clear()
        self._dirty.clear()
        with _MEMORY_LOCK:
            _MEMORY.pop(self.ctx.db.url, None)
        async with self.ctx.uow() as uow:
            await uow.login_counters.clear()
            await uow.commit()


# --- connections ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Lease:
    """One open connection, held from accept to close (``ConnectionCaps.release``)."""

    door: str
    peer: str
    authenticated: Callable[[], bool]
    account_id: int | None = None
    released: bool = field(default=False)


class ConnectionCaps:
    """Open connections per source address and per account, in this process (see the module notes)."""

    def __init__(self, *, per_source: int, unauthenticated_per_source: int, per_account: int) -> None:
        self.per_source = per_source
        self.unauthenticated_per_source = unauthenticated_per_source
        self.per_account = per_account
        self._by_peer: dict[str, set[Lease]] = {}
        self._by_account: dict[int, set[Lease]] = {}

    @classmethod
    def for_context(cls, ctx: Context) -> ConnectionCaps:
        cfg = ctx.config.limits
        return cls(
            per_source=cfg.connections_per_source,
            unauthenticated_per_source=cfg.unauthenticated_per_source,
            per_account=cfg.connections_per_account,
        )

    def open(
        self, door: str, peer: str, authenticated: Callable[[], bool], *, counts_unauthenticated: bool = True
    ) -> Lease | str:
        """A lease for a new connection, or the sentence refusing it (logged and counted here)."""
        held = self._by_peer.get(peer, set())
        cap = None
        if len(held) >= self.per_source:
            cap, limit = "source", self.per_source
        elif counts_unauthenticated and (
            sum(1 for lease in held if lease.account_id is None and not lease.authenticated())
            >= self.unauthenticated_per_source
        ):
            cap, limit = "unauthenticated", self.unauthenticated_per_source
        if cap is not None:
            self._refused(door, peer, cap)
            what = "connections" if cap == "source" else "connections not logged in"
            return f"Too many {what} from your address ({limit}): close one and try again later"
        lease = Lease(door, peer, authenticated if counts_unauthenticated else (lambda: True))
        self._by_peer.setdefault(peer, set()).add(lease)
        return lease

    def login(self, lease: Lease, account_id: int) -> str | None:
        """Attach a logged-in account to ``lease``; the sentence refusing it if the account is at its cap."""
        held = self._by_account.get(account_id, set())
        if lease not in held and len(held) >= self.per_account:
            self._refused(lease.door, lease.peer, "account")
            return f"Too many open connections to this account ({self.per_account}): close one and try again"
        lease.account_id = account_id
        self._by_account.setdefault(account_id, set()).add(lease)
        return None

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        peers = self._by_peer.get(lease.peer)
        if peers is not None:
            peers.discard(lease)
            if not peers:
                del self._by_peer[lease.peer]
        if lease.account_id is not None:
            accounts = self._by_account.get(lease.account_id)
            if accounts is not None:
                accounts.discard(lease)
                if not accounts:
                    del self._by_account[lease.account_id]

    def held(self, peer: str) -> int:
        return len(self._by_peer.get(peer, ()))

    @staticmethod
    def _refused(door: str, peer: str, cap: str) -> None:
        metrics.CONNECTIONS_REFUSED.labels(door, cap).inc()
        log.warning("limits.connection-refused", extra={"fields": {"door": door, "cap": cap, "peer": escape(peer)}})
