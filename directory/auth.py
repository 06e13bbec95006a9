"""Authentication for every door (IMAP LOGIN/AUTHENTICATE, SMTP AUTH, the web service), rate-limited and audited.

Invariants:
- Only an ``active`` account with a password may log in; the answer to a
  client never says which of address, password or status was wrong.
- Every attempt is audited (actor = the address tried, outcome ok/fail, the
  protocol and the peer address as detail; never the password).
- Every attempt (password, app password, bearer token, certificate) goes
  through ``directory.limits.LoginLimits`` first (one ``guard`` call at the
  start, one ``record`` at the end): failures are counted per account and per
  source address, shared by every door (one ``Authenticator`` per process) and,
  on PostgreSQL, every process; past a threshold an attempt is refused at once
  for a growing window (``AuthResult.refusal`` says so), never slept on. A
  refused attempt is not checked (and so not audited as a login; the lockout
  that caused it is).
- A success keeps the account's last login (``account_activity``, for
  ``masante-admin retention inactive``), in the audit's transaction, to the
  minute: it is written when the stored one is ``LAST_LOGIN_EVERY`` old, or
  older than the inactivity warning (so a login after a warning voids it at
  once). The account and its activity are read in one statement
  (``AccountRepository.for_login``).
- A login that needs no memory-hard hash (a pair the cache holds, an app
  password) is one unit of work: read, check and audit, one commit (the
  counters settled after it, ``LoginLimits.record``). If
  the row read no longer backs the cache entry, that unit leaves without
  committing and the ordinary path (read, hash in a thread, write) decides.
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
- Bearer tokens (``authenticate_bearer``) and client certificates
  (``authenticate_certificate``) take the same limits and the same audit
  row (``login``, the detail naming the method); a token is never audited,
  logged or remembered, a certificate is named by its SHA-256 fingerprint. A
  token opens only a mailbox of the professional it names: a PER or ORG
  account whose ``rpps`` is the token's (ORG mailboxes are created for their
  responsible professional: the model has no other membership). A certificate
  opens only an APP or ORG account it is bound to.
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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from crypto.credentials import looks_like_app_password
from crypto.passwords import verify_password
from crypto.tls import certificate_facts
from directory.addresses import Address
from directory.app_passwords import NOT_APP_PASSWORD, AppPasswords, Scope, Verdict
from directory.certificates import CERTIFICATE_KINDS
from directory.errors import InvalidAddress
from directory.limits import Attempt, LoginLimits
from directory.oauth import BearerRefused, BearerVerifier, OauthSettings
from mailserver import metrics
from mailserver.context import Context
from mailserver.store.models import Account, AccountKind, AccountStatus
from mailserver.store.repositories.accounts import LoginFacts

if TYPE_CHECKING:
    from mailserver.store.uow import UnitOfWork

#: a login writes the account's last login only when the one stored is older than this (or older than the
#: inactivity warning): it is kept to the minute, not to the second (``mailserver.inactivity`` counts days)
LAST_LOGIN_EVERY = dt.timedelta(minutes=1)


def last_login_due(last: dt.datetime | None, warned: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether a login at ``now`` writes ``account_activity.last_login_at`` (see ``LAST_LOGIN_EVERY``)."""
    if last is None or not last <= now < last + LAST_LOGIN_EVERY:
        return True  # never written, a minute old, or from a clock that has since gone back
    return warned is not None and warned > last  # a login after the warning voids it: say so now


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

    def knows(self, address: str, password: str) -> bool:
        """True if this pair has an unexpired entry (a hint: only ``hit`` against the account row counts)."""
        if not self.enabled:
            return False
        entry = self._entries.get(self._name(address, password))
        return entry is not None and self.clock() < entry.expires

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
        settings = OauthSettings.from_config(ctx.config)
        #: None when ``[oauth]`` is not configured (XOAUTH2 and OAUTHBEARER are then not offered)
        self.bearer = BearerVerifier(settings, ctx.clock) if settings is not None else None
        self.app_passwords = AppPasswords(ctx)

    async def authenticate(self, address: str, password: str, *, protocol: str, peer: str) -> AuthResult:
        canonical = _canonical(address)
        attempt = await self.limits.guard(canonical, peer=peer, protocol=protocol)
        if attempt.refusal is not None:
            return AuthResult(None, refusal=attempt.refusal)
        # no address holds a control character (and PostgreSQL text cannot hold NUL)
        lookup = canonical.isprintable()
        if lookup and (self.cache.knows(canonical, password) or looks_like_app_password(password)):
            # no memory-hard hash to wait for (a pair verified lately, or an app password's keyed hash): the
            # account read, the check and the audit in one unit of work, one round of the writer
            async with self.ctx.uow() as uow:
                found = await uow.accounts.for_login(canonical)
                verdict = await self._app_password(uow, found, password, protocol)
                matches = self._quick_match(canonical, password, found, verdict)
                if matches is not None:
                    ok, why = await self._settle(
                        uow, attempt, canonical, password, found, verdict, matches, protocol, peer
                    )
                    await uow.commit()
                    await self.limits.record(attempt, ok, account=found.account if found is not None else None)
                    return self._result(ok, why, found, verdict, protocol)
            # the hash decides (the cache entry no longer holds, the account is not active...): nothing was
            # written, the unit left without committing; the ordinary path below, which audits the attempt
        found, verdict = None, NOT_APP_PASSWORD
        if lookup:
            async with self.ctx.uow(readonly=True) as uow:
                found = await uow.accounts.for_login(canonical)
                verdict = await self._app_password(uow, found, password, protocol)
        matches = self._quick_match(canonical, password, found, verdict)
        if matches is None:
            stored = found.account.password_hash if found is not None else None
            matches = await asyncio.to_thread(verify_password, password, stored)
        async with self.ctx.uow() as uow:
            ok, why = await self._settle(uow, attempt, canonical, password, found, verdict, matches, protocol, peer)
            await uow.commit()
        await self.limits.record(attempt, ok, account=found.account if found is not None else None)
        return self._result(ok, why, found, verdict, protocol)

    async def _app_password(self, uow: UnitOfWork, found: LoginFacts | None, password: str, protocol: str) -> Verdict:
        if found is None:
            return NOT_APP_PASSWORD
        return await self.app_passwords.check(uow, found.account, password, protocol)

    def _quick_match(self, canonical: str, password: str, found: LoginFacts | None, verdict: Verdict) -> bool | None:
        """Whether ``password`` opens the account, when that is known without the memory-hard hash (None: run it)."""
        if verdict is not NOT_APP_PASSWORD:  # one of this account's app credentials: its verdict, no hash
            return verdict.scope is not None
        if found is None or found.account.status is not AccountStatus.ACTIVE:
            return None  # the hash runs for an unknown or inactive account too: its answer takes as long
        if self.cache.hit(canonical, password, found.account):
            return True  # verified against this very stored hash less than a TTL ago
        return None

    def _second_factor(self, account: Account, verdict: Verdict, protocol: str) -> bool:
        """A patient's account password does not open IMAP with ``[security] patient_second_factor``."""
        return (
            verdict.scope is None
            and protocol == "imap"
            and account.kind is AccountKind.PATIENT
            and self.ctx.config.security.patient_second_factor
        )

    async def _settle(
        self,
        uow: UnitOfWork,
        attempt: Attempt,
        canonical: str,
        password: str,
        found: LoginFacts | None,
        verdict: Verdict,
        matches: bool,
        protocol: str,
        peer: str,
    ) -> tuple[bool, str]:
        """The outcome of a checked attempt, recorded in ``uow`` (the caller commits, then ``limits.record``s it):
        audit, activity."""
        account = found.account if found is not None else None
        active = account is not None and account.status is AccountStatus.ACTIVE
        ok = account is not None and matches and active
        second_factor = ok and account is not None and self._second_factor(account, verdict, protocol)
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
        uow.audit(
            canonical,
            "login",
            account.owner_id if account else f"address:{canonical}",
            "ok" if ok else "fail",
            f"{protocol} from {peer}; {why}",
        )
        now = self.ctx.clock()
        if ok and verdict.scope is not None:
            await uow.credentials.touch(verdict.scope.credential_id, now)
        if ok and found is not None and last_login_due(found.last_login_at, found.warned_at, now):
            await uow.activity.logged_in(found.account.id, now)
        return ok, why

    @staticmethod
    def _result(ok: bool, why: str, found: LoginFacts | None, verdict: Verdict, protocol: str) -> AuthResult:
        if ok and found is not None:
            return AuthResult(found.account, verdict.scope)
        metrics.LOGIN_FAILURES.labels(protocol, why).inc()
        return AuthResult(None)

    # --- bearer tokens and client certificates ------------------------------------------------------------------

    async def _record(
        self,
        ok: bool,
        attempt: Attempt,
        account: Account | None,
        actor: str,
        detail: str,
        why: str,
        protocol: str,
        found: LoginFacts | None = None,
    ) -> AuthResult:
        async with self.ctx.uow() as uow:
            uow.audit(
                actor,
                "login",
                account.owner_id if account is not None else f"address:{actor}",
                "ok" if ok else "fail",
                f"{detail}; {why}",
            )
            now = self.ctx.clock()
            # ``found``: the account's row as read for this attempt, with its activity (None: write it)
            last, warned = (found.last_login_at, found.warned_at) if found is not None else (None, None)
            if ok and account is not None and last_login_due(last, warned, now):
                await uow.activity.logged_in(account.id, now)
            await uow.commit()
        await self.limits.record(attempt, ok, account=account)
        if ok:
            return AuthResult(account)
        metrics.LOGIN_FAILURES.labels(protocol, why).inc()
        return AuthResult(None)

    async def authenticate_bearer(self, token: str, authzid: str, *, protocol: str, peer: str) -> AuthResult:
        """A JWT bearer token (XOAUTH2, OAUTHBEARER) for the mailbox ``authzid``; see the module's rules."""
        canonical = _canonical(authzid)
        attempt = await self.limits.guard(canonical or None, peer=peer, protocol=protocol)
        if attempt.refusal is not None:
            return AuthResult(None, refusal=attempt.refusal)
        account: Account | None = None
        found: LoginFacts | None = None
        who = ""
        if self.bearer is None:
            why = "oauth-off"
        elif not canonical:
            why = "no-mailbox-named"
        else:
            try:
                identity = await self.bearer.verify(token)
            except BearerRefused as refused:
                why = refused.reason
            else:
                who = f"; professional {identity.national_id}"
                if canonical.isprintable():
                    async with self.ctx.uow(readonly=True) as uow:
                        found = await uow.accounts.for_login(canonical)
                    account = found.account if found is not None else None
                why = _bearer_refusal(account, identity.rpps)
        ok = why == "ok" and account is not None
        return await self._record(
            ok, attempt, account, canonical, f"{protocol} from {peer}; bearer{who}", why, protocol, found
        )

    async def authenticate_certificate(
        self, der: bytes | None, authzid: str, *, protocol: str, peer: str
    ) -> AuthResult:
        """SASL EXTERNAL: the TLS client certificate ``der`` (verified by the handshake against the account
        CA) opens the APP or ORG account it is bound to; ``authzid`` names it when several are."""
        canonical = _canonical(authzid)
        attempt = await self.limits.guard(canonical or None, peer=peer, protocol=protocol)
        if attempt.refusal is not None:
            return AuthResult(None, refusal=attempt.refusal)
        account: Account | None = None
        fingerprint = ""
        if der is None:
            why = "no-certificate"
        else:
            facts = certificate_facts(der)
            fingerprint = f"; sha256 {facts.fingerprint}"
            async with self.ctx.uow(readonly=True) as uow:
                bindings = await uow.certificates.by_fingerprint(facts.fingerprint)
                accounts = [a for a in [await uow.accounts.get(b.account_id) for b in bindings] if a is not None]
            if canonical:
                account = next((a for a in accounts if a.address == canonical), None)
            elif len(accounts) == 1:
                account = accounts[0]
            why = (
                "unbound-certificate"
                if not accounts
                else "no-mailbox-named"
                if account is None and not canonical and len(accounts) > 1
                else "not-bound-to-account"
                if account is None
                else f"kind-{account.kind.value}"
                if account.kind not in CERTIFICATE_KINDS
                else f"status-{account.status.value}"
                if account.status is not AccountStatus.ACTIVE
                else "ok"
            )
        ok = why == "ok" and account is not None
        actor = account.address if account is not None else canonical or "certificate"
        return await self._record(
            ok, attempt, account, actor, f"{protocol} from {peer}; certificate{fingerprint}", why, protocol
        )


#: the kinds of mailbox a professional's token opens
BEARER_KINDS = frozenset({AccountKind.PER, AccountKind.ORG})


def _canonical(address: str) -> str:
    try:
        return str(Address.parse(address))
    except InvalidAddress:
        return address.strip().lower()[:320]


def _bearer_refusal(account: Account | None, rpps: str) -> str:
    if account is None:
        return "unknown-account"
    if account.kind not in BEARER_KINDS:
        return f"kind-{account.kind.value}"
    if account.rpps != rpps:
        return "not-owner"
    if account.status is not AccountStatus.ACTIVE:
        return f"status-{account.status.value}"
    return "ok"
