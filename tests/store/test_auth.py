"""Password login: only active accounts, every attempt audited, failures lock the next attempts out
(at once, not slept on: ``directory.limits``)."""

from __future__ import annotations

from directory.accounts import AccountService
from directory.auth import Authenticator
from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.store.models import AccountStatus, AuditEntry
from tests import support


async def test_login_succeeds_and_fails_and_is_audited(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = Authenticator(ctx)
    ok = await auth.authenticate(pro.address.upper(), support.PASSWORD, protocol="imap", peer="127.0.0.1")
    assert ok.ok and ok.account is not None and ok.account.id == pro.id
    bad = await auth.authenticate(pro.address, "wrong", protocol="imap", peer="127.0.0.1")
    unknown = await auth.authenticate("nobody@hopital.test", "x", protocol="smtp", peer="127.0.0.2")
    assert not bad.ok and not unknown.ok
    async with ctx.uow(readonly=True) as uow:
        entries = [e for e in await uow.audit_log.tail(10) if e.action == "login"]
    assert [(e.outcome, e.detail) for e in entries] == [
        ("ok", "imap from 127.0.0.1; ok"),
        ("fail", "imap from 127.0.0.1; bad-password"),
        ("fail", "smtp from 127.0.0.2; unknown-account"),
    ]
    assert all(support.PASSWORD not in (e.detail or "") and "wrong" not in (e.detail or "") for e in entries)


async def test_inactive_accounts_cannot_log_in(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    await AccountService(ctx).set_status(pro.address, AccountStatus.SUSPENDED, actor="t")
    auth = Authenticator(ctx)
    assert not (await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="p")).ok


async def test_failures_lock_out_per_account_and_per_peer_and_a_success_resets_the_account(ctx: Context) -> None:
    """Replaces the sleeping throttle's test: the same keys (account, peer), now counted in the store and
    answered at once past a threshold."""
    ctx.clock = clock = FakeClock()
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = Authenticator(ctx)
    per_account = ctx.config.limits.login_failures_per_account
    for _ in range(per_account):
        assert (await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.0.0.1")).refusal is None
    # the account is locked for the address that failed on it, even with the right password
    refused = await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.0.0.1")
    assert not refused.ok and refused.refusal is not None and "try again in 1 minute" in refused.refusal
    # not for an address that never failed (its owner elsewhere)
    assert (await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.0.0.9")).ok
    # the success reset the account's count, but the failing address keeps its own
    clock.advance(ctx.config.limits.lockout_base + 1)
    assert (await auth.authenticate(pro.address, support.PASSWORD, protocol="smtp", peer="10.0.0.1")).ok
    for i in range(ctx.config.limits.login_failures_per_source):
        other = f"nobody{i}@{support.PRO_DOMAIN}"
        await auth.authenticate(other, "x", protocol="smtp", peer="10.0.0.2")
    locked = await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.0.0.2")
    assert locked.refusal is not None and "from your address" in locked.refusal  # the peer, for any account


async def test_a_locked_out_attempt_is_refused_at_once_and_not_checked(ctx: Context) -> None:
    ctx.clock = FakeClock()
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = Authenticator(ctx)
    for _ in range(ctx.config.limits.login_failures_per_account):
        await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.0.0.1")
    before = [e.seq for e in await _audit(ctx) if e.action == "login"]
    result = await auth.authenticate(pro.address, "wrong again", protocol="imap", peer="10.0.0.1")
    assert result.refusal is not None
    assert [e.seq for e in await _audit(ctx) if e.action == "login"] == before  # no password was checked


async def _audit(ctx: Context) -> list[AuditEntry]:
    async with ctx.uow(readonly=True) as uow:
        return list(await uow.audit_log.tail(100))
