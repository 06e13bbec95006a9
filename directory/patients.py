"""Patients' mailboxes: issued from a valid INS, with their special mailboxes, and their life cycle.

Invariants:
- A patient's address is ``<INS>@<domains.patient>`` (the INS checked by
  ``directory.ins``; the local part compares case-insensitively, ``2A``/``2B``
  included). One INS, one mailbox.
- The patient domain is created (as a patient domain) the first time a mailbox
  is opened on it; a professional domain of that name is an error.
- Statuses: active; opposed (the patient refused the service: mail refused,
  5.2.1); suspended (temporarily: mail deferred, 4.2.1); closed (mail refused,
  5.2.1; the data kept for ``retention.closed_account_days``, then the key is
  destroyed by ``retention run``; ``erase`` destroys it at once). A closed
  mailbox whose key still exists can be reopened with its data.
- Bulk opening writes ``BULK_BATCH`` patients per transaction, each with its own
  data key, its mailboxes and an audit entry, exactly as one by one would.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from crypto.envelope import DataKey
from directory.accounts import AccountService
from directory.addresses import Address
from directory.errors import (
    AccountExists,
    DomainExists,
    InvalidIdentifier,
    InvalidState,
    UnknownAccount,
)
from directory.ins import validate_ins
from mailserver.context import Context
from mailserver.mailboxes import PATIENT_EXTRA, STANDARD
from mailserver.store.models import Account, AccountKind, AccountStatus, DomainKind

#: patients opened per transaction by ``open_many``
BULK_BATCH = 1000
#: bad lines listed in a bulk report (all are counted)
MAX_REPORTED = 50


@dataclass(frozen=True, slots=True)
class BadLine:
    line: int
    reason: str


@dataclass
class BulkReport:
    opened: int = 0
    existing: int = 0
    invalid: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    seconds: float = 0.0

    def bad(self, line: int, reason: str) -> None:
        self.invalid += 1
        if len(self.bad_lines) < MAX_REPORTED:
            self.bad_lines.append(BadLine(line, reason))


class PatientService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.accounts = AccountService(ctx)

    @property
    def domain(self) -> str:
        return self.ctx.config.domains.patient.lower()

    def address(self, ins: str) -> str:
        return f"{validate_ins(ins).lower()}@{self.domain}"

    def _address_of(self, value: str) -> str:
        """An INS or a patient address -> the patient's address."""
        if "@" in value:
            addr = Address.parse(value)
            validate_ins(addr.local)
            return str(addr)
        return self.address(value)

    async def ensure_domain(self, *, actor: str) -> None:
        async with self.ctx.uow(readonly=True) as uow:
            domain = await uow.domains.get(self.domain)
        if domain is None:
            try:
                await self.accounts.add_domain(self.domain, DomainKind.PATIENT, actor=actor)
            except DomainExists:
                pass  # opened concurrently
        elif domain.kind is not DomainKind.PATIENT:
            raise InvalidState(f"{self.domain} (domains.patient) is a professional domain, not a patient domain")

    async def open(
        self, ins: str, *, actor: str, password: str | None = None, display_name: str | None = None
    ) -> Account:
        canonical = validate_ins(ins)
        await self.ensure_domain(actor=actor)
        return await self.accounts.create(
            f"{canonical.lower()}@{self.domain}",
            AccountKind.PATIENT,
            actor=actor,
            password=password,
            display_name=display_name,
            ins=canonical,
        )

    async def open_many(
        self,
        lines: Iterable[str],
        *,
        actor: str,
        progress: Callable[[BulkReport], None] | None = None,
        batch_size: int = BULK_BATCH,
    ) -> BulkReport:
        """Open a mailbox for each INS in ``lines`` (one per line; blank lines and ``#`` comments skipped).
        Invalid INS are reported with their line number; INS that already have a mailbox are counted."""
        started = time.monotonic()
        report = BulkReport()
        await self.ensure_domain(actor=actor)
        batch: dict[str, int] = {}
        for n, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                canonical = validate_ins(text)
            except InvalidIdentifier as exc:
                report.bad(n, str(exc))
                continue
            if canonical in batch:
                report.existing += 1
                continue
            batch[canonical] = n
            if len(batch) >= batch_size:
                await self._open_batch(batch, report, actor)
                batch = {}
                if progress:
                    progress(report)
        if batch:
            await self._open_batch(batch, report, actor)
        report.seconds = time.monotonic() - started
        if progress:
            progress(report)
        return report

    async def _open_batch(self, batch: dict[str, int], report: BulkReport, actor: str) -> None:
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            domain = await uow.domains.get(self.domain)
            if domain is None:
                raise InvalidState(f"the patient domain {self.domain} vanished")
            known = await uow.accounts.known_ins(batch)
            fresh = [ins for ins in batch if ins not in known]
            report.existing += len(batch) - len(fresh)
            if not fresh:
                return
            created = await uow.accounts.add_patients(
                domain.id, [(ins, f"{ins.lower()}@{self.domain}") for ins in fresh], created_at=now
            )
            base = int(now.timestamp())
            names = [*STANDARD, *((n, None) for n in PATIENT_EXTRA)]
            mailboxes = [(name, special, (base + i) % 2**32 or 1) for i, (name, special) in enumerate(names)]
            keys: dict[int, bytes] = {}
            for account_id, _ins in created:
                owner = Account(id=account_id).owner_id  # keys are bound to their owner's id
                keys[account_id] = self.ctx.keyring.wrap(DataKey.generate(), owner=owner)
                uow.audit(actor, "account.create", owner, "ok", AccountKind.PATIENT.value)
            await uow.accounts.set_wrapped_keys(keys)
            await uow.mailboxes.add_to_each([account_id for account_id, _ in created], mailboxes, created_at=now)
            await uow.commit()
        report.opened += len(fresh)

    async def get(self, ins_or_address: str) -> Account:
        address = self._address_of(ins_or_address)
        async with self.ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(address)
        if account is None or account.kind is not AccountKind.PATIENT:
            raise UnknownAccount(f"no patient mailbox {address}")
        return account

    async def set_status(self, ins: str, status: AccountStatus, *, actor: str) -> Account:
        """Oppose, suspend or make active again (closing has its own method)."""
        account = await self.get(ins)
        return await self.accounts.set_status(account.address, status, actor=actor)

    async def close(self, ins: str, *, actor: str, erase: bool = False) -> Account:
        account = await self.get(ins)
        closed = await self.accounts.close(account.address, actor=actor, erase=erase)
        if erase:
            await self._forget(account.address, actor)
        return closed

    async def reopen(self, ins: str, *, actor: str) -> Account:
        """A closed mailbox whose key still exists comes back, with its data."""
        address = (await self.get(ins)).address
        async with self.ctx.uow() as uow:
            account = await uow.accounts.by_address(address, for_update=True)
            if account is None:
                raise UnknownAccount(f"no patient mailbox {address}")
            if account.status is not AccountStatus.CLOSED:
                raise InvalidState(f"{address} is not closed (it is {account.status.value})")
            if account.wrapped_key is None:
                raise InvalidState(f"{address} was erased: its key is destroyed and its data cannot come back")
            account.status = AccountStatus.ACTIVE
            account.closed_at = None
            account.retention_until = None
            uow.audit(actor, "account.reopen", account.owner_id, "ok")
            await uow.commit()
            return account

    async def run_retention(self, *, actor: str) -> builtins.list[str]:
        """Destroy the keys of closed accounts past their retention period (patients and professionals)."""
        shredded = await self.accounts.run_retention(actor=actor)
        for address in shredded:
            await self._forget(address, actor)
        return shredded

    async def kept(self) -> builtins.list[Account]:
        """Closed mailboxes whose key (and so data) is still kept, with their retention dates."""
        async with self.ctx.uow(readonly=True) as uow:
            closed = await uow.accounts.list(status=AccountStatus.CLOSED)
        return [a for a in closed if a.wrapped_key is not None]

    async def _forget(self, address: str, actor: str) -> None:
        """A patient whose data is destroyed keeps no list of whom they wrote to."""
        async with self.ctx.uow() as uow:
            n = await uow.grants.forget_patient(address)
            if n:
                account = await uow.accounts.by_address(address)
                uow.audit(actor, "grant.forget", account.owner_id if account else "patient", "ok", f"{n} grants")
            await uow.commit()


__all__ = ["AccountExists", "BulkReport", "PatientService"]
