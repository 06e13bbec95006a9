"""Local domains and accounts: creation with keys and mailboxes, status changes, closure and shredding.

Invariants:
- An account is created with its own data key (wrapped by the KEK) and its
  special mailboxes, in one transaction, audited.
- Kind and address never change after creation.
- A patient account lives on a patient domain and its local part is its INS;
  professional kinds (PER, ORG, APP) live on professional domains.
- Closing keeps the data until ``retention_until`` (``retention.closed_account_days``);
  ``erase=True`` or ``run_retention`` after that date destroys the data key:
  the sealed bodies stay in the database and can never be opened again.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from crypto.envelope import DataKey
from crypto.passwords import hash_password
from directory.addresses import Address, normalize_domain
from directory.errors import (
    AccountExists,
    DomainExists,
    InvalidAddress,
    InvalidState,
    UnknownAccount,
    UnknownDomain,
)
from directory.ins import validate_ins
from mailserver.context import Context
from mailserver.mailboxes import create_default_mailboxes
from mailserver.store.errors import Conflict
from mailserver.store.models import Account, AccountKind, AccountStatus, Domain, DomainKind
from mailserver.store.uow import UnitOfWork

PROFESSIONAL_KINDS = frozenset({AccountKind.PER, AccountKind.ORG, AccountKind.APP})


@dataclass(frozen=True, slots=True)
class DomainInfo:
    name: str
    kind: DomainKind
    accounts: int


class AccountService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # --- domains --------------------------------------------------------------------------------------

    async def add_domain(self, name: str, kind: DomainKind, *, actor: str) -> Domain:
        domain_name = normalize_domain(name)
        async with self.ctx.uow() as uow:
            try:
                domain = await uow.domains.add(domain_name, kind)
            except Conflict:
                raise DomainExists(f"domain {domain_name} already exists") from None
            uow.audit(actor, "domain.add", f"domain:{domain_name}", "ok", kind.value)
            await uow.commit()
            return domain

    async def list_domains(self) -> list[DomainInfo]:
        async with self.ctx.uow(readonly=True) as uow:
            counts = await uow.domains.account_counts()
            return [DomainInfo(d.name, d.kind, counts.get(d.id, 0)) for d in await uow.domains.list()]

    # --- accounts -------------------------------------------------------------------------------------

    async def create(
        self,
        address: str,
        kind: AccountKind,
        *,
        actor: str,
        password: str | None = None,
        display_name: str | None = None,
        ins: str | None = None,
        rpps: str | None = None,
        profession_code: str | None = None,
    ) -> Account:
        addr = Address.parse(address)
        if kind is AccountKind.PATIENT:
            canonical_ins = validate_ins(ins or addr.local)
            if canonical_ins.lower() != addr.local:
                raise InvalidAddress(
                    f"a patient's address is <INS>@<patient domain>; {addr} does not match INS {canonical_ins}"
                )
            ins = canonical_ins
        elif ins is not None:
            raise InvalidState("only patient accounts carry an INS")
        password_hash = None
        if password is not None:
            password_hash = await asyncio.to_thread(
                hash_password, password, log_n=self.ctx.config.security.scrypt_log_n
            )
        async with self.ctx.uow() as uow:
            domain = await uow.domains.get(addr.domain)
            if domain is None:
                raise UnknownDomain(
                    f"domain {addr.domain} is not a local domain (add it with `masante-admin domain add`)"
                )
            if kind is AccountKind.PATIENT and domain.kind is not DomainKind.PATIENT:
                raise InvalidState(f"{addr.domain} is a professional domain; patients live on a patient domain")
            if kind in PROFESSIONAL_KINDS and domain.kind is not DomainKind.PROFESSIONAL:
                raise InvalidState(
                    f"{addr.domain} is a patient domain; {kind.value} accounts live on a professional domain"
                )
            account = Account(
                address=str(addr),
                domain_id=domain.id,
                kind=kind,
                status=AccountStatus.ACTIVE,
                display_name=display_name,
                ins=ins,
                rpps=rpps,
                profession_code=profession_code,
                password_hash=password_hash,
            )
            try:
                await uow.accounts.add(account)
            except Conflict:
                what = f"patient with INS {ins}" if ins and await uow.accounts.by_ins(ins) else f"account {addr}"
                raise AccountExists(f"{what} already exists") from None
            account.wrapped_key = self.ctx.keyring.wrap(DataKey.generate(), owner=account.owner_id)
            await create_default_mailboxes(uow, account.id, patient=kind is AccountKind.PATIENT)
            uow.audit(actor, "account.create", account.owner_id, "ok", kind.value)
            await uow.commit()
            return account

    async def get(self, address: str) -> Account:
        addr = Address.parse(address)
        async with self.ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(str(addr))
        if account is None:
            raise UnknownAccount(f"no account {addr}")
        return account

    async def list(self, *, domain: str | None = None, kind: AccountKind | None = None) -> Sequence[Account]:
        async with self.ctx.uow(readonly=True) as uow:
            domain_id = None
            if domain is not None:
                d = await uow.domains.get(normalize_domain(domain))
                if d is None:
                    raise UnknownDomain(f"domain {domain} is not a local domain")
                domain_id = d.id
            return await uow.accounts.list(domain_id=domain_id, kind=kind)

    async def set_password(self, address: str, password: str, *, actor: str) -> None:
        digest = await asyncio.to_thread(hash_password, password, log_n=self.ctx.config.security.scrypt_log_n)
        async with self.ctx.uow() as uow:
            account = await self._locked(uow, address)
            account.password_hash = digest
            uow.audit(actor, "account.password", account.owner_id, "ok")
            await uow.commit()

    async def set_status(self, address: str, status: AccountStatus, *, actor: str) -> Account:
        """Move between active, disabled, suspended and opposed. Closing has its own method."""
        if status is AccountStatus.CLOSED:
            raise InvalidState("use close() to close an account")
        async with self.ctx.uow() as uow:
            account = await self._locked(uow, address)
            if account.status is AccountStatus.CLOSED:
                raise InvalidState(f"{account.address} is closed; a closed account cannot change status")
            if status is AccountStatus.OPPOSED and account.kind is not AccountKind.PATIENT:
                raise InvalidState("only a patient can oppose the service")
            previous = account.status
            account.status = status
            uow.audit(actor, "account.status", account.owner_id, "ok", f"{previous.value}->{status.value}")
            await uow.commit()
            return account

    async def close(self, address: str, *, actor: str, erase: bool = False) -> Account:
        """Close the account: mail is refused from now on; the data is kept for the retention
        period, or destroyed at once with ``erase`` (crypto-shredding)."""
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            account = await self._locked(uow, address)
            if account.status is AccountStatus.CLOSED and (account.wrapped_key is None or not erase):
                raise InvalidState(f"{account.address} is already closed")
            account.status = AccountStatus.CLOSED
            account.closed_at = account.closed_at or now
            account.retention_until = now + dt.timedelta(days=self.ctx.config.retention.closed_account_days)
            uow.audit(
                actor,
                "account.close",
                account.owner_id,
                "ok",
                "erase" if erase else f"retain-until:{account.retention_until.date().isoformat()}",
            )
            if erase:
                self._shred(uow, account, now, actor, "erase requested")
            await uow.commit()
        if erase:
            await self.scrub_free_pages()
        return account

    async def run_retention(self, *, actor: str) -> builtins.list[str]:
        """Destroy the keys of closed accounts whose retention period is over."""
        now = self.ctx.clock()
        shredded = []
        async with self.ctx.uow() as uow:
            for account in await uow.accounts.list(status=AccountStatus.CLOSED):
                if account.wrapped_key is not None and account.retention_until and account.retention_until <= now:
                    self._shred(uow, account, now, actor, "retention period over")
                    shredded.append(account.address)
            await uow.commit()
        if shredded:
            await self.scrub_free_pages()
        return shredded

    @staticmethod
    def _shred(uow: UnitOfWork, account: Account, now: dt.datetime, actor: str, why: str) -> None:
        account.wrapped_key = None
        account.key_destroyed_at = now
        account.password_hash = None
        uow.audit(actor, "account.key-destroyed", account.owner_id, "ok", why)

    async def scrub_free_pages(self) -> None:
        """After destroying keys: on SQLite, fold the WAL into the file and truncate it, so no old
        page still holds a destroyed key (``secure_delete`` already zeroes freed space)."""
        await self.ctx.db.sqlite_checkpoint()

    @staticmethod
    async def _locked(uow: UnitOfWork, address: str) -> Account:
        addr = Address.parse(address)
        account = await uow.accounts.by_address(str(addr), for_update=True)
        if account is None:
            raise UnknownAccount(f"no account {addr}")
        return account
