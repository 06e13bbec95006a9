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
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

from crypto.passwords import verify_password
from directory.addresses import Address
from directory.errors import InvalidAddress
from mailserver import metrics
from mailserver.context import Context
from mailserver.store.models import Account, AccountStatus

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
class AuthResult:
    account: Account | None

    @property
    def ok(self) -> bool:
        return self.account is not None


class Authenticator:
    def __init__(self, ctx: Context, throttle: LoginThrottle | None = None) -> None:
        self.ctx = ctx
        self.throttle = throttle or LoginThrottle()

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
        if canonical.isprintable():  # no address holds a control character (and PostgreSQL text cannot hold NUL)
            async with self.ctx.uow(readonly=True) as uow:
                account = await uow.accounts.by_address(canonical)
        stored = account.password_hash if account is not None else None
        matches = await asyncio.to_thread(verify_password, password, stored)
        ok = account is not None and matches and account.status is AccountStatus.ACTIVE
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
            await uow.commit()
        if ok:
            self.throttle.success(keys[0])
            return AuthResult(account)
        self.throttle.failure(*keys)
        metrics.LOGIN_FAILURES.labels(protocol, why).inc()
        return AuthResult(None)
