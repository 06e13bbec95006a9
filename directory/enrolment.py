"""Enrolling a device with a password and a one-time code; the device gets an app password of its own.

Invariants:
- ``start``: the address and account password are checked by the one
  ``Authenticator`` (its throttle and its audit; protocol ``web``), then a
  6-digit code (``secrets``) is sent through the configured notifier and only
  its HMAC, bound to the enrolment's random id, is kept. The answer to a wrong
  address or password is the same (``EnrolmentRefused``).
- ``verify``: the code is compared in constant time with the stored HMAC,
  under a lock on the enrolment row (two guesses never share a try). A code
  is valid ``[enrolment] code_ttl`` seconds (10 minutes) on the context's
  clock and for ``max_tries`` (5) wrong attempts: the fifth wrong one locks
  the enrolment for good; a used, locked or expired one never opens again.
- Success makes an app password of kind ``device`` named after the device
  (IMAP and SMTP), returned once; with ``[security] patient_second_factor``
  it is what opens a patient's IMAP.
- The owner lists and revokes their app passwords with the account password
  (``devices``, ``revoke``), never with an app password.
- Codes and passwords are never logged nor audited; audit entries carry the
  enrolment's row id and the outcome.
"""

from __future__ import annotations

import datetime as dt
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crypto.credentials import new_code
from directory.addresses import Address
from directory.app_passwords import (
    KIND_DEVICE,
    AppPasswords,
    CredentialView,
    InvalidCredential,
    check_name,
    credential_key,
)
from directory.errors import DirectoryError, UnknownAccount
from directory.notifiers import Notifier, NotifierError, Recipient, notifier_for
from mailserver.context import Context
from mailserver.store.models import Enrolment

if TYPE_CHECKING:
    from directory.auth import Authenticator

CODE_DIGITS = 6
PENDING, DONE, LOCKED, EXPIRED = "pending", "done", "locked", "expired"


class EnrolmentError(DirectoryError):
    """An enrolment step refused; ``status`` is what the web page answers (its message is for the person)."""

    status = 400


class EnrolmentRefused(EnrolmentError):
    status = 401


class EnrolmentOff(EnrolmentError):
    status = 503


class WrongCode(EnrolmentError):
    status = 400

    def __init__(self, message: str, tries_left: int) -> None:
        super().__init__(message)
        self.tries_left = tries_left


class EnrolmentClosed(EnrolmentError):
    """Locked, expired, already used or unknown: this enrolment can never succeed; start again."""

    status = 410


@dataclass(frozen=True, slots=True)
class Started:
    nonce: str
    expires_at: dt.datetime
    sent_to: str


@dataclass(frozen=True, slots=True)
class Enrolled:
    name: str
    address: str
    password: str


