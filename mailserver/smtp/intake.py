"""Accepting a message at end of DATA: one unit of work, then the reply.

The path (docs/DESIGN.md "The path of a message"):
0. the message is parsed once (``mailserver.message.parse_message_async``, in a
   worker thread above ``PARSE_IN_THREAD``); past the MIME bounds it is refused
   ``554 5.6.0`` with a sentence (permanent: a retry would meet the same bound).
   Every step below reads and edits that ``ParsedMessage``; none parses again;
1. loops: a message with ``smtp.max_hops`` Received fields or more is refused ``554 5.4.6``;
2. MX only: DKIM verified, ``Authentication-Results`` added, refusal when the
   sender's domain must sign and did not; then ``Admission.check_origin`` on both
   doors: the From believable (``policies.origin``), or ``550 5.7.1``;
3. trace and identity: Message-ID and Date added when missing, our Received on top;
4. ``Admission.check_content`` per recipient (size for patients, attachments...);
5. one unit of work: local recipients through ``delivery.deliver``, which bounds their quotas
   (``quota.admit``, atomic with the rows: no earlier look that a concurrent delivery could outrun): a
   recipient the message does not fit is left out and refused ``552 5.2.2`` (told by a DSN if asked, as a
   recipient refused by content), the others delivered; none left at all: nothing is stored and the answer is
   that ``552 5.2.2``. Then
   ``Admission.after_delivery`` (told of the relayed recipients too); recipients at other operators DKIM-signed and
   queued (one sealed row each); DSNs asked for (NOTIFY=SUCCESS for a local
   delivery, FAILURE for a recipient refused at this stage) added too, and the
   automatic MDN (``mailserver.mdn``) for a patient whose vault cannot integrate
   the message's package (delivered to INBOX unfiled);
6. ``250`` only after the commit; any failure on the way answers ``451 4.3.0``
   and nothing is stored: the client keeps the message and retries.

Invariants: a message is stored once per local recipient (duplicate RCPTs of
one account are one delivery); no body, address list or key is logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from mailserver import agenda, logs, metrics
from mailserver.admission import VAULT_INTEGRATION_FAILED, Admission
from mailserver.context import Context
from mailserver.delivery import deliver, seal
from mailserver.mdn import Notifier
from mailserver.message import MessageError, ParsedMessage, parse_message_async
from mailserver.message.offload import in_thread
from mailserver.smtp import dsn, spool
from mailserver.smtp import message as M
from mailserver.smtp import replies as R
from mailserver.smtp.bounces import Bouncer
from mailserver.smtp.data import Spill
from mailserver.smtp.engine import Recipient, TlsInfo
from mailserver.smtp.params import MailParams
from mailserver.smtp.signing import (
    DkimSigner,
    DkimVerifier,
    authentication_results,
    sender_domain,
    strip_own_results,
)
from mailserver.store.models import Account
from mailserver.store.uow import UnitOfWork
from policies import Decision, Party, Role
from policies import reply as P
from policies.reply import Reply

log = logging.getLogger("masante.smtp.intake")


@dataclass
class Inbound:
    """A message at end of DATA, with everything the session learnt about it."""

    door: str  # "mx" or "submission"
    mail_from: str  # "" is the null reverse-path
    params: MailParams
    recipients: list[Recipient]
    sender_party: Party
    raw: bytes  # empty when the message is in ``spool``
    spool: Spill | None = None  # a large DATA, on disk and encrypted (``smtp.dataspool``): read once, here
    helo: str | None = None
    peer_ip: str | None = None
    tls: TlsInfo | None = None
    account: Account | None = None  # the authenticated sender (submission)


class _Refused(Exception):  # not an error: no local recipient had room, and nothing is stored
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


@dataclass(frozen=True, slots=True)
class Accepted:
    reply: Reply
    msg_id: str | None = None
    delivered: int = 0
    queued: int = 0


class Intake:
    def __init__(
        self,
        ctx: Context,
        admission: Admission,
        *,
        signer: DkimSigner,
        verifier: DkimVerifier,
        bouncer: Bouncer,
        wake_queue: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.admission = admission
        self.signer = signer
        self.verifier = verifier
        self.bouncer = bouncer
        self.wake_queue = wake_queue
        self.notifier = Notifier(ctx)

    @property
    def hostname(self) -> str:
        return self.ctx.config.server.hostname

    def _protocol(self, m: Inbound) -> str:
        base = "UTF8SMTP" if m.params.smtputf8 else "ESMTP"  # RFC 6531 §3.7.3, RFC 3848
        return base + ("S" if m.tls else "") + ("A" if m.account is not None else "")

    async def accept(self, m: Inbound) -> Accepted:
        msg_id = uuid.uuid4().hex
        logs.message_id.set(msg_id)
        now = self.ctx.clock()
        raw, m.raw = m.raw, b""  # from here on the ParsedMessage holds the bytes: each edit lets the older go
        if m.spool is not None:  # a large DATA comes back in memory once, just before it is parsed
            spool, m.spool = m.spool, None
            try:
                raw = await in_thread(spool.read_all)
            finally:
                spool.discard()  # the file goes as soon as the bytes are in memory
        try:
            msg = await parse_message_async(raw)
            del raw
        except MessageError as exc:  # past the MIME bounds: permanent, never a 451 the sender retries for days
            reply = P.MESSAGE_TOO_COMPLEX.with_text(exc.text)
            self._refused("mime-bounds", reply)
            return Accepted(reply)
        hops = msg.count("received")
        if hops >= self.ctx.config.smtp.max_hops:
            self._refused("too-many-hops", R.TOO_MANY_HOPS, hops=hops)
            return Accepted(R.TOO_MANY_HOPS)

        msg = strip_own_results(msg, self.hostname)
        dkim_pass: tuple[str, ...] = ()
        if m.door == "mx":
            verdict = await self.verifier.judge(msg, sender_domain(m.mail_from, msg))
            if verdict.refusal is not None:
                self._refused("dkim", verdict.refusal)
                return Accepted(verdict.refusal)
            msg = msg.prepend(authentication_results(self.hostname, verdict.results))
            dkim_pass = verdict.passed
        # who the message says it is from: aligned with the envelope or DKIM (MX), the account's own (submission)
        origin = await self.admission.check_origin(
            msg,
            door=m.door,
            mail_from=m.mail_from,
            recipients=[r.party for r in m.recipients],
            account=m.account,
            peer_dn=m.tls.peer_dn if m.tls is not None else None,
            dkim_pass=dkim_pass,
        )
        if not origin.allowed:
            self._refused(origin.reason, origin.reply)
            return Accepted(origin.reply)

        msg = M.complete_ids(msg, hostname=self.hostname, now=now)
        trace = M.received(
            helo=m.helo,
            peer_ip=m.peer_ip,
            by=self.hostname,
            protocol=self._protocol(m),
            queue_id=msg_id,
            recipient=m.recipients[0].address if len(m.recipients) == 1 else None,
            tls=m.tls.describe() if m.tls else None,
            when=now,
        )
        msg = msg.prepend(trace)

        decisions = await self.admission.check_content(
            m.sender_party, [r.party for r in m.recipients], msg, return_path=m.mail_from or None
        )
        allowed = [r for r in m.recipients if decisions.get(r.address, Decision.allow()).allowed]
        refused = [r for r in m.recipients if r not in allowed]
        if not allowed:
            reply = decisions[refused[0].address].reply
            self._refused(decisions[refused[0].address].reason, reply)
            return Accepted(reply)

        local: dict[int, tuple[Account, Recipient]] = {}
        remote: dict[str, Recipient] = {}
        for r in allowed:
            if r.account is not None:
                local.setdefault(r.account.id, (r.account, r))
            else:
                remote.setdefault(r.address, r)
        try:
            result = await self._store(
                m, msg, msg_id, now, list(local.values()), list(remote.values()), refused, decisions
            )
        except _Refused as no_room:  # no local recipient had room, and there was nobody else: nothing stored
            self._refused(no_room.decision.reason, no_room.decision.reply)
            return Accepted(no_room.decision.reply)
        except Exception as exc:  # storage, keys, a bug: the client keeps the message and retries
            log.error("smtp.store-failed", extra={"fields": R.error_fields(exc)})
            return Accepted(R.STORAGE_FAILURE)
        if result.queued:
            self.wake_queue()
        log.info(
            "smtp.accepted",
            extra={
                "fields": {
                    "door": m.door,
                    "size": msg.size,
                    "delivered": result.delivered,
                    "queued": result.queued,
                    "refused": len(refused),
                    "sender": m.account.owner_id if m.account else (sender_domain(m.mail_from, msg) or "<>"),
                }
            },
        )
        return result

    async def _store(
        self,
        m: Inbound,
        msg: ParsedMessage,
        msg_id: str,
        now: dt.datetime,
        local: list[tuple[Account, Recipient]],
        remote: list[Recipient],
        refused: list[Recipient],
        decisions: dict[str, Decision],
    ) -> Accepted:
        actor = m.account.address if m.account is not None else (m.mail_from or "MAILER-DAEMON")
        outbound = msg.raw
        if remote and m.account is not None:
            outbound = await self.signer.sign(msg, m.account.address.rpartition("@")[2])
        expires = now + dt.timedelta(seconds=self.ctx.config.queue.bounce_after)
        accounts = [a for a, _ in local]
        unfiled = [a for a, r in local if decisions[r.address].reason == VAULT_INTEGRATION_FAILED]
        file_documents = m.sender_party.role in (Role.PROFESSIONAL, Role.APPLICATION)
        # parsed, filed and sealed before the unit of work: no writer waits on the cipher
        sealed = (
            await seal(
                self.ctx.keyring,
                msg,
                accounts,
                source=m.door,
                file_documents=file_documents,
                unfiled={a.id for a in unfiled},
            )
            if accounts
            else None
        )
        async with self.ctx.uow() as uow:
            if accounts:
                delivered = await deliver(
                    uow,
                    self.ctx.keyring,
                    msg,
                    accounts,
                    actor=actor,
                    source=m.door,
                    file_documents=file_documents,
                    unfiled={a.id for a in unfiled},
                    sealed=sealed,
                    limits=self.ctx.config.limits,  # the quota bound, atomic with the rows
                    skip_full=True,
                )
                if delivered.skipped:  # refused as a recipient refused by content is: the others still get it
                    full = set(delivered.skipped)
                    for r in m.recipients:
                        if r.account is not None and r.account.id in full and decisions[r.address].allowed:
                            decisions[r.address] = Decision.refuse(P.MAILBOX_NO_ROOM, "mailbox-full")
                    local = [(a, r) for a, r in local if a.id not in full]
                    accounts = [a for a, _ in local]
                    unfiled = [a for a in unfiled if a.id not in full]
                    refused = [r for r in m.recipients if not decisions.get(r.address, Decision.allow()).allowed]
                    if not local and not remote:
                        raise _Refused(decisions[refused[0].address])  # leaves the unit of work: rolled back
            mdn_queued = 0
            for account in unfiled:  # the ANS layout: a document the vault could not integrate is told by an MDN
                how = await self.notifier.integration_failed(uow, account, msg, return_path=m.mail_from)
                mdn_queued += how == "queued"
            if m.account is not None:  # the sender's own agenda copy (an organiser's REQUEST, a REPLY)
                await agenda.on_submission(uow, self.ctx.keyring, msg, m.account)
            # conversation grants, for our patients and for those of other operators we relay to
            await self.admission.after_delivery(uow, m.sender_party, accounts, msg, relayed=[r.address for r in remote])
            for r in remote:
                await spool.enqueue(
                    uow,
                    self.ctx.keyring,
                    raw=outbound,
                    mail_from=m.mail_from,
                    rcpt=r.address,
                    now=now,
                    expires_at=expires,
                    msg_id=msg_id,
                    account_id=m.account.id if m.account is not None else None,
                    params=m.params,
                    rcpt_params=r.params,
                )
            dsn_queued = await self._notify(uow, m, msg.raw, now, local, refused, decisions)
            uow.audit(
                actor,
                "smtp.accept",
                f"msg:{msg_id}",
                "ok",
                f"{m.door}; {len(accounts)} delivered, {len(remote)} queued, {len(refused)} refused",
            )
            await uow.commit()
        return Accepted(R.accepted(msg_id), msg_id, len(local), len(remote) + dsn_queued + mdn_queued)

    async def _notify(
        self,
        uow: UnitOfWork,
        m: Inbound,
        raw: bytes,
        now: dt.datetime,
        local: list[tuple[Account, Recipient]],
        refused: list[Recipient],
        decisions: dict[str, Decision],
    ) -> int:
        """DSNs the sender asked for: delivered (NOTIFY=SUCCESS), and failed for recipients refused by
        content. Returns how many went to the outbound queue."""
        if not m.mail_from:
            return 0
        delivered = [
            dsn.RecipientStatus(r.address, dsn.Action.DELIVERED, "2.0.0", None, self.hostname, r.params.orcpt, now)
            for _a, r in local
            if r.params.wants("SUCCESS")
        ]
        failed = [
            dsn.RecipientStatus(
                r.address,
                dsn.Action.FAILED,
                decisions[r.address].reply.enhanced,
                str(decisions[r.address].reply),
                self.hostname,
                r.params.orcpt,
                now,
            )
            for r in refused
            if r.params.wants("FAILURE")
        ]
        queued = 0
        for statuses in (delivered, failed):
            if statuses:
                how = await self.bouncer.send(
                    uow,
                    sender=m.mail_from,
                    original=raw,
                    recipients=statuses,
                    arrival=now,
                    envid=m.params.envid,
                    ret=m.params.ret,
                )
                queued += how == "queued"
        return queued

    def _refused(self, reason: str, reply: Reply, **fields: object) -> None:
        log.info("smtp.refused", extra={"fields": {"stage": "data", "reason": reason, "code": reply.code, **fields}})
        metrics.REFUSALS.labels("data", reason).inc()
