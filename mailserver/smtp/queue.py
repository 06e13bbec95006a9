"""The outbound queue: a worker that delivers queued messages to other operators, and its administration.

Invariants:
- The queue lives in the database: a message queued and committed is delivered,
  retried or bounced even if the server is killed and restarted (a worker's
  claim on a row expires after ``queue.lease`` seconds; a clean stop gives its
  claims back at once).
- Several processes may run workers against one PostgreSQL: rows are claimed
  with ``FOR UPDATE SKIP LOCKED``, so each attempt is made by one worker.
- Retries back off exponentially (``queue.first_retry`` × ``backoff_factor``^n,
  at most ``max_retry_interval``); after ``queue.bounce_after`` (5 days by
  default) the sender gets a "failed" DSN, as after any permanent refusal; a
  "delayed" DSN once after ``delay_warning_after`` if the sender asked
  NOTIFY=DELAY; a "relayed" DSN for NOTIFY=SUCCESS when the peer does not
  report deliveries itself.
- The row's outcome and any DSN are committed together; a delivered or bounced
  row is deleted (its data key with it: the copy is shredded). Audited by id.
- The next hop is the trust space's endpoint for the recipient's domain
  (``mta_host``/``mta_port``); the domain's MX in public DNS only if
  ``queue.mx_lookup`` is on; a domain that left the trust space bounces.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime as dt
import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from crypto.tls import client_context
from directory.trust import TrustSpace
from mailserver import logs, resolver
from mailserver.context import Context
from mailserver.endpoints import Endpoint
from mailserver.smtp import dsn, relay, spool
from mailserver.smtp import replies as R
from mailserver.smtp.bounces import Bouncer
from mailserver.store.models import QueuedMessage, QueueStatus
from mailserver.store.uow import UnitOfWork

log = logging.getLogger("masante.smtp.queue")

#: after an unexpected error in the worker loop, wait this long before looking again
ERROR_PAUSE = 5.0


def retry_delay(attempts: int, *, first: float, factor: float, cap: float) -> float:
    """Seconds before attempt ``attempts + 1`` (``attempts`` >= 1 made so far)."""
    return float(min(cap, first * factor ** max(0, attempts - 1)))


class QueueWorker:
    """A ``Service`` (``mailserver.endpoints``): no endpoint, a task delivering what is due."""

    name = "queue"

    def __init__(self, ctx: Context, bouncer: Bouncer) -> None:
        self.ctx = ctx
        self.bouncer = bouncer
        self.trust = TrustSpace(ctx)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._tls: ssl.SSLContext | None = None
        # settle(): a pass of the loop that starts after a request and finds nothing to do answers it
        self._passes_requested = 0
        self._passes_settled = 0
        self._settled = asyncio.Condition()

    # --- Service --------------------------------------------------------------------------------------------

    async def start(self) -> list[Endpoint]:
        cfg = self.ctx.config
        self._tls = client_context(
            cfg.resolve(cfg.tls.trust_ca),
            cert_file=cfg.resolve(cfg.tls.client_cert),
            key_file=cfg.resolve(cfg.tls.client_key),
        )
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="smtp-queue")
        return []

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        async with self._settled:
            self._settled.notify_all()  # a settle() waiting now returns: nothing more will be attempted
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        claimed = list(self._inflight)
        self._inflight.clear()
        self._task = None
        if claimed:
            with contextlib.suppress(Exception):
                async with self.ctx.uow() as uow:
                    await uow.queue.release(claimed, self.ctx.clock())
                    await uow.commit()

    def wake(self) -> None:
        """New mail was queued: look now rather than at the next poll."""
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------------------

    async def settle(self) -> None:
        """Return once the worker has nothing due and nothing in flight, as of now (tests, benchmarks).

        A pass of the loop that begins after this call and claims nothing while no attempt is in flight
        answers it: whatever was due at the clock's present has been attempted and recorded. What becomes
        due later (the clock moves) is not waited for: with a ``FakeClock``, nothing does until ``advance``.
        """
        self._passes_requested += 1
        wanted = self._passes_requested
        self._wake.set()
        async with self._settled:
            await self._settled.wait_for(lambda: self._passes_settled >= wanted or self._stopping)

    async def _run(self) -> None:
        while not self._stopping:
            requested = self._passes_requested
            try:
                claimed = await self.run_once()
            except Exception as exc:
                log.error("queue.loop-error", extra={"fields": R.error_fields(exc)})
                await asyncio.sleep(ERROR_PAUSE)
            else:
                if claimed == 0 and not self._inflight and requested > self._passes_settled:
                    async with self._settled:
                        self._passes_settled = requested
                        self._settled.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.ctx.config.queue.poll_interval)
            self._wake.clear()

    async def run_once(self) -> int:
        """Claim what is due (up to the free delivery slots) and start an attempt for each."""
        cfg = self.ctx.config.queue
        slots = cfg.concurrency - len(self._inflight)
        if slots <= 0:
            return 0
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            rows = await uow.queue.claim(now, now + dt.timedelta(seconds=cfg.lease), slots)
            await uow.commit()
        for row in rows:
            self._inflight[row.id] = asyncio.create_task(self._attempt(row), name=f"smtp-queue-{row.id[:8]}")
        return len(rows)

    async def drain(self) -> None:
        """Wait for the attempts in flight (tests, benchmarks)."""
        if self._inflight:
            await asyncio.wait(list(self._inflight.values()))

    async def _attempt(self, row: QueuedMessage) -> None:
        logs.message_id.set(row.msg_id or row.id)
        try:
            outcome = await self._deliver(row)
            await self._record(row, outcome)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("queue.attempt-error", extra={"fields": {"queue_id": row.id, **R.error_fields(exc)}})
        finally:
            self._inflight.pop(row.id, None)
            if not self._stopping:
                self._wake.set()  # a slot is free

    async def _deliver(self, row: QueuedMessage) -> relay.Outcome:
        try:
            body = spool.open_body(self.ctx.keyring, row)
        except Exception as exc:
            return relay.permanent("5.3.0", f"the queued copy cannot be opened: {type(exc).__name__}")
        operator = await self.trust.lookup(row.rcpt_domain)
        if operator is None:
            return relay.permanent("5.7.1", f"{row.rcpt_domain} is no longer in the MSSante trust space")
        if not operator.active:
            return relay.temporary("4.7.1", f"the operator of {row.rcpt_domain} is suspended from the trust space")
        port = operator.mta_port or 25
        hops: list[resolver.Hop | None] = [None]  # None: connect to ``host`` by name
        host = operator.mta_host or row.rcpt_domain
        if operator.mta_host is None and self.ctx.config.queue.mx_lookup:
            try:
                hops = list(await self.ctx.resolver.route(row.rcpt_domain))
            except resolver.NoRoute as exc:
                return (relay.permanent if exc.permanent else relay.temporary)(exc.status, exc.text)
        if self._tls is None:
            raise RuntimeError("the queue worker was not started")
        cfg = self.ctx.config.queue
        outcome = relay.temporary("4.4.3", f"no mail exchanger to try for {row.rcpt_domain}")
        for hop in hops:  # RFC 5321 §5.1: on a temporary failure, try the next exchanger
            outcome = await relay.send(
                row,
                body,
                host=hop.name if hop else host,
                port=port,
                helo=self.ctx.config.server.hostname,
                tls_context=self._tls,
                connect_timeout=cfg.connect_timeout,
                command_timeout=cfg.command_timeout,
                address=hop.address if hop else None,
            )
            if outcome.kind is not relay.Kind.TEMPORARY:
                break
        return outcome

    async def _record(self, claimed: QueuedMessage, outcome: relay.Outcome) -> None:
        cfg = self.ctx.config.queue
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            row = await uow.queue.get(claimed.id, for_update=True)
            if row is None or row.status is not QueueStatus.SENDING:
                return  # deleted or given back by an administrator meanwhile
            row.attempts += 1
            row.remote_mta = outcome.remote_mta or row.remote_mta
            row.updated_at = now
            params = spool.rcpt_params_of(row)
            what = f"queue:{row.id}"
            actor = "queue"
            if outcome.kind is relay.Kind.DELIVERED:
                if params.wants("SUCCESS") and not outcome.peer_reports_dsn:
                    await self._dsn(uow, row, dsn.Action.RELAYED, "2.0.0", outcome.diagnostic, now)
                uow.audit(actor, "queue.delivered", what, "ok", f"{row.rcpt_domain} after {row.attempts} attempt(s)")
                await uow.queue.delete(row)
            elif outcome.kind is relay.Kind.PERMANENT or now >= row.expires_at:
                expired = outcome.kind is not relay.Kind.PERMANENT
                status = "5.4.7" if expired else outcome.status
                diagnostic = outcome.diagnostic if not expired else f"gave up: {outcome.diagnostic}"
                if params.wants("FAILURE"):
                    await self._dsn(uow, row, dsn.Action.FAILED, status, diagnostic, now)
                uow.audit(actor, "queue.bounced", what, "fail", f"{row.rcpt_domain}; {status}")
                await uow.queue.delete(row)
            else:
                delay = retry_delay(
                    row.attempts, first=cfg.first_retry, factor=cfg.backoff_factor, cap=cfg.max_retry_interval
                )
                row.status = QueueStatus.QUEUED
                row.locked_until = None
                row.last_error = outcome.diagnostic[:1000]
                row.next_attempt_at = min(now + dt.timedelta(seconds=delay), row.expires_at)
                waited = (now - row.created_at).total_seconds()
                if params.wants("DELAY") and not row.delay_notified and waited >= cfg.delay_warning_after:
                    await self._dsn(uow, row, dsn.Action.DELAYED, outcome.status, outcome.diagnostic, now)
                    row.delay_notified = True
                uow.audit(actor, "queue.deferred", what, "retry", f"{row.rcpt_domain}; {outcome.status}")
            await uow.commit()
        log.info(
            "queue.attempt",
            extra={
                "fields": {
                    "queue_id": claimed.id,
                    "domain": claimed.rcpt_domain,
                    "outcome": outcome.kind.value,
                    "status": outcome.status,
                }
            },
        )

    async def _dsn(
        self, uow: UnitOfWork, row: QueuedMessage, action: dsn.Action, status: str, diagnostic: str, now: dt.datetime
    ) -> None:
        if not row.mail_from:
            return  # never bounce a bounce
        original = spool.open_body(self.ctx.keyring, row)
        how = await self.bouncer.send(
            uow,
            sender=row.mail_from,
            original=original,
            recipients=[
                dsn.RecipientStatus(
                    row.rcpt_to,
                    action,
                    status,
                    diagnostic,
                    row.remote_mta,
                    row.orcpt,
                    now,
                    row.expires_at if action is dsn.Action.DELAYED else None,
                )
            ],
            arrival=row.created_at,
            envid=row.envid,
            ret=row.ret,
        )
        if how == "queued":
            self._wake.set()


# --- administration (masante-admin queue) -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueEntry:
    id: str
    msg_id: str | None
    mail_from: str
    rcpt_to: str
    status: str
    attempts: int
    size: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    expires_at: dt.datetime
    last_error: str | None


def _entry(r: QueuedMessage) -> QueueEntry:
    return QueueEntry(
        r.id,
        r.msg_id,
        r.mail_from,
        r.rcpt_to,
        r.status.value,
        r.attempts,
        r.size,
        r.created_at,
        r.next_attempt_at,
        r.expires_at,
        r.last_error,
    )


class QueueAdmin:
    """What ``masante-admin queue`` does, through the same store as the worker."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def list(self, *, status: QueueStatus | None = None, domain: str | None = None) -> builtins.list[QueueEntry]:
        async with self.ctx.uow(readonly=True) as uow:
            return [_entry(r) for r in await uow.queue.list(status=status, domain=domain)]

    async def _select(self, uow: UnitOfWork, ids: Sequence[str], everything: bool) -> builtins.list[QueuedMessage]:
        if everything:
            return [r for r in await uow.queue.list() if r.status is not QueueStatus.SENDING]
        rows: dict[str, QueuedMessage] = {}
        for prefix in ids:
            found = await uow.queue.by_prefix(prefix.strip())
            if not found:
                raise LookupError(f"no queued message {prefix}")
            rows.update((r.id, r) for r in found)
        return list(rows.values())

    async def retry(self, ids: Sequence[str], *, everything: bool, actor: str) -> int:
        """Make messages due now (the worker picks them up at its next poll)."""
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            rows = await self._select(uow, ids, everything)
            for r in rows:
                if r.status is QueueStatus.SENDING and r.locked_until and r.locked_until > now:
                    continue  # an attempt is under way
                r.status, r.next_attempt_at, r.locked_until, r.updated_at = QueueStatus.QUEUED, now, None, now
                uow.audit(actor, "queue.retry", f"queue:{r.id}", "ok")
            await uow.commit()
            return len(rows)

    async def delete(self, ids: Sequence[str], *, everything: bool, bounce: bool, actor: str) -> int:
        """Remove messages from the queue (their sealed copy with them), telling the sender if ``bounce``."""
        now = self.ctx.clock()
        bouncer = Bouncer(self.ctx)
        async with self.ctx.uow() as uow:
            rows = await self._select(uow, ids, everything)
            for r in rows:
                if bounce and r.mail_from and spool.rcpt_params_of(r).wants("FAILURE"):
                    await bouncer.send(
                        uow,
                        sender=r.mail_from,
                        original=spool.open_body(self.ctx.keyring, r),
                        recipients=[
                            dsn.RecipientStatus(
                                r.rcpt_to,
                                dsn.Action.FAILED,
                                "5.3.0",
                                "deleted from the queue by the administrator",
                                r.remote_mta,
                                r.orcpt,
                                now,
                            )
                        ],
                        arrival=r.created_at,
                        envid=r.envid,
                        ret=r.ret,
                    )
                uow.audit(actor, "queue.delete", f"queue:{r.id}", "ok", "bounced" if bounce else None)
                await uow.queue.delete(r)
            await uow.commit()
            return len(rows)
