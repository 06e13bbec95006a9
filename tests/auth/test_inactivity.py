"""Inactivity (issue 12 point 8): the last login is kept, unused mailboxes are listed, their owners warned by mail
once, and closed after the grace period through the one closure path. Time moves with a ``FakeClock``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import subprocess

from sqlalchemy import select

from directory.auth import Authenticator
from mailserver.bodies import read_body
from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.inactivity import CLOSED, WAITING, WARNED, Inactivity
from mailserver.store.models import Account, AccountStatus, AuditEntry, Message
from tests import support

DAY = 86400


async def _inbox(ctx: Context, account: Account) -> list[bytes]:
    async with ctx.uow(readonly=True) as uow:
        mb = await uow.mailboxes.get(account.id, "INBOX")
        assert mb is not None
        rows = (await uow.session.execute(select(Message).where(Message.mailbox_id == mb.id))).scalars().all()
        current = await uow.accounts.get(account.id)
        assert current is not None
        return [await read_body(uow, ctx.keyring, current, m) for m in rows]


async def _status(ctx: Context, account: Account) -> AccountStatus:
    async with ctx.uow(readonly=True) as uow:
        current = await uow.accounts.get(account.id)
    assert current is not None
    return current.status


async def _login(ctx: Context, account: Account) -> None:
    result = await Authenticator(ctx).authenticate(account.address, support.PASSWORD, protocol="imap", peer="10.2.0.1")
    assert result.ok


async def test_unused_mailboxes_are_warned_once_then_closed_after_the_grace_period(ctx: Context) -> None:
    ctx.clock = clock = FakeClock()
    await support.add_domains(ctx)
    never = await support.make_pro(ctx, "never")  # never logs in
    once = await support.make_pro(ctx, "once")  # logs in now, then not for a year
    busy = await support.make_pro(ctx, "busy")  # logs in every few months
    await _login(ctx, once)
    inactivity = Inactivity(ctx)

    clock.advance(200 * DAY)
    await _login(ctx, busy)
    assert await inactivity.review(days=365, actor="admin:t") == []  # nobody unused for a year yet

    clock.advance(170 * DAY)  # ``never`` and ``once``: 370 days; ``busy``: 170 days
    dry = await inactivity.review(days=365, actor="admin:t", dry_run=True)
    assert [(u.address, u.action) for u in dry] == [(never.address, WARNED), (once.address, WARNED)]
    assert await _inbox(ctx, never) == []  # a dry run changes nothing

    first = await inactivity.review(days=365, grace_days=30, actor="admin:t")
    assert [(u.address, u.action) for u in first] == [(never.address, WARNED), (once.address, WARNED)]
    assert first[0].last_login is None and first[1].last_login is not None
    warning = email.message_from_bytes((await _inbox(ctx, never))[0], policy=email.policy.default)
    assert "fermée" in str(warning["Subject"]) and warning["Auto-Submitted"] == "auto-generated"
    assert first[0].closes_on is not None and first[0].closes_on.date().isoformat() in warning.get_content()

    # once: a second run does not warn again
    clock.advance(10 * DAY)
    again = await inactivity.review(days=365, grace_days=30, actor="admin:t")
    assert [u.action for u in again] == [WAITING, WAITING]
    assert len(await _inbox(ctx, never)) == 1

    # ``once`` comes back during the grace period: no longer unused, not closed
    await _login(ctx, once)
    clock.advance(21 * DAY)
    last = await inactivity.review(days=365, grace_days=30, actor="admin:t")
    assert [(u.address, u.action) for u in last] == [(never.address, CLOSED)]
    assert await _status(ctx, never) is AccountStatus.CLOSED
    assert await _status(ctx, once) is AccountStatus.ACTIVE and await _status(ctx, busy) is AccountStatus.ACTIVE
    async with ctx.uow(readonly=True) as uow:
        await uow.audit_log.caught_up()
        rows = await uow.session.execute(select(AuditEntry).where(AuditEntry.object_id == never.owner_id))
        actions = [e.action for e in rows.scalars().all()]
    assert actions.count("account.inactivity-warning") == 1 and actions.count("account.close") == 1

    # a year after its last login, ``once`` is warned again (the old warning was voided by the login)
    clock.advance(366 * DAY)
    later = await inactivity.review(days=365, grace_days=30, actor="admin:t")
    assert (once.address, WARNED) in [(u.address, u.action) for u in later]
    assert len(await _inbox(ctx, once)) == 2


async def test_the_command_lists_warns_and_says_so(ctx: Context, config: support.Config) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx, "idle")
    config.path.write_text(config.to_toml())
    env = {k: v for k, v in support.audit_env(config).items() if not k.startswith("MASANTE_CONFIG")}

    async def admin(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(support.run_admin, *args, config=config.path, env=env)

    dry = await admin("retention", "inactive", "--days", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert pro.address in dry.stdout and "would be warned" in dry.stdout and "never" in dry.stdout
    assert await _inbox(ctx, pro) == []
    done = await admin("retention", "inactive", "--days", "0", "--grace-days", "30")
    assert done.returncode == 0, done.stderr
    assert "warned / waiting / closed: 1 / 0 / 0" in done.stdout
    assert len(await _inbox(ctx, pro)) == 1
    bad = await admin("retention", "inactive", "--days", "-1")
    assert bad.returncode != 0 and "-1" in bad.stderr
