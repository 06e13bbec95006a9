"""The gate: what every door asks before a message comes in or goes out.

The SMTP MX and submission handlers and the IMAP APPEND path call these
methods; each returns a ``policies.Decision`` carrying the reply to send. The
gate resolves addresses to ``policies.Party`` values (local accounts, trust-space
operators, outsiders) and lets ``policies`` decide; it never speaks a protocol.

Invariants:
- One resolution rule for every door: a local domain's address is its account
  (or UNKNOWN); another domain is a trust-space operator's (professional, or
  patient for the configured remote patient domains) or OUTSIDE.
- Nothing here commits, except ``after_delivery`` which only adds to the
  caller's unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from directory.addresses import Address
from directory.errors import InvalidAddress
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.store.models import Account, AccountKind, AccountStatus
from mailserver.store.uow import UnitOfWork
from policies import Decision, Party, Role, Status, may_send
from policies import reply as R

_ROLE = {
    AccountKind.PER: Role.PROFESSIONAL,
    AccountKind.ORG: Role.PROFESSIONAL,
    AccountKind.APP: Role.APPLICATION,
    AccountKind.PATIENT: Role.PATIENT,
}


@dataclass(frozen=True, slots=True)
class Resolved:
    """An address as the policies see it, and the local account behind it if any."""

    party: Party
    account: Account | None


class Gate:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trust = TrustSpace(ctx)

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
            domain = await uow.domains.get(addr.domain)
            if domain is not None:
                account = await uow.accounts.by_address(str(addr))
                if account is None:
                    return Resolved(Party(str(addr), Role.UNKNOWN, local=True), None)
                return Resolved(self.party_of(account), account)
        operator = await self.trust.lookup(addr.domain)
        if operator is None:
            return Resolved(Party(str(addr), Role.OUTSIDE, local=False), None)
        remote_patients = {d.lower() for d in self.ctx.config.policy.remote_patient_domains}
        role = Role.PATIENT if addr.domain in remote_patients else Role.PROFESSIONAL
        status = Status.ACTIVE if operator.active else Status.SUSPENDED
        return Resolved(Party(str(addr), role, local=False, status=status), None)

    # --- MAIL FROM ----------------------------------------------------------------------------------------

    async def check_submission_sender(self, account: Account, mail_from: str) -> Decision:
        """Submission: MAIL FROM must be the authenticated account's own address."""
        try:
            addr = str(Address.parse(mail_from))
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-sender-syntax")
        if addr != account.address:
            return Decision.refuse(R.SENDER_NOT_OWNED, "sender-not-owned")
        return Decision.allow("own-address", R.SENDER_OK)

    async def check_mx_sender(self, mail_from: str, peer_dn: str | None) -> Decision:
        """MX: the sender's domain is in the trust space, active, and lists the peer's certificate DN.
        A null reverse path (bounces) needs a peer DN listed for any operator."""
        if peer_dn is None:
            return Decision.refuse(R.PEER_CERTIFICATE_REQUIRED, "no-client-certificate")
        if mail_from == "":
            for op in await self.trust.list():
                if peer_dn in op.dns:
                    return Decision.allow("null-sender-from-operator", R.SENDER_OK)
            return Decision.refuse(R.PEER_NOT_LISTED, "peer-not-listed")
        try:
            addr = Address.parse(mail_from)
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-sender-syntax")
        operator = await self.trust.lookup(addr.domain)
        if operator is None:
            return Decision.refuse(R.SENDER_OUTSIDE_TRUST_SPACE, "sender-outside-trust-space")
        if not operator.active:
            return Decision.refuse(R.OPERATOR_SUSPENDED, "sender-operator-suspended")
        if peer_dn not in operator.dns:
            return Decision.refuse(R.PEER_NOT_LISTED, "peer-not-listed")
        return Decision.allow("operator-sender", R.SENDER_OK)

    # --- RCPT TO --------------------------------------------------------------------------------------------

    async def check_recipient(self, sender: Party, recipient: str) -> tuple[Decision, Resolved | None]:
        try:
            resolved = await self.resolve(recipient)
        except InvalidAddress:
            return Decision.refuse(R.BAD_ADDRESS_SYNTAX, "bad-recipient-syntax"), None
        decision = may_send(
            sender,
            resolved.party,
            patient_has_grant=await self.patient_has_grant(sender, resolved.party),
            patient_first_professions=self.ctx.config.policy.patient_first_professions,
        )
        return decision, resolved

    async def patient_has_grant(self, sender: Party, recipient: Party) -> bool:
        """Does the patient ``sender`` hold a conversation grant for ``recipient``? (The grants come with
        the trust-space and policy work: until then, none.)"""
        return False

    # --- DATA ------------------------------------------------------------------------------------------------

    async def check_content(self, sender: Party, recipients: Sequence[Party], raw: bytes) -> dict[str, Decision]:
        """Per recipient: may this content go to them (size per recipient kind...)."""
        limit_patient = self.ctx.config.limits.patient_message_size
        out: dict[str, Decision] = {}
        for r in recipients:
            if r.role is Role.PATIENT and len(raw) > limit_patient:
                out[r.address] = Decision.refuse(
                    R.MESSAGE_TOO_BIG.with_text(f"Messages to patients are limited to {limit_patient // 2**20} MB"),
                    "too-big-for-patient",
                )
            else:
                out[r.address] = Decision.allow("content-ok")
        return out

    async def after_delivery(self, uow: UnitOfWork, sender: Party, recipients: Sequence[Account], raw: bytes) -> None:
        """Called in the delivering unit of work, before its commit: conversation grants and their end."""

    # --- IMAP APPEND -----------------------------------------------------------------------------------------

    async def check_append(self, account: Account, mailbox: str, raw: bytes) -> Decision:
        """May ``account`` store ``raw`` in its own ``mailbox``?"""
        if account.status is not AccountStatus.ACTIVE:
            return Decision.refuse(R.APPEND_NOT_ALLOWED.with_text("This mailbox is not active"), "not-active")
        return Decision.allow("append")
