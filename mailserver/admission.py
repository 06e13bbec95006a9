"""Admission: what every door asks before a message comes in or goes out (a service, built once per process).

The SMTP MX and submission handlers and the IMAP APPEND path call these
methods with the ``ParsedMessage`` the door built (nothing here parses a
message); each returns a ``policies.Decision`` carrying the reply to send.
``app.build_services`` builds one ``Admission`` and injects it into the SMTP
runtime and the IMAP sessions. It resolves addresses to ``policies.Party``
values (local accounts, trust-space operators, outsiders) and lets
``policies`` decide; it never speaks a protocol.

Invariants:
- One resolution rule for every door: a local domain's address is its account
  (or UNKNOWN); another domain is a trust-space operator's (professional, or
  patient for the configured remote patient domains; the published directory
  tells an application mailbox and a profession) or OUTSIDE.
- The trust space, accounts and grants are read from the database on every
  decision: a change made with ``masante-admin`` applies to the next command of
  a running server, without restart and without a cache to go stale.
- Conversation grants: a professional's (or organisation's) message delivered
  to a patient lets that patient reply to it; a ``Reply-To`` holding a
  trust-space professional address grants that address instead (an
  application's message grants only through its ``Reply-To``). A message whose
  subject is exactly ``[FIN]`` or that carries ``X-MSS-MES: FIN`` withdraws the
  grant instead. Grants are keyed by addresses, so they hold for another
  operator's patients too (``after_delivery(..., relayed=...)``).
- A grant lets a patient *answer*: at DATA, a patient's message to a
  professional must be a reply (In-Reply-To / References, or a ``Re:`` subject),
  except to the professions patients may write to first.
- Rate limits count accepted recipients per sender address, per process
  (``policies.rates``); their state is shared by every Admission of one database.
- Who a message says it is from is judged once per message, at DATA, on both
  doors (``check_origin``, rules in ``policies.origin``): originator fields are
  read from the header index with encoded words decoded, never reparsed.
- Storage quotas (``mailserver.quota``, the account's root): a full account
  refuses at RCPT; a message that does not fit is refused to that recipient at
  DATA by the bound itself (``quota.admit`` in the delivery's writing
  transaction, ``mailserver.smtp.intake``), both ``552 5.2.2`` with a sentence
  for the sender.
- Nothing here commits, except ``after_delivery`` which only adds to the
  caller's unit of work.
"""

from __future__ import annotations

import hashlib
import re
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from directory.addresses import Address, normalize_domain
from directory.dn import common_name, dn_key
from directory.errors import InvalidAddress
from directory.trust import TrustSpace
from mailserver import quota
from mailserver.config import Config, ConfigError
from mailserver.context import Context
from mailserver.mailboxes import DELIMITER, VAULT
from mailserver.message import ParsedMessage
from mailserver.message.addresses import mailboxes
from mailserver.message.headers import decode_words
from mailserver.store.db import Database
from mailserver.store.models import Account, AccountKind, AccountStatus, OperatorStatus
from mailserver.store.repositories.accounts import LocalAddress
from mailserver.store.repositories.quota import Usage
from mailserver.store.repositories.trust import RemoteAddress
from mailserver.store.uow import UnitOfWork
from policies import Decision, Party, Role, Status, may_send
from policies import content as C
from policies import mdn as M
from policies import origin as O
from policies import reply as R
from policies.rates import RateLimit, RateLimiter

#: the reason of a content decision that lets a message in unfiled, its vault failure told by an automatic MDN
VAULT_INTEGRATION_FAILED = "vault-integration-failed"

_ROLE = {
    AccountKind.PER: Role.PROFESSIONAL,
    AccountKind.ORG: Role.PROFESSIONAL,
    AccountKind.APP: Role.APPLICATION,
    AccountKind.PATIENT: Role.PATIENT,
}


def role_of(account: Account) -> Role:
    """The role ``policies`` knows a local account by."""
    return _ROLE[account.kind]


