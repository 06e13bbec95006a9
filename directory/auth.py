"""Password authentication for every door (IMAP LOGIN/AUTHENTICATE, SMTP AUTH), rate-limited and audited.

Invariants:
- Only an ``active`` account with a password may log in; the answer to a
  client never says which of address, password or status was wrong.
- Every attempt is audited (actor = the address tried, outcome ok/fail, the
  protocol and the peer address as detail; never the password).
- Every attempt goes through ``directory.limits.LoginLimits`` first (one guard
  call at the start, one ``record`` at the end): failures are counted per
  account and per source address in the store, shared by every door and every
  process; past a threshold an attempt is refused at once for a growing window
  (``AuthResult.refusal`` says so), never slept on. A refused attempt is not
  checked (and so not audited as a login; the lockout that caused it is).
- A success keeps the account's last login (``account_activity``, for
  ``masante-admin retention inactive``), in the audit's transaction.
- The memory-hard hash runs in a worker thread, not on the event loop.
- Verified credentials are remembered for a short while (``security.auth_cache_ttl``
  seconds on the context's clock, ``security.auth_cache_size`` entries at most),
  as Dovecot's ``auth_cache``: a client that reconnects every minute pays the
  hash once. An entry is keyed by HMAC-SHA256(per-process random key, address
  NUL password), so the table holds no password, and maps to the account id
  and a digest of the stored password hash. A hit counts only if the account
  row, read at every login anyway, still has that hash and is ``active``: a
  changed password, a disabled, suspended, opposed or closed account is refused
  at once, with no call from the services that change them. Failures are
  never remembered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crypto.passwords import verify_password
from directory.addresses import Address
from directory.errors import InvalidAddress
from directory.limits import LoginLimits
from mailserver import metrics
from mailserver.context import Context
from mailserver.store.models import Account, AccountStatus


@dataclass(frozen=True, slots=True)
class _Verified:
    account_id: int
    stored_digest: bytes  # SHA-256 of the stored password hash that verified
    expires: dt.datetime


def _digest(stored: str) -> bytes:
    return hashlib.sha256(stored.encode()).digest()


class CredentialCache:
    """Verified (address, password) pairs, by keyed hash, for ``ttl`` seconds of ``clock``, LRU-bounded."""

    def __init__(self, *, ttl: float, size: int, clock: Callable[[], dt.datetime]) -> None:
        self.ttl, self.size, self.clock = dt.timedelta(seconds=ttl), size, clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[bytes, _Verified] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.size > 0 and self.ttl > dt.timedelta(0)

    def _name(self, address: str, password: str) -> bytes:
        return hmac.new(self._key, f"{address}\0{password}".encode(), hashlib.sha256).digest()

    def hit(self, address: str, password: str, account: Account) -> bool:
        """True if this pair verified against the account's current password hash less than ``ttl`` ago."""
        if not self.enabled or account.password_hash is None:
            return False
        name = self._name(address, password)
        entry = self._entries.get(name)
        if entry is None:
            return False
        if self.clock() >= entry.expires or entry.account_id != account.id:
            del self._entries[name]
            return False
        if not hmac.compare_digest(entry.stored_digest, _digest(account.password_hash)):
            del self._entries[name]  # the password changed since
            return False
        self._entries.move_to_end(name)
        return True

    def remember(self, address: str, password: str, account: Account) -> None:
        if not self.enabled or account.password_hash is None:
            return
        name = self._name(address, password)
        self._entries[name] = _Verified(account.id, _digest(account.password_hash), self.clock() + self.ttl)
        self._entries.move_to_end(name)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def forget(self, address: str, password: str) -> None:
        self._entries.pop(self._name(address, password), None)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True, slots=True)
class AuthResult:
    account: Account | None
    #: set when the attempt was refused unchecked by a lockout: the sentence for the client
    #: (IMAP ``NO [UNAVAILABLE]``, SMTP ``454 4.7.0``)
    refusal: str | None = None

    @property
    def ok(self) -> bool:
        return self.account is not None


class Authenticator:
    """One per process (``mailserver.app.build_services``), handed to every door: one set of limits."""

    def __init__(self, ctx: Context, limits: LoginLimits | None = None, cache: CredentialCache | None = None) -> None:
        self.ctx = ctx
        self.limits = limits if limits is not None else LoginLimits(ctx)
        security = ctx.config.security
        if cache is None:  # not ``or``: an empty cache is falsy (it has a length)
            cache = CredentialCache(ttl=security.auth_cache_ttl, size=security.auth_cache_size, clock=ctx.clock)
        self.cache = cache

    async def authenticate(self, address: str, password: str, *, protocol: str, peer: str) -> AuthResult:
        try:
            canonical = str(Address.parse(address))
        except InvalidAddress:
            canonical = address.strip().lower()[:320]
        attempt = await self.limits.guard(canonical, peer=peer, protocol=protocol)
        if attempt.refusal is not None:
            return AuthResult(None, refusal=attempt.refusal)
        account = None
        if canonical.isprintable():  # no address holds a control character (and PostgreSQL text cannot hold NUL)
            async with self.ctx.uow(readonly=True) as uow:
                account = await uow.accounts.by_address(canonical)
        active = account is not None and account.status is AccountStatus.ACTIVE
        if account is not None and active and self.cache.hit(canonical, password, account):
            matches = True  # verified against this very stored hash less than a TTL ago
        else:
            stored = account.password_hash if account is not None else None
            matches = await asyncio.to_thread(verify_password, password, stored)
        ok = account is not None and matches and active
        if account is not None:
            if ok:
                self.cache.remember(canonical, password, account)
            else:
                self.cache.forget(canonical, password)
        why = (
            "ok"
            if ok
            else (
                "unknown-account"
                if account is None
                else "bad-password"
                if not matches
                else f"status-{account.status.value}"
            )
        )
        async with self.ctx.uow() as uow:
            uow.audit(
                canonical,
                "login",
                account.owner_id if account else f"address:{canonical}",
                "ok" if ok else "fail",
                f"{protocol} from {peer}; {why}",
            )
            if ok and account is not None:
                await uow.activity.logged_in(account.id, self.ctx.clock())
            await self.limits.record(attempt, ok, account=account, uow=uow)
            await uow.commit()
        if ok:
            return AuthResult(account)
        metrics.LOGIN_FAILURES.labels(protocol, why).inc()
        return AuthResult(None)
