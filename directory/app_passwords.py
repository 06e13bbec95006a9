"""App passwords: one random secret per device or app, scoped, listed, revoked at once.

Invariants:
- The secret is made here (``crypto.credentials``: 160 random bits), returned
  once to the caller that shows it, and stored only as its HMAC under the
  credential key (beside the KEK, never in the database): a login finds the row
  by that digest, one index lookup and no memory-hard hash.
- A credential is valid while it is not revoked, not expired (on the context's
  clock) and its account is active; it opens only its ``protocols`` (``imap``,
  ``smtp``), and, for an app grant, only its folders and their children.
- ``revoke`` marks the row; the next login through it fails, and an IMAP
  session opened with it is ended at its next command (``still_valid``).
- Names are what the owner calls the device ("Téléphone"): at most 100
  printable characters, unique among the account's live credentials (the audit
  trail escapes them on write); secrets never reach it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from crypto.credentials import CredentialKey, load_or_create_credential_key, looks_like_app_password, new_app_password
from directory.addresses import Address
from directory.errors import DirectoryError, InvalidState, UnknownAccount
from mailserver.context import Context
from mailserver.store.models import Account, AccountStatus, AppCredential
from mailserver.store.uow import UnitOfWork

PROTOCOLS = frozenset({"imap", "smtp"})
MAX_NAME = 100
KIND_APP_PASSWORD = "app-password"  # noqa: S105 - a kind of credential, not a secret
KIND_DEVICE = "device"
KIND_GRANT = "grant"

_KEYS: dict[tuple[Path, str | None], CredentialKey] = {}


class InvalidCredential(DirectoryError):
    """A name, scope or duration that cannot be used; the message says why."""


def credential_key(ctx: Context) -> CredentialKey:
    """The credential key of this configuration (read once per process, created on first use)."""
    path = ctx.config.resolve(ctx.config.keys.credential_key_file)
    env = os.environ.get("MASANTE_CREDENTIAL_KEY") or None
    key = _KEYS.get((path, env))
    if key is None:
        key = _KEYS[(path, env)] = load_or_create_credential_key(path, env)
    return key


@dataclass(frozen=True, slots=True)
class Scope:
    """What a login through an app credential may do (``AuthResult.scope``)."""

    credential_id: int
    kind: str
    name: str
    protocols: frozenset[str]
    folders: tuple[str, ...] | None  # None: every folder
    read_only: bool
    app: str | None

    def covers(self, mailbox: str) -> bool:
        """True if ``mailbox`` is one of the granted folders or below one ("/" is the delimiter)."""
        if self.folders is None:
            return True
        key = _folder_key(mailbox)
        return any(key == f or key.startswith(f + "/") for f in map(_folder_key, self.folders))

    def is_parent(self, mailbox: str) -> bool:
        """True if ``mailbox`` is an ancestor of a granted folder (LIST shows it \\Noselect, nothing more)."""
        if self.folders is None:
            return False
        key = _folder_key(mailbox)
        return any(f.startswith(key + "/") for f in map(_folder_key, self.folders))

    @property
    def label(self) -> str:
        """How audit entries name the credential: the app's name for a grant, else the device's (the audit
        trail escapes it; a log line carries ``credential_id`` instead)."""
        return f"app {self.app}" if self.app else f"{self.kind} {self.name}"


def _folder_key(name: str) -> str:
    name = name.strip("/")
    return "INBOX" + name[5:] if name[:5].upper() == "INBOX" and name[5:6] in ("", "/") else name


@dataclass(frozen=True, slots=True)
class CredentialView:
    id: int
    kind: str
    name: str
    protocols: tuple[str, ...]
    folders: tuple[str, ...] | None
    read_only: bool
    app: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    @classmethod
    def of(cls, c: AppCredential) -> CredentialView:
        return cls(
            c.id,
            c.kind,
            c.name,
            tuple(c.protocols.split(",")),
            _folders(c),
            c.read_only,
            c.app,
            c.created_at,
            c.expires_at,
            c.last_used_at,
            c.revoked_at,
        )

    def state(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def _folders(c: AppCredential) -> tuple[str, ...] | None:
    return None if c.folders is None else tuple(f for f in c.folders.split("\n") if f)


def _scope(c: AppCredential) -> Scope:
    return Scope(c.id, c.kind, c.name, frozenset(c.protocols.split(",")), _folders(c), c.read_only, c.app)


def parse_protocols(text: str) -> frozenset[str]:
    wanted = frozenset(p.strip().lower() for p in text.split(",") if p.strip())
    unknown = wanted - PROTOCOLS
    if unknown or not wanted:
        raise InvalidCredential(f"--scope takes imap, smtp or imap,smtp (not {text!r})")
    return wanted


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidCredential(f"a name has 1 to {MAX_NAME} printable characters")
    return name


def _live(c: AppCredential, now: dt.datetime) -> bool:
    return c.revoked_at is None and (c.expires_at is None or now < c.expires_at)


@dataclass(frozen=True, slots=True)
class Verdict:
    """An app-password check at login: ``scope`` if it opens the account, else why not (``why``)."""

    scope: Scope | None
    why: str  # "ok", "not-app-password", "revoked", "expired", "out-of-scope"


NOT_APP_PASSWORD = Verdict(None, "not-app-password")


class AppPasswords:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def _account(self, uow: UnitOfWork, address: str) -> Account:
        canonical = str(Address.parse(address))
        account = await uow.accounts.by_address(canonical)
        if account is None:
            raise UnknownAccount(f"no account {canonical}")
        return account

    async def create(
        self,
        address: str,
        name: str,
        *,
        actor: str,
        protocols: frozenset[str] = PROTOCOLS,
        kind: str = KIND_APP_PASSWORD,
        folders: tuple[str, ...] | None = None,
        read_only: bool = False,
        app: str | None = None,
        expires_at: dt.datetime | None = None,
    ) -> tuple[CredentialView, str]:
        """A new credential and its secret (shown once: it is not kept)."""
        name = check_name(name)
        key = credential_key(self.ctx)
        secret = new_app_password()
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            account = await self._account(uow, address)
            if account.status is not AccountStatus.ACTIVE:
                raise InvalidState(f"{account.address} is {account.status.value}: no new credential for it")
            for c in await uow.credentials.list(account.id):
                if c.name == name and _live(c, now):
                    raise InvalidCredential(f"{account.address} already has a live credential named {name!r}")
            row = await uow.credentials.add(
                AppCredential(
                    account_id=account.id,
                    kind=kind,
                    name=name,
                    digest=key.app_password_digest(secret),
                    protocols=",".join(sorted(protocols)),
                    folders=None if folders is None else "\n".join(folders),
                    read_only=read_only,
                    app=app,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            scope = ",".join(sorted(protocols)) + ("" if folders is None else " folders " + ",".join(folders))
            uow.audit(
                actor,
                f"{kind}.create",
                f"{account.owner_id}/credential:{row.id}",
                "ok",
                f"{name}; {scope}" + ("; read-only" if read_only else ""),
            )
            await uow.commit()
        return CredentialView.of(row), secret

    async def list(self, address: str, *, kind: str | None = None) -> list[CredentialView]:
        async with self.ctx.uow(readonly=True) as uow:
            account = await self._account(uow, address)
            return [CredentialView.of(c) for c in await uow.credentials.list(account.id, kind=kind)]

    async def revoke(self, address: str, name: str, *, actor: str, kind: str | None = None) -> int:
        """Revoke every live credential of the account named ``name`` (of ``kind``); how many were."""
        now = self.ctx.clock()
        async with self.ctx.uow() as uow:
            account = await self._account(uow, address)
            rows = [
                c
                for c in await uow.credentials.list(account.id, kind=kind)
                if (c.name == name or (c.app is not None and c.app == name)) and _live(c, now)
            ]
            if not rows:
                raise InvalidCredential(f"{account.address} has no live credential named {name!r}")
            for c in rows:
                c.revoked_at = now
                uow.audit(actor, f"{c.kind}.revoke", f"{account.owner_id}/credential:{c.id}", "ok", name)
            await uow.commit()
        return len(rows)

    async def check(self, uow: UnitOfWork, account: Account, password: str, protocol: str) -> Verdict:
        """At login: does ``password`` name a live app credential of ``account`` for ``protocol``?"""
        if not looks_like_app_password(password):
            return NOT_APP_PASSWORD
        digest = credential_key(self.ctx).app_password_digest(password)
        row = await uow.credentials.by_digest(digest)
        if row is None or row.account_id != account.id or not hmac.compare_digest(row.digest, digest):
            return NOT_APP_PASSWORD
        now = self.ctx.clock()
        if row.revoked_at is not None:
            return Verdict(None, "revoked")
        if row.expires_at is not None and now >= row.expires_at:
            return Verdict(None, "expired")
        if protocol not in row.protocols.split(","):
            return Verdict(None, "out-of-scope")
        return Verdict(_scope(row), "ok")

    async def used(self, scope: Scope) -> None:
        """Record a login through ``scope`` (``last_used_at``)."""
        async with self.ctx.uow() as uow:
            await uow.credentials.touch(scope.credential_id, self.ctx.clock())
            await uow.commit()

    async def still_valid(self, scope: Scope) -> bool:
        """Whether a session opened through ``scope`` may go on: not revoked, not expired, account active."""
        async with self.ctx.uow(readonly=True) as uow:
            row = await uow.credentials.get(scope.credential_id)
            if row is None or not _live(row, self.ctx.clock()):
                return False
            account = await uow.accounts.get(row.account_id)
        return account is not None and account.status is AccountStatus.ACTIVE
