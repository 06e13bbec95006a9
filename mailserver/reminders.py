"""The reminder scheduler: a ``Service`` inside the server that delivers each agenda reminder to INBOX when due.

Pending reminders live in the database (``agenda_events.remind_at`` set,
``reminded_at`` NULL; ``mailserver.agenda`` computes them: the event's VALARM
trigger, or 24 hours before its start). The scheduler looks at ``ctx.clock()``
every ``POLL`` seconds (and when woken), so a test moves a ``FakeClock`` and
calls ``settle()`` instead of sleeping.

Invariants:
- Each reminder is sent once: the reminder message is delivered to INBOX and
  the row claimed (``reminded_at`` set only if still NULL) in one unit of work;
  a second scheduler (another process, or this one after a restart) finds it
  claimed and sends nothing. Nothing is sent twice, nothing is lost: a crash
  before the commit leaves it pending.
- INBOX is locked before the index row, as in delivery, so the two never deadlock.
- A reminder whose event has started, was cancelled, whose message the
  patient deleted, or whose account is no longer active is claimed without a message (``agenda.reminder`` audited
  with the reason).
- No event content in logs or audit: ids only.
"""

from __future__ import annotations

import logging

from mailserver.agenda import Unreadable, event_of, reminder_message, start_of, status_of
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.periodic import PeriodicService
from mailserver.store.models import AccountStatus
from mailserver.store.repositories.mail import INBOX

log = logging.getLogger("masante.reminders")

#: seconds between two looks at the clock when nothing wakes the scheduler
POLL = 30.0


class ReminderScheduler(PeriodicService):
    """A ``Service`` (``mailserver.endpoints``) with no endpoint: a task sending the reminders that are due."""

    name = "reminders"

    def __init__(self, ctx: Context, *, poll: float = POLL) -> None:
        super().__init__(poll=poll, log=log)
        self.ctx = ctx

    async def run_once(self) -> int:
        """Send every reminder due now; how many messages were delivered."""
        now = self.ctx.clock()
        async with self.ctx.uow(readonly=True) as uow:
            due = await uow.agenda.due(now)
        sent = 0
        for event_id in due:
            sent += await self._send(event_id)
        return sent

    async def _send(self, event_id: int) -> int:
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            row = await uow.agenda.get_by_id(event_id)
            if row is None or row.reminded_at is not None or row.remind_at is None:
                return 0  # claimed (or moved) meanwhile
            account = await uow.accounts.get(row.account_id)
            if account is None or account.wrapped_key is None:
                await uow.agenda.claim_reminder(event_id, now)
                await uow.commit()
                return 0
            event = await event_of(uow, self.ctx.keyring, account, row)
            reason = None
            if account.status is not AccountStatus.ACTIVE:
                reason = "inactive"  # opposed, closed, suspended, disabled: no new mail from us
            elif event is None:
                reason = "event-gone"
            elif status_of(event) == "CANCELLED":
                reason = "cancelled"
            elif (start := start_of(event)) is not None and start <= now:
                reason = "started"
            delivered_uid = None
            raw = b""
            if reason is None and event is not None:
                try:
                    raw = reminder_message(event, to=account.address, hostname=self.ctx.config.server.hostname, now=now)
                except Unreadable:
                    reason = "unreadable"
            if reason is None:
                result = await deliver(
                    uow, self.ctx.keyring, raw, [account], mailbox=INBOX, actor="agenda", source="reminder"
                )
                delivered_uid = result.delivered[0].uid
            if await uow.agenda.claim_reminder(event_id, now) is None:
                await uow.rollback()  # another scheduler sent it first
                return 0
            uow.audit(
                "agenda",
                "agenda.reminder",
                f"account:{account.id}/event:{event_id}",
                "ok" if reason is None else "skipped",
                f"uid:{delivered_uid}" if reason is None else reason,
            )
            await uow.commit()
        log.info(
            "agenda.reminder",
            extra={"fields": {"account": row.account_id, "event": event_id, "sent": reason is None, "reason": reason}},
        )
        return 1 if reason is None else 0
