"""Sending a delivery status notification to whoever sent the message, in the caller's unit of work.

Invariants:
- A DSN goes to the envelope sender, never to a header address; nothing is
  sent for the null sender (a bounce is never bounced) nor when the sender
  asked NOTIFY=NEVER (the caller checks ``RcptParams.wants``).
- A local sender gets it in their INBOX through ``delivery.deliver`` (the one
  path into a mailbox); a sender at a trust-space operator gets it through the
  outbound queue with ``MAIL FROM:<>``; anyone else gets nothing (logged).
- It is added to the caller's unit of work: it exists if and only if the
  change it reports (a delivery, a bounce) is committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Sequence

from directory.addresses import Address
from directory.errors import InvalidAddress
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.smtp import dsn, spool
from mailserver.store.models import AccountStatus
from mailserver.store.uow import UnitOfWork

log = logging.getLogger("masante.smtp.dsn")


class Bouncer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trust = TrustSpace(ctx)

    @property
    def mailer_daemon(self) -> str:
        return f"MAILER-DAEMON@{self.ctx.config.server.hostname}"

    async def send(
        self,
        uow: UnitOfWork,
        *,
        sender: str,
        original: bytes,
        recipients: Sequence[dsn.RecipientStatus],
        arrival: dt.datetime,
        envid: str | None = None,
        ret: str | None = None,
    ) -> str | None:
        """Add the DSN to ``uow``; returns "local", "queued" or None (nobody to tell)."""
        if not sender or not recipients:
            return None
        try:
            addr = Address.parse(sender)
        except InvalidAddress:
            log.info("dsn.unroutable-sender", extra={"fields": {"reason": "malformed"}})
            return None
        now = self.ctx.clock()
        report = dsn.build(
            reporting_mta=self.ctx.config.server.hostname,
            sender=self.mailer_daemon,
            to=str(addr),
            original=original,
            recipients=recipients,
            arrival=arrival,
            now=now,
            envid=envid,
            ret=ret,
        )
        action = recipients[0].action.value
        if await uow.domains.get(addr.domain) is not None:
            account = await uow.accounts.by_address(str(addr))
            if account is None or account.status is not AccountStatus.ACTIVE or account.wrapped_key is None:
                log.info("dsn.dropped", extra={"fields": {"reason": "local sender gone", "action": action}})
                return None
            await deliver(uow, self.ctx.keyring, report, [account], actor=self.mailer_daemon, source="dsn")
            log.info("dsn.delivered", extra={"fields": {"account": account.owner_id, "action": action}})
            return "local"
        operator = await self.trust.lookup(addr.domain)
        if operator is None:
            log.info("dsn.dropped", extra={"fields": {"reason": "sender outside the trust space", "action": action}})
            return None
        await spool.enqueue(
            uow,
            self.ctx.keyring,
            raw=report,
            mail_from="",
            rcpt=str(addr),
            now=now,
            expires_at=now + dt.timedelta(seconds=self.ctx.config.queue.bounce_after),
            msg_id=str(uuid.uuid4()),
        )
        log.info("dsn.queued", extra={"fields": {"domain": addr.domain, "action": action}})
        return "queued"