class EnrolmentService:
    def __init__(self, ctx: Context, authenticator: Authenticator, notifier: Notifier | None = None) -> None:
        self.ctx = ctx
        self.authenticator = authenticator
        try:
            self.notifier = notifier if notifier is not None else notifier_for(ctx.config)
        except NotifierError:
            self.notifier = None  # said when someone tries (EnrolmentOff), not at start
        self.credentials = AppPasswords(ctx)

    async def start(self, address: str, password: str, device: str, *, peer: str) -> Started:
        if self.notifier is None:
            raise EnrolmentOff("device enrolment is not configured on this server ([enrolment] notifier)")
        try:
            device = check_name(device)
        except InvalidCredential as exc:
            raise EnrolmentError(f"device name: {exc}") from None
        result = await self.authenticator.authenticate(address, password, protocol="web", peer=peer)
        if result.account is None or result.scope is not None:  # an app password does not enrol another device
            raise EnrolmentRefused("Invalid address or password")
        account = result.account
        cfg = self.ctx.config.enrolment
        now = self.ctx.clock()
        nonce = secrets.token_urlsafe(24)
        code = new_code(CODE_DIGITS)
        async with self.ctx.uow(readonly=True) as uow:
            contact = await uow.credentials.contact(account.id)
        to = Recipient(account.address, contact.email if contact else None, contact.phone if contact else None)
        tag = f"{now.strftime('%Y%m%dT%H%M%S')}-{account.id}-{nonce[:8]}"
        try:
            sent_to = await self.notifier.send(to, code, device=device, minutes=max(1, cfg.code_ttl // 60), tag=tag)
        except NotifierError as exc:
            async with self.ctx.uow() as uow:
                uow.audit(account.address, "enrolment.start", account.owner_id, "fail", f"not sent: {exc}")
                await uow.commit()
            raise EnrolmentOff(str(exc)) from None
        expires_at = now + dt.timedelta(seconds=cfg.code_ttl)
        async with self.ctx.uow() as uow:
            row = await uow.credentials.add_enrolment(
                Enrolment(
                    nonce=nonce,
                    account_id=account.id,
                    device=device,
                    code_digest=credential_key(self.ctx).code_digest(nonce, code),
                    tries=0,
                    status=PENDING,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            uow.audit(
                account.address, "enrolment.start", f"{account.owner_id}/enrolment:{row.id}", "ok", f"device {device}"
            )
            await uow.commit()
        return Started(nonce, expires_at, sent_to)

    async def verify(self, nonce: str, code: str) -> Enrolled:
        code = code.strip()
        max_tries = self.ctx.config.enrolment.max_tries
        key = credential_key(self.ctx)
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            row = await uow.credentials.enrolment(nonce, lock=True) if nonce.isprintable() else None
            if row is None:
                raise EnrolmentClosed("No such enrolment: start again")
            account = await uow.accounts.get(row.account_id)
            if account is None:
                raise EnrolmentClosed("No such enrolment: start again")
            obj = f"{account.owner_id}/enrolment:{row.id}"
            if row.status == PENDING and now >= row.expires_at:
                row.status = EXPIRED
                uow.audit(account.address, "enrolment.verify", obj, "fail", "expired")
                await uow.commit()
                raise EnrolmentClosed("This code has expired: start again")
            if row.status != PENDING:
                raise EnrolmentClosed(f"This enrolment is {row.status}: start again")
            good = hmac.compare_digest(row.code_digest, key.code_digest(nonce, code))
            if not good:
                row.tries += 1
                locked = row.tries >= max_tries
                if locked:
                    row.status = LOCKED
                uow.audit(
                    account.address,
                    "enrolment.verify",
                    obj,
                    "fail",
                    f"wrong code {row.tries}/{max_tries}" + ("; locked" if locked else ""),
                )
                await uow.commit()
                if locked:
                    raise EnrolmentClosed("Too many wrong codes: this enrolment is locked; start again")
                raise WrongCode(f"Wrong code ({max_tries - row.tries} tries left)", max_tries - row.tries)
            row.status = DONE
            uow.audit(account.address, "enrolment.verify", obj, "ok", f"device {row.device}")
            await uow.commit()
            device, address = row.device, account.address
        name = await self._free_name(address, device)
        view, secret = await self.credentials.create(address, name, actor=address, kind=KIND_DEVICE)
        return Enrolled(view.name, address, secret)

    async def _owner(self, address: str, password: str, peer: str) -> str:
        """The address of the account whose own password this is (an app password is not enough)."""
        result = await self.authenticator.authenticate(address, password, protocol="web", peer=peer)
        if result.account is None or result.scope is not None:
            raise EnrolmentRefused("Invalid address or password")
        return result.account.address

    async def devices(self, address: str, password: str, *, peer: str) -> list[CredentialView]:
        """The owner's app passwords and grants (no secret: none is kept)."""
        return await self.credentials.list(await self._owner(address, password, peer))

    async def revoke(self, address: str, password: str, name: str, *, peer: str) -> int:
        """The owner revokes one of their app passwords by name (open sessions end at their next command)."""
        owner = await self._owner(address, password, peer)
        try:
            return await self.credentials.revoke(owner, name, actor=owner)
        except InvalidCredential as exc:
            raise EnrolmentError(str(exc)) from None

    async def _free_name(self, address: str, device: str) -> str:
        """``device``, or ``device (2)``... if a live credential has that name already."""
        now = self.ctx.clock()
        taken = {v.name for v in await self.credentials.list(address) if v.state(now) == "active"}
        name, n = device, 1
        while name in taken:
            n += 1
            name = f"{device[:90]} ({n})"
        return name


async def set_contact(ctx: Context, address: str, *, email: str | None, phone: str | None, actor: str) -> None:
    """Where the account's codes are sent (``masante-admin app-password contact``)."""
    canonical = str(Address.parse(address))
    if email is not None:
        email = str(Address.parse(email))
    if phone is not None:
        phone = phone.replace(" ", "")
        if not (phone.startswith("+") and phone[1:].isdigit() and 8 <= len(phone) <= 16):
            raise InvalidCredential("--phone takes an international number: +33612345678")
    async with ctx.uow() as uow:
        account = await uow.accounts.by_address(canonical)
        if account is None:
            raise UnknownAccount(f"no account {canonical}")
        await uow.credentials.set_contact(account.id, email, phone, ctx.clock())
        uow.audit(actor, "enrolment.contact", account.owner_id, "ok", "email" if email else "-")
        await uow.commit()
