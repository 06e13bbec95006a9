"""Domains and accounts. ``AccountRepository.for_login`` is the one statement a login reads: the account and
its activity (``account_activity``), through a Core statement built once; ``local`` is the one statement
SMTP admission reads of an address of our domains.

Invariants:
- ``for_login`` reads the row as it is now (no cache of account rows): a disabled, closed or changed account
  is seen by the very next login.
- ``local`` (SMTP RCPT, a resolved sender) is one statement, built once at import, read as it is now: the
  domain's row decides whether the address is ours, the account row (outer-joined, by address) who it is;
  with ``usage``, the same statement reads what its mailboxes hold with ``UsageViews.usage``'s ``USAGE_SUMS``.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, case, func, insert, select, update

from mailserver.store.models import (
    Account,
    AccountActivity,
    AccountKind,
    AccountStatus,
    Domain,
    DomainKind,
    Mailbox,
)
from mailserver.store.repositories.base import Repository, rows_of
from mailserver.store.repositories.quota import USAGE_SUMS, Usage

_ACCOUNTS = cast(Table, Account.__table__)
#: the domain named ``domain`` and the account of ``address`` if there is one (SMTP RCPT, a resolved sender): Core
#: columns, the account built from them (no ORM load on the RCPT path)
_LOCAL = (
    select(Domain.id, _ACCOUNTS)
    .select_from(Domain)
    .outerjoin(_ACCOUNTS, _ACCOUNTS.c.address == bindparam("address"))
    .where(Domain.name == bindparam("domain"))
)
#: the same, and what the account's mailboxes hold (``UsageViews.usage``, the account's root)
_LOCAL_WITH_USAGE = (
    select(Domain.id, _ACCOUNTS, *USAGE_SUMS)
    .select_from(Domain)
    .outerjoin(_ACCOUNTS, _ACCOUNTS.c.address == bindparam("address"))
    .outerjoin(Mailbox, Mailbox.account_id == _ACCOUNTS.c.id)
    .where(Domain.name == bindparam("domain"))
    .group_by(Domain.id, _ACCOUNTS.c.id)
)


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """An address of one of our domains: its account (None: no such account), and with ``usage`` asked for,
    what that account holds (``Usage(0, 0)`` when there is no account)."""

    account: Account | None
    usage: Usage | None = None


class DomainRepository(Repository):
    async def get(self, name: str) -> Domain | None:
        return (await self.session.execute(select(Domain).where(Domain.name == name.lower()))).scalar_one_or_none()

    async def get_by_id(self, domain_id: int) -> Domain | None:
        return await self.session.get(Domain, domain_id)

    async def add(self, name: str, kind: DomainKind) -> Domain:
        domain = Domain(name=name.lower(), kind=kind)
        async with self._conflict_as(f"domain {name} already exists"):
            self.session.add(domain)
        return domain

    async def list(self) -> Sequence[Domain]:
        return (await self.session.execute(select(Domain).order_by(Domain.name))).scalars().all()

    async def account_counts(self) -> dict[int, int]:
        rows = await self.session.execute(select(Account.domain_id, func.count()).group_by(Account.domain_id))
        return {int(domain_id): int(count) for domain_id, count in rows.all()}


_ACTIVITY = cast(Table, AccountActivity.__table__)
#: what a login reads, in one statement: the account row and its last login and warning (outer join: an account
#: never logged in nor warned has no activity row)
_FOR_LOGIN = (
    select(_ACCOUNTS, _ACTIVITY.c.last_login_at, _ACTIVITY.c.warned_at)
    .outerjoin(_ACTIVITY, _ACTIVITY.c.account_id == _ACCOUNTS.c.id)
    .where(_ACCOUNTS.c.address == bindparam("address"))
)
_ACCOUNT_COLUMNS = tuple(c.key for c in _ACCOUNTS.c)


@dataclass(frozen=True, slots=True)
class LoginFacts:
    """An account as a login reads it (``AccountRepository.for_login``)."""

    account: Account  # not attached to any session: read its columns, do not load through it
    last_login_at: dt.datetime | None
    warned_at: dt.datetime | None


class AccountRepository(Repository):
    async def get(self, account_id: int) -> Account | None:
        return await self.session.get(Account, account_id)

    async def by_address(self, address: str, *, for_update: bool = False) -> Account | None:
        stmt = select(Account).where(Account.address == address.lower())
        if for_update:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def local(self, address: str, domain: str, *, usage: bool = False) -> LocalAddress | None:
        """``address`` if ``domain`` (its domain) is one of ours, else None; one statement (``_LOCAL``)."""
        params = {"address": address.lower(), "domain": domain.lower()}
        rows = await rows_of(self.session, _LOCAL_WITH_USAGE if usage else _LOCAL, params)
        if not rows:
            return None
        r, n = rows[0], len(_ACCOUNT_COLUMNS)
        account = None if r[1] is None else Account(**dict(zip(_ACCOUNT_COLUMNS, r[1 : 1 + n], strict=True)))
        if not usage:
            return LocalAddress(account)
        return LocalAddress(account, Usage(int(r[1 + n]), int(r[2 + n])))

    async def for_login(self, address: str) -> LoginFacts | None:
        """The account at ``address`` (already canonical) and its activity, in one Core statement."""
        conn = await self.session.connection()
        row = (await conn.execute(_FOR_LOGIN, {"address": address.lower()})).first()
        if row is None:
            return None
        values = row._mapping
        account = Account(**{key: values[key] for key in _ACCOUNT_COLUMNS})
        return LoginFacts(account, values["last_login_at"], values["warned_at"])

    async def by_ins(self, ins: str) -> Account | None:
        return (await self.session.execute(select(Account).where(Account.ins == ins))).scalar_one_or_none()

    async def add(self, account: Account) -> Account:
        async with self._conflict_as(f"account {account.address} already exists"):
            self.session.add(account)
        return account

    async def list(
        self,
        *,
        domain_id: int | None = None,
        kind: AccountKind | None = None,
        status: AccountStatus | None = None,
    ) -> Sequence[Account]:
        stmt = select(Account).order_by(Account.address)
        if domain_id is not None:
            stmt = stmt.where(Account.domain_id == domain_id)
        if kind is not None:
            stmt = stmt.where(Account.kind == kind)
        if status is not None:
            stmt = stmt.where(Account.status == status)
        return (await self.session.execute(stmt)).scalars().all()

    async def next_uidvalidity(self, account_id: int, *, at_least: int) -> int:
        """Raise the account's UIDVALIDITY high-water mark past itself (to ``at_least`` if that is more) and
        return it. Locks the account row until the transaction ends: take it before any mailbox row."""
        t = _ACCOUNTS
        stmt = (
            update(t)
            .where(t.c.id == account_id)
            .values(
                uidvalidity_high=case((t.c.uidvalidity_high + 1 > at_least, t.c.uidvalidity_high + 1), else_=at_least)
            )
            .returning(t.c.uidvalidity_high)
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def keep_uidvalidity(self, account_id: int, uidvalidity: int) -> None:
        """Raise the account's UIDVALIDITY high-water mark to ``uidvalidity`` (a mailbox being deleted) if it
        is below. Locks the account row until the transaction ends."""
        t = _ACCOUNTS
        stmt = (
            update(t)
            .where(t.c.id == account_id)
            .values(
                uidvalidity_high=case((t.c.uidvalidity_high < uidvalidity, uidvalidity), else_=t.c.uidvalidity_high)
            )
        )
        await self.session.execute(stmt)

    async def with_wrapped_keys(self) -> Sequence[Account]:
        stmt = select(Account).where(Account.wrapped_key.is_not(None)).order_by(Account.id).with_for_update()
        return (await self.session.execute(stmt)).scalars().all()

    async def known_ins(self, ins: Collection[str]) -> set[str]:
        """Which of ``ins`` already have an account."""
        stmt = select(Account.ins).where(Account.ins.in_(list(ins)))
        return {i for i in (await self.session.execute(stmt)).scalars().all() if i is not None}

    async def add_patients(
        self, domain_id: int, patients: Sequence[tuple[str, str]], *, created_at: dt.datetime
    ) -> builtins.list[tuple[int, str]]:
        """Active patient accounts for ``(ins, address)`` pairs in one multi-row ``INSERT ... RETURNING``,
        without their key (``set_wrapped_keys`` adds it). Returns ``(id, ins)`` pairs, in id order."""
        t = _ACCOUNTS
        stmt = (
            insert(t)
            .values(
                [
                    {
                        "address": address,
                        "domain_id": domain_id,
                        "kind": AccountKind.PATIENT,
                        "status": AccountStatus.ACTIVE,
                        "ins": ins,
                        "created_at": created_at,
                    }
                    for ins, address in patients
                ]
            )
            .returning(t.c.id, t.c.ins)
        )
        # rows come back in any order
        return sorted((int(account_id), str(ins)) for account_id, ins in (await self.session.execute(stmt)).all())

    async def set_wrapped_keys(self, keys: Mapping[int, bytes]) -> None:
        """Store each account's wrapped data key (one ``executemany``)."""
        if not keys:
            return
        t = _ACCOUNTS
        stmt = update(t).where(t.c.id == bindparam("account")).values(wrapped_key=bindparam("key"))
        await self.session.execute(stmt, [{"account": account_id, "key": key} for account_id, key in keys.items()])