_SIZE = re.compile(r"\s*([0-9]+)\s*([KMG]?)B?\s*\Z", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Resolved:
    """An address as the policies see it, and the local account behind it if any."""

    party: Party
    account: Account | None


class _Shared:
    """What every Admission of one database shares in this process."""

    def __init__(self) -> None:
        self.rates = RateLimiter()


_SHARED: weakref.WeakKeyDictionary[Database, _Shared] = weakref.WeakKeyDictionary()


def parse_size_limits(entries: Sequence[str]) -> dict[str, int]:
    """``policy.domain_size_limits``: ``domain=size`` with an optional K/M/G(B) unit; ConfigError if malformed."""
    out: dict[str, int] = {}
    for entry in entries:
        domain, sep, size = entry.partition("=")
        m = _SIZE.match(size)
        if not sep or m is None:
            raise ConfigError(f"policy.domain_size_limits: {entry!r} is not domain=size (e.g. labo.fr=10MB)")
        try:
            name = normalize_domain(domain)
        except InvalidAddress:
            raise ConfigError(f"policy.domain_size_limits: {domain!r} is not a domain name") from None
        out[name] = int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2).upper()]
    return out


def check_config(config: Config) -> None:
    """Refuse, at start-up, a policy configuration admission could not apply."""
    parse_size_limits(config.policy.domain_size_limits)


