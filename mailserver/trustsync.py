"""The daily whitelist synchronisation: a ``Service`` inside the server that runs ``trust sync`` when it is due.

With ``[whitelist] url`` set and ``[whitelist] sync_every`` hours above 0 (24 by default), the server
downloads the national list itself, exactly as ``masante-admin trust sync`` does
(``directory.sync.WhitelistSync``: HTTPS against the configured CA, the published checksum, the refusal of
a list that would remove more than ``max_removed_share`` of the trust space, the last good copy kept).

Invariants:
- Due ``sync_every`` hours after the newest import of the trust space (whoever made it: this scheduler, an
  operator's ``trust import`` or ``trust sync``), at once when there was none. Time is ``ctx.clock``: tests
  move a ``FakeClock`` and call ``settle()``, never sleep.
- A sync that fails (the mirror down, a bad checksum, a list cut short) changes nothing, is logged with its
  reason (``trust.sync-failed``) and is tried again ``RETRY`` seconds later (or at the next due time, if
  sooner); it never applies a shrunken list (no ``--force`` here: that stays an operator's decision).
- Two processes may both sync at the due time; the import is idempotent (the second finds nothing to change).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

from directory.errors import DirectoryError
from directory.sync import WhitelistSync
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.endpoints import Endpoint

log = logging.getLogger("masante.trust")

#: seconds between two looks at the clock when nothing wakes the scheduler
POLL = 60.0
#: seconds before a failed sync is tried again
RETRY = 3600.0
ACTOR = "system:trust-sync"


class TrustSyncScheduler:
    """A ``Service`` with no endpoint (``mailserver.endpoints``): the whitelist synchronised when due."""

    name = "trust-sync"

    def __init__(self, ctx: Context, *, poll: float = POLL) -> None:
        self.ctx = ctx
        self.poll = poll
        self.interval = dt.timedelta(hours=ctx.config.whitelist.sync_every)
        self.due: dt.datetime | None = None  # None until the first look at the trust space's history
        self.runs = 0  # syncs attempted (tests and logs)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._requested = 0
        self._settled = 0
        self._cond = asyncio.Condition()

    @staticmethod
    def wanted(ctx: Context) -> bool:
        cfg = ctx.config.whitelist
        return bool(cfg.url) and cfg.sync_every > 0

    async def start(self) -> list[Endpoint]:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="trust-sync")
        return []

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        async with self._cond:
            self._cond.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def settle(self) -> None:
        """Return once a look at the clock that began after this call is done (and its sync, if one was due)."""
        self._requested += 1
        wanted = self._requested
        self._wake.set()
        async with self._cond:
            await self._cond.wait_for(lambda: self._settled >= wanted or self._stopping)

    async def _run(self) -> None:
        while not self._stopping:
            requested = self._requested
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop must survive; the error is logged by type
                log.error("trust.sync-loop-error", extra={"fields": {"error": type(exc).__name__}})
            async with self._cond:
                self._settled = max(self._settled, requested)
                self._cond.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()

    async def run_once(self) -> bool:
        """Sync if due now; True if a sync was attempted."""
        now = self.ctx.clock()
        if self.due is None:
            history = await TrustSpace(self.ctx).history()
            imports = [h.at for h in history if h.kind == "import"]
            self.due = max(imports) + self.interval if imports else now
        if now < self.due:
            return False
        self.runs += 1
        try:
            result = await WhitelistSync(self.ctx).sync(actor=ACTOR)
        except (DirectoryError, OSError) as exc:
            self.due = now + min(self.interval, dt.timedelta(seconds=RETRY))
            reason = "".join(ch if ch.isprintable() else "?" for ch in str(exc))[:300]
            log.warning("trust.sync-failed", extra={"fields": {"reason": reason, "retry_at": self.due.isoformat()}})
            return True
        self.due = now + self.interval
        plan = result.plan
        log.info(
            "trust.synced",
            extra={"fields": {"added": len(plan.added), "removed": len(plan.removed), "next": self.due.isoformat()}},
        )
        return True
