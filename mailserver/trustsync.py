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

import datetime as dt
import logging

from directory.errors import DirectoryError
from directory.sync import WhitelistSync
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.periodic import PeriodicService
from mailserver.text import escape

log = logging.getLogger("masante.trust")

#: seconds between two looks at the clock when nothing wakes the scheduler
POLL = 60.0
#: seconds before a failed sync is tried again
RETRY = 3600.0
ACTOR = "system:trust-sync"


class TrustSyncScheduler(PeriodicService):
    """A ``Service`` with no endpoint (``mailserver.endpoints``): the whitelist synchronised when due."""

    name = "trust-sync"

    def __init__(self, ctx: Context, *, poll: float = POLL) -> None:
        super().__init__(poll=poll, log=log)
        self.ctx = ctx
        self.interval = dt.timedelta(hours=ctx.config.whitelist.sync_every)
        self.due: dt.datetime | None = None  # None until the first look at the trust space's history
        self.runs = 0  # syncs attempted (tests and logs)

    @staticmethod
    def wanted(ctx: Context) -> bool:
        cfg = ctx.config.whitelist
        return bool(cfg.url) and cfg.sync_every > 0

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
            reason = escape(str(exc))[:300]
            log.warning("trust.sync-failed", extra={"fields": {"reason": reason, "retry_at": self.due.isoformat()}})
            return True
        self.due = now + self.interval
        plan = result.plan
        log.info(
            "trust.synced",
            extra={"fields": {"added": len(plan.added), "removed": len(plan.removed), "next": self.due.isoformat()}},
        )
        return True
