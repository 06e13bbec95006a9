"""The verified-credential cache (Dovecot's auth_cache): a second login with the same password skips
scrypt; a changed password, a disabled, suspended or closed account is refused at once even with a
warm cache; an entry lives ``security.auth_cache_ttl`` seconds of the context's clock; failures are
never remembered; the table is bounded."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import pytest

import directory.auth
from crypto.passwords import verify_password
from directory.accounts import AccountService
from directory.auth import Authenticator, CredentialCache
from mailserver.context import Context
from mailserver.store.models import AccountStatus
from tests import support

NOW = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock(ctx: Context) -> Clock:
    c = Clock()
    ctx.clock = c
    return c


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each run of the real scrypt verification, with its answer."""
    calls: list[bool] = []

    def counting(password: str, stored: str | None) -> bool:
        calls.append(verify_password(password, stored))
        return calls[-1]

    monkeypatch.setattr(directory.auth, "verify_password", counting)
    return calls


def _auth(ctx: Context) -> Authenticator:
    return Authenticator(ctx)


async def _login(auth: Authenticator, address: str, password: str = support.PASSWORD) -> bool:
    return (await auth.authenticate(address, password, protocol="imap", peer="127.0.0.1")).ok


async def test_second_login_skips_the_hash_and_is_still_audited(
    ctx: Context, clock: Clock, verifications: list[bool]
) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = _auth(ctx)
    assert await _login(auth, pro.address)
    assert verifications == [True]
    clock.now += dt.timedelta(seconds=ctx.config.security.auth_cache_ttl - 1)
    assert await _login(auth, pro.address.upper())  # the same canonical address
    assert verifications == [True]
    async with ctx.uow(readonly=True) as uow:
        logins = [e for e in await uow.audit_log.tail(10) if e.action == "login"]
    assert [e.outcome for e in logins] == ["ok", "ok"]


async def test_entry_expires_on_the_injected_clock(ctx: Context, clock: Clock, verifications: list[bool]) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = _auth(ctx)
    assert await _login(auth, pro.address)
    clock.now += dt.timedelta(seconds=ctx.config.security.auth_cache_ttl)
    assert await _login(auth, pro.address)
    assert verifications == [True, True]
    assert await _login(auth, pro.address)  # warm again, for a new TTL
    assert verifications == [True, True]


async def test_a_changed_password_is_refused_at_once(ctx: Context, clock: Clock, verifications: list[bool]) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = _auth(ctx)
    assert await _login(auth, pro.address)
    await AccountService(ctx).set_password(pro.address, "a new passphrase", actor="t")
    assert not await _login(auth, pro.address)  # the old password, cache warm
    assert verifications == [True, False]
    assert await _login(auth, pro.address, "a new passphrase")


async def _disable(ctx: Context, address: str) -> None:
    await AccountService(ctx).set_status(address, AccountStatus.DISABLED, actor="t")


async def _suspend(ctx: Context, address: str) -> None:
    await AccountService(ctx).set_status(address, AccountStatus.SUSPENDED, actor="t")


async def _close(ctx: Context, address: str) -> None:
    await AccountService(ctx).close(address, actor="t")


@pytest.mark.parametrize("change", [_disable, _suspend, _close], ids=["disabled", "suspended", "closed"])
async def test_an_account_no_longer_active_is_refused_at_once(
    ctx: Context, clock: Clock, verifications: list[bool], change: Callable[[Context, str], Awaitable[None]]
) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = _auth(ctx)
    assert await _login(auth, pro.address)
    await change(ctx, pro.address)
    assert not await _login(auth, pro.address)
    # the warm path saw the account no longer active and left without writing: the refusal audited once
    async with ctx.uow(readonly=True) as uow:
        logins = [e for e in await uow.audit_log.tail(20) if e.action == "login"]
    assert [e.outcome for e in logins] == ["ok", "fail"]
    assert logins[-1].detail is not None and "; status-" in logins[-1].detail
    if change is not _close:  # back to active: the cache was dropped, scrypt runs again
        await AccountService(ctx).set_status(pro.address, AccountStatus.ACTIVE, actor="t")
        assert await _login(auth, pro.address)
        assert verifications[-1] is True and len(verifications) == 3


async def test_failures_are_never_remembered(ctx: Context, clock: Clock, verifications: list[bool]) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = _auth(ctx)
    assert not await _login(auth, pro.address, "wrong")
    assert not await _login(auth, pro.address, "wrong")
    assert verifications == [False, False]
    assert len(auth.cache) == 0


async def test_the_cache_is_bounded_and_can_be_off(ctx: Context, clock: Clock, verifications: list[bool]) -> None:
    await support.add_domains(ctx)
    pros = [await support.make_pro(ctx, f"dr.{n}") for n in ("a", "b", "c")]
    auth = Authenticator(ctx, cache=CredentialCache(ttl=60, size=2, clock=clock))
    for pro in pros:
        assert await _login(auth, pro.address)
    assert len(auth.cache) == 2
    assert await _login(auth, pros[0].address)  # the least recently used was forgotten
    assert len(verifications) == 4
    off = Authenticator(ctx, cache=CredentialCache(ttl=0, size=2, clock=clock))
    assert await _login(off, pros[1].address) and await _login(off, pros[1].address)
    assert len(verifications) == 6 and len(off.cache) == 0


def test_the_table_holds_no_password() -> None:
    cache = CredentialCache(ttl=60, size=10, clock=Clock())
    other = CredentialCache(ttl=60, size=10, clock=Clock())
    # keyed per process: the same pair names two different entries in two caches
    assert cache._name("a@b.test", "pw") != other._name("a@b.test", "pw")  # noqa: SLF001
    assert b"pw" not in cache._name("a@b.test", "pw")  # noqa: SLF001