class Admission:
    def __init__(self, ctx: Context, *, monotonic: Callable[[], float] | None = None) -> None:
        self.ctx = ctx
        self.trust = TrustSpace(ctx)
        self.monotonic = monotonic or ctx.clock.monotonic  # rates run on the injected clock
        shared = _SHARED.get(ctx.db)
        if shared is None:
            shared = _SHARED[ctx.db] = _Shared()
        self._shared = shared
        self._size_limits = parse_size_limits(ctx.config.policy.domain_size_limits)

    # --- who is this -----------------------------------------------------------------------------------

    @staticmethod
    def party_of(account: Account) -> Party:
        return Party(
            account.address,
            _ROLE[account.kind],
            local=True,
            status=Status(account.status.value),
            profession_code=account.profession_code,
        )

    async def resolve(self, address: str) -> Resolved:
        """Raises InvalidAddress for a malformed address."""
        addr = Address.parse(address)
        async with self.ctx.uow(readonly=True) as uow:
            return await self._resolve(uow, addr)

    async def _resolve(self, uow: UnitOfWork, addr: Address) -> Resolved:
        return (await self._lookup(uow, addr))[0]

    async def _lookup(self, uow: UnitOfWork, addr: Address, *, usage: bool = False) -> tuple[Resolved, Usage | None]:
        """``addr`` resolved: one statement for an address of our domains, two for another domain's (the
        first finds it is not ours). With ``usage``, what a local account holds in its root (``quota``), read
        by that same statement (``AccountRepository.local``)."""
        local = await uow.accounts.local(str(addr), addr.domain, usage=usage)
        if local is not None:
            return Resolved(self._local_party(addr, local), local.account), local.usage
        return Resolved(self._remote_party(addr, await uow.trust.remote(str(addr), addr.domain)), None), None

    def _local_party(self, addr: Address, local: LocalAddress) -> Party:
        if local.account is None:
            return Party(str(addr), Role.UNKNOWN, local=True)
        return self.party_of(local.account)

    def _remote_party(self, addr: Address, remote: RemoteAddress | None) -> Party:
        """Another domain's address: its operator's (``remote``; None: outside the trust space)."""
        if remote is None:
            return Party(str(addr), Role.OUTSIDE, local=False)
        status = Status.ACTIVE if remote.status is OperatorStatus.ACTIVE else Status.SUSPENDED
        remote_patients = {d.lower() for d in self.ctx.config.policy.remote_patient_domains}
        if addr.domain in remote_patients:
            return Party(str(addr), Role.PATIENT, local=False, status=status)
        role = Role.APPLICATION if remote.published_kind == "APP" else Role.PROFESSIONAL
        return Party(str(addr), role, local=False, status=status, profession_code=remote.profession_code)

    # --- MAIL FROM ----------------------------------------------------------------------------------------

    async def check_submission_sender(self, account: Account, mail_from: str) -> Decision:
        """Submission: MAIL FROM must be the authenticated account's own address, and the account active."""
        try:
            addr = str(Address.parse(mail_from))
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-sender-syntax")
        if addr != account.address:
            return Decision.refuse(R.SENDER_NOT_OWNED, "sender-not-owned")
        if account.status is not AccountStatus.ACTIVE:
            return Decision.refuse(R.SENDER_NOT_ACTIVE, "sender-not-active")
        return Decision.allow("own-address", R.SENDER_OK)

    async def check_mx_sender(self, mail_from: str, peer_dn: str | None) -> Decision:
        """MX: the sender's domain is in the trust space and lists the peer's certificate DN (compared in
        canonical form); a suspended operator gets a temporary refusal. A null reverse path (bounces) needs
        a peer DN listed for some operator."""
        return (await self.mx_sender(mail_from, peer_dn))[0]

    async def mx_sender(self, mail_from: str, peer_dn: str | None) -> tuple[Decision, Party | None]:
        """``check_mx_sender``, and when it allows, the sender as the policies see it (``resolve``; the null
        reverse path of a DSN from a listed operator MTA: mail from that operator), in one read-only unit of
        work: three statements for a named sender (its operator, the DNs it lists, whether it is ours)."""
        if peer_dn is None:
            return Decision.refuse(R.PEER_CERTIFICATE_REQUIRED, "no-client-certificate"), None
        key = dn_key(peer_dn)
        if mail_from == "":
            async with self.ctx.uow(readonly=True) as uow:
                listed = await uow.trust.domains_with_dn_key(key, active_only=False)
                active = await uow.trust.domains_with_dn_key(key, active_only=True)
            if not listed:
                return Decision.refuse(R.PEER_NOT_LISTED, "peer-not-listed"), None
            if not active:
                return Decision.refuse(R.OPERATOR_SUSPENDED, "peer-operator-suspended"), None
            return Decision.allow("null-sender-from-operator", R.SENDER_OK), Party("", Role.PROFESSIONAL, local=False)
        try:
            addr = Address.parse(mail_from)
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-sender-syntax"), None
        async with self.ctx.uow(readonly=True) as uow:
            operator = await uow.trust.remote(str(addr), addr.domain)
            keys = await uow.trust.dn_keys(addr.domain) if operator is not None else []
            if operator is None:
                return Decision.refuse(R.SENDER_OUTSIDE_TRUST_SPACE, "sender-outside-trust-space"), None
            if key not in keys:
                return Decision.refuse(R.PEER_NOT_LISTED, "peer-not-listed"), None
            if operator.status is not OperatorStatus.ACTIVE:
                return Decision.refuse(R.OPERATOR_SUSPENDED, "sender-operator-suspended"), None
            # resolved as ``resolve`` does: one of our domains first (the whitelist may list ours too)
            local = await uow.accounts.local(str(addr), addr.domain)
        party = self._local_party(addr, local) if local is not None else self._remote_party(addr, operator)
        return Decision.allow("operator-sender", R.SENDER_OK), party

    # --- RCPT TO --------------------------------------------------------------------------------------------

    async def check_recipient(self, sender: Party, recipient: str) -> tuple[Decision, Resolved | None]:
        """May ``sender`` write to ``recipient``: who it is, the policy (with the patient's grant), a full
        account, the sender's rate. One read-only unit of work: one statement for a local recipient (its
        domain, account and usage), two for another operator's, and the grant's for a patient sender."""
        try:
            addr = Address.parse(recipient)
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-recipient-syntax"), None
        limits = self.ctx.config.limits
        async with self.ctx.uow(readonly=True) as uow:
            resolved, usage = await self._lookup(uow, addr, usage=quota.bounds_accounts(limits))
            granted = await self._has_grant(uow, sender, resolved.party)
        decision = may_send(
            sender,
            resolved.party,
            patient_has_grant=granted,
            patient_first_professions=self.ctx.config.policy.patient_first_professions,
        )
        if decision.allowed and resolved.account is not None and usage is not None:
            if quota.is_full(limits, resolved.account, usage):
                return Decision.refuse(R.MAILBOX_FULL, "mailbox-full"), resolved
        if decision.allowed:
            limited = self._rate(sender)
            if not limited.allowed:
                return limited, resolved
        return decision, resolved

    def _rate(self, sender: Party) -> Decision:
        if not sender.address:
            return Decision.allow("null-sender")
        p = self.ctx.config.policy
        if not sender.local:
            limit = p.rate_remote_per_hour
        elif sender.role is Role.PATIENT:
            limit = p.rate_patient_per_hour
        elif sender.role is Role.APPLICATION:
            limit = p.rate_application_per_hour
        else:
            limit = p.rate_professional_per_hour
        return self._shared.rates.hit(sender.address.lower(), RateLimit(limit), self.monotonic())

    async def patient_has_grant(self, sender: Party, recipient: Party) -> bool:
        """Does the patient ``sender`` hold a conversation grant for ``recipient``?"""
        if sender.role is not Role.PATIENT or not recipient.address:
            return False
        async with self.ctx.uow(readonly=True) as uow:
            return await self._has_grant(uow, sender, recipient)

    @staticmethod
    async def _has_grant(uow: UnitOfWork, sender: Party, recipient: Party) -> bool:
        if sender.role is not Role.PATIENT or not recipient.address:
            return False
        return await uow.grants.has(sender.address, recipient.address)

    # --- DATA ------------------------------------------------------------------------------------------------

    def size_limit(self, party: Party) -> int:
        """The largest message ``party`` may receive: its domain's limit, 25 MB for patients, else the server's."""
        domain = party.address.rpartition("@")[2].lower()
        if domain in self._size_limits:
            return self._size_limits[domain]
        if party.role is Role.PATIENT:
            return self.ctx.config.limits.patient_message_size
        return self.ctx.config.limits.max_message_size

    async def check_content(
        self, sender: Party, recipients: Sequence[Party], message: ParsedMessage, *, return_path: str | None = None
    ) -> dict[str, Decision]:
        """Per recipient: may this content go to them (size for their domain or kind, attachment types and
        executables, the patient of an XDM package). Who the message says it is from was checked before, by
        ``check_origin``. A patient's own XDM package that the vault cannot integrate is allowed as
        ``VAULT_INTEGRATION_FAILED`` when the message asks its envelope sender (``return_path``) to be told by an
        MDN (``policies.mdn``): the message is delivered unfiled, and the MDN says why."""
        content = message.content
        mdn_to = M.automatic_to(message.addresses("disposition-notification-to"), return_path)
        attachments = C.check_attachments(content, self.ctx.config.policy.allowed_attachment_types)
        out: dict[str, Decision] = {}
        for r in recipients:
            limit = self.size_limit(r)
            who = "a patient's mailbox" if r.role is Role.PATIENT else f"the domain {r.address.rpartition('@')[2]}"
            decision = C.check_size(message.size, limit, who=who)
            if decision.allowed:
                decision = attachments
            if decision.allowed:
                ins = r.address.rpartition("@")[0].upper() if r.role is Role.PATIENT else None
                decision = C.check_xdm(content, ins)
                if (
                    decision.reason == "xdm-document-refused"
                    and ins is not None
                    and mdn_to is not None
                    and M.integration_failure(content, ins) is not None
                ):
                    out[r.address] = Decision.allow(VAULT_INTEGRATION_FAILED)
                    continue
            if decision.allowed and sender.role is Role.PATIENT and r.role is Role.PROFESSIONAL:
                first = r.profession_code in self.ctx.config.policy.patient_first_professions
                decision = C.check_patient_reply(content, may_write_first=first)
            out[r.address] = decision if not decision.allowed else Decision.allow("content-ok")
        return out

    async def check_origin(
        self,
        message: ParsedMessage,
        *,
        door: str,
        mail_from: str,
        recipients: Sequence[Party],
        account: Account | None,
        peer_dn: str | None,
        dkim_pass: Sequence[str],
    ) -> Decision:
        """May the door believe the message's From? Submission (``account`` set): the authenticated address in
        From, Sender, Resent-From and Resent-Sender, From required. MX: the From domain the envelope's or
        DKIM-aligned (``dkim_pass``: ``d=`` of the passing signatures intake verified), never one of our
        domains; a null reverse-path only for reports, never to a patient. Display names hold no other address."""
        origin = originator(message)
        if door != "mx":
            if account is None:
                return Decision.allow("no-account")
            return O.check_submitted(origin, account.address)
        envelope = mail_from.rpartition("@")[2].lower() if mail_from else None
        async with self.ctx.uow(readonly=True) as uow:
            local = {m.domain for m in origin.from_ if await uow.domains.get(m.domain) is not None}
            peer = (
                await uow.trust.domains_with_dn_key(dn_key(peer_dn), active_only=True)
                if envelope is None and peer_dn is not None
                else []
            )
        if peer and peer_dn is not None and (host := common_name(peer_dn)) and "." in host:
            peer.append(host)  # a report's MAILER-DAEMON@<the MTA's host name>, as its certificate names it
        return O.check_mx(
            origin,
            envelope_domain=envelope,
            peer_domains=peer,
            dkim_pass=dkim_pass,
            local_domains=local,
            to_patient=any(r.role is Role.PATIENT for r in recipients),
        )

    async def after_delivery(
        self,
        uow: UnitOfWork,
        sender: Party,
        recipients: Sequence[Account],
        message: ParsedMessage,
        *,
        relayed: Sequence[str] = (),
    ) -> None:
        """Called in the delivering unit of work, before its commit: conversation grants and their end.
        ``relayed``: recipients at other operators the same message was queued for (their patients' grants)."""
        if sender.role not in (Role.PROFESSIONAL, Role.APPLICATION) or not sender.address:
            return
        remote_patients = {d.lower() for d in self.ctx.config.policy.remote_patient_domains}
        patients: list[tuple[str, str]] = [(a.address, a.owner_id) for a in recipients if a.kind is AccountKind.PATIENT]
        for r in relayed:
            try:
                addr = Address.parse(r)
            except InvalidAddress:
                continue
            if addr.domain in remote_patients:
                patients.append((str(addr), f"remote-patient:{_opaque(str(addr))}"))
        if not patients:
            return
        head = message.content
        now = self.ctx.clock()
        sender_address = sender.address.lower()
        if head.ends_conversation:
            contacts = {sender_address, *head.reply_to}
            for patient, object_id in patients:
                for contact in sorted(contacts):
                    if await uow.grants.withdraw(patient, contact):
                        uow.audit(sender_address, "grant.end", object_id, "ok", f"contact:{contact}")
            return
        contacts_list = await self._reply_contacts(uow, head.reply_to)
        if not contacts_list and sender.role is Role.PROFESSIONAL:
            contacts_list = [sender_address]
        for patient, object_id in patients:
            for contact in contacts_list:
                if await uow.grants.grant(patient, contact, granted_by=sender_address, at=now):
                    uow.audit(sender_address, "grant.add", object_id, "ok", f"contact:{contact}")

    async def _reply_contacts(self, uow: UnitOfWork, reply_to: Sequence[str]) -> list[str]:
        """The Reply-To addresses a patient may be granted: professionals in the trust space."""
        out = []
        for text in reply_to:
            try:
                addr = Address.parse(text)
            except InvalidAddress:
                continue
            party = (await self._resolve(uow, addr)).party
            if party.role is Role.PROFESSIONAL and party.status is Status.ACTIVE:
                out.append(party.address)
        return out

    async def grants_of(self, patient_address: str) -> list[str]:
        """The addresses ``patient_address`` may currently write to by reply."""
        async with self.ctx.uow(readonly=True) as uow:
            return [g.contact for g in await uow.grants.of_patient(patient_address)]

    # --- IMAP APPEND -----------------------------------------------------------------------------------------

    async def check_append(self, account: Account, mailbox: str, message: ParsedMessage) -> Decision:
        """May ``account`` store ``message`` in its own ``mailbox``? A patient cannot plant a message that claims
        to come from someone else (From or Sender not their own address), nor store an executable."""
        if account.status is not AccountStatus.ACTIVE:
            return Decision.refuse(R.APPEND_NOT_ALLOWED.with_text("This mailbox is not active"), "not-active")
        if account.kind is not AccountKind.PATIENT:
            return Decision.allow("append")
        content = message.content
        own = C.check_own_message(content, account.address)
        if not own.allowed:
            return own
        attachments = C.check_attachments(content, self.ctx.config.policy.allowed_attachment_types)
        if not attachments.allowed:
            return Decision.refuse(R.APPEND_NOT_ALLOWED.with_text(attachments.reply.text), attachments.reason)
        if mailbox == VAULT or mailbox.startswith(VAULT + DELIMITER):  # the patient files a document (issue 8)
            return C.check_vault_upload(content, account.address.rpartition("@")[0].upper())
        return Decision.allow("append")


