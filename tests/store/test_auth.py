"""Password login: only active accounts, every attempt audited, failures slow the next attempt down."""

from __future__ import annotations

import time

from directory.accounts import AccountService
from directory.auth import Authenticator, LoginThrottle
from mailserver.context import Context
from mailserver.store.models import AccountStatus
from tests import support


async def test_login_succeeds_and_fails_and_is_audited(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = Authenticator(ctx, LoginThrottle(base=0.0))
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
    auth = Authenticator(ctx, LoginThrottle(base=0.0))
    assert not (await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="p")).ok


def test_throttle_grows_per_account_and_per_peer_and_resets_on_success() -> None:
    t = LoginThrottle(base=0.5, cap=4.0, window=60)
    assert t.delay("acct:a", "peer:1") == 0
    for _ in range(3):
        t.failure("acct:a", "peer:1")
    assert t.delay("acct:a", "peer:9") == 2.0  # the account is slowed down from anywhere
    assert t.delay("acct:z", "peer:1") == 2.0  # and the peer for any account
    for _ in range(10):
        t.failure("acct:a", "peer:1")
    assert t.delay("acct:a") == 4.0  # capped
    t.success("acct:a")
    assert t.delay("acct:a") == 0 and t.delay("peer:1") == 4.0


async def test_failed_logins_are_slowed_down(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    auth = Authenticator(ctx, LoginThrottle(base=0.3, cap=1.0))
    await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.0.0.1")
    started = time.monotonic()
    await auth.authenticate(pro.address, "wrong again", protocol="imap", peer="10.0.0.2")
    assert time.monotonic() - started >= 0.3
