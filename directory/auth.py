"""Password authentication for every door (IMAP LOGIN/AUTHENTICATE, SMTP AUTH), throttled and audited.

Invariants:
- Only an ``active`` account with a password may log in; the answer to a
  client never says which of address, password or status was wrong.
- Every attempt is audited (actor = the address tried, outcome ok/fail, the
  protocol and the peer address as detail; never the password).
- Failures slow the next attempt down, per account and per peer address:
  ``BASE_DELAY * 2**(failures-1)`` up to ``MAX_DELAY``; they are forgotten after
  ``WINDOW`` seconds, and an account's count after a success.
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
- An app password (``directory.app_passwords``) is tried before the password
  hash: a keyed-hash lookup, no memory-hard hash. A hit gives ``AuthResult.scope``
  (its protocols, folders, read-only flag), which the door keeps for the
  session; a revoked, expired or out-of-scope one fails without trying the
  account password. ``scope`` None is the whole account (the password).
- With ``[security] patient_second_factor`` a patient's account password does
  not open IMAP (audited ``second-factor-required``): only an app password,
  from the enrolment page, does.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crypto.passwords import verify_password
from directory.addresses import Address
from directory.app_passwords import NOT_APP_PASSWORD, AppPasswords, Scope
from directory.errors import InvalidAddress
from mailserver import metrics
from mailserver.context import Context
from mailserver.store.models import Account, AccountKind, AccountStatus

BASE_DELAY = 0.5
MAX_DELAY = 8.0
WINDOW = 15 * 60
MAX_TRACKED = 100_000


class LoginThrottle:
    """Failure counts per key (``acct:<address>``, ``peer:<ip>``), bounded in memory."""

    def __init__(self, *, base: float = BASE_DELAY, cap: float = MAX_DELAY, window: float = WINDOW) -> None:
        self.base, self.cap, self.window = base, cap, window
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def _count(self, key: str, now: float) -> int:
        entry = self._failures.get(key)
        if entry is None:
            return 0
        count, last = entry
        if now - last > self.window:
            del self._failures[key]
            return 0
        return count

    def delay(self, *keys: str) -> float:
        now = time.monotonic()
        worst = max((self._count(k, now) for k in keys), default=0)
        return 0.0 if worst == 0 else min(self.cap, self.base * 2 ** (worst - 1))

    def failure(self, *keys: str) -> None:
        now = time.monotonic()
        for k in keys:
            self._failures[k] = (self._count(k, now) + 1, now)
            self._failures.move_to_end(k)
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def success(self, key: str) -> None:
        self._failures.pop(key, None)


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
    scope: Scope | None = None  # None: the whole account; else what the app credential allows

    @property
    def ok(self) -> bool:
        return self.account is not None


class Authenticator:
    def __init__(
        self, ctx: Context, throttle: LoginThrottle | None = None, cache: CredentialCache | None = None
    ) -> None:
        self.ctx = ctx
        self.throttle = throttle or LoginThrottle()
        security = ctx.config.security
        if cache is None:  # not ``or``: an empty cache is falsy (it has a length)
            cache = CredentialCache(ttl=security.auth_cache_ttl, size=security.auth_cache_size, clock=ctx.clock)
        self.cache = cache
        self.app_passwords = AppPasswords(ctx)

    async def authenticate(self, address: str, password: str, *, protocol: str, peer: str) -> AuthResult:
        try:
            canonical = str(Address.parse(address))
        except InvalidAddress:
            canonical = address.strip().lower()[:320]
        keys = (f"acct:{canonical}", f"peer:{peer}")
        delay = self.throttle.delay(*keys)
        if delay:
            await asyncio.sleep(delay)
        account = None
        verdict = NOT_APP_PASSWORD
        if canonical.isprintable():  # no address holds a control character (and PostgreSQL text cannot hold NUL)
            async with self.ctx.uow(readonly=True) as uow:
                account = await uow.accounts.by_address(canonical)
                if account is not None:
                    verdict = await self.app_passwords.check(uow, account, password, protocol)
        active = account is not None and account.status is AccountStatus.ACTIVE
        if verdict is not NOT_APP_PASSWORD:  # one of this account's app credentials: its verdict, no hash
            matches = verdict.scope is not None
        elif account is not None and active and self.cache.hit(canonical, password, account):
            matches = True  # verified against this very stored hash less than a TTL ago
        else:
            stored = account.password_hash if account is not None else None
            matches = await asyncio.to_thread(verify_password, password, stored)
        ok = account is not None and matches and active
        second_factor = (
            ok
            and verdict.scope is None
            and protocol == "imap"
            and account is not None
            and account.kind is AccountKind.PATIENT
            and self.ctx.config.security.patient_second_factor
        )
        ok = ok and not second_factor
        if account is not None:
            if ok or second_factor:
                if verdict.scope is None:
                    self.cache.remember(canonical, password, account)
            else:
                self.cache.forget(canonical, password)
        why = (
            "ok"
            if ok
            else (
                "unknown-account"
                if account is None
                else f"app-password-{verdict.why}"
                if verdict.scope is None and verdict is not NOT_APP_PASSWORD
                else "bad-password"
                if not matches
                else "second-factor-required"
                if second_factor
                else f"status-{account.status.value}"
            )
        )
        if ok and verdict.scope is not None:
            why = f"ok; via {verdict.scope.label}"
        async with self.ctx.uow() as uow:
            uow.audit(
                canonical,
                "login",
                account.owner_id if account else f"address:{canonical}",
                "ok" if ok else "fail",
                f"{protocol} from {peer}; {why}",
            )
            if ok and verdict.scope is not None:
                await uow.credentials.touch(verdict.scope.credential_id, self.ctx.clock())
            await uow.commit()
        if ok:
            self.throttle.success(keys[0])
            return AuthResult(account, verdict.scope)
        self.throttle.failure(*keys)
        metrics.LOGIN_FAILURES.labels(protocol, why).inc()
        return AuthResult(None)