def _mailboxes(message: ParsedMessage, name: str) -> tuple[O.Mailbox, ...]:
    """The mailboxes of every field ``name``: as written (display names decoded), and as a reader sees them once
    RFC 2047 encoded words are decoded (a From that is only an encoded word shows an address too)."""
    out: dict[tuple[str | None, str], O.Mailbox] = {}
    for values in (message.values(name), message.decoded(name)):
        for m in mailboxes(values):
            if m.local and m.domain:
                box = O.Mailbox(decode_words(m.name) if m.name else None, m.address)
                out.setdefault((box.name, box.address.lower()), box)
    return tuple(out.values())


def originator(message: ParsedMessage) -> O.Originator:
    """The originator fields ``policies.origin`` decides on, read from the message's header index."""
    root = message.root
    report = root.param("report-type")
    return O.Originator(
        from_=_mailboxes(message, "from"),
        sender=_mailboxes(message, "sender"),
        resent_from=_mailboxes(message, "resent-from"),
        resent_sender=_mailboxes(message, "resent-sender"),
        has_from_field=message.has("from"),
        content_type=root.content_type,
        report_type=report.lower() if report else None,
    )


def _opaque(address: str) -> str:
    """An id for the audit log that does not spell out a remote patient's INS."""
    return hashlib.sha256(address.lower().encode()).hexdigest()[:16]
