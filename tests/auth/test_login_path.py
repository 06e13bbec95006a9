"""The path of a login with the credential cache warm (issue 10): one unit of work, the account read in one
statement, the last login kept to the minute (``directory.auth.LAST_LOGIN_EVERY``) and a login after an
inactivity warning recorded at once. Statements are counted at the driver (``before_cursor_execute``)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event

from directory.auth import LAST_LOGIN_EVERY, Authenticator
from mailserver.context import Context
from mailserver.store.models import Account
from tests import support


class StillClock:
    """A clock that moves only when told to, and reads the same until then (``FakeClock`` ticks at each read)."""

    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


#: statements a warm LOGIN may cost, every one counted (the limits' and the audit chain's too); before this
#: path: SQLite 9 (a read transaction, then a write one), PostgreSQL 15 (14 with the read in the unit, 13 since the
#: limits' record no longer makes its counters again, 11 since a success gives its count back in one statement
#: outside a transaction: 12 and four round trips when the record's batch locked the rows first; 10 since the
#: guard makes and locks its rows in one upsert)
BOUNDS = {"sqlite": 7, "postgresql": 10}


@contextlib.contextmanager
def statements(ctx: Context) -> Iterator[list[str]]:
    """The statements sent, and each transaction begun as ``BEGIN`` or ``BEGIN IMMEDIATE`` (on SQLite the driver
    sends it with the transaction's first statement, ``store.sqlite_driver``: counted here from the engine's
    ``begin`` event, as ``store.db`` decides it)."""
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()))

    def begun(conn: Any) -> None:
        if ctx.db.is_sqlite:
            seen.append("BEGIN" if conn.get_execution_options().get("masante_readonly", False) else "BEGIN IMMEDIATE")

    engine = ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "begin", begun)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)
        event.remove(engine, "begin", begun)


async def _login(auth: Authenticator, account: Account) -> None:
    result = await auth.authenticate(account.address, support.PASSWORD, protocol="imap", peer="10.3.0.1")
    assert result.ok and result.account is not None and result.account.id == account.id


async def _activity(ctx: Context, account: Account) -> tuple[dt.datetime | None, dt.datetime | None]:
    async with ctx.uow(readonly=True) as uow:
        row = await uow.activity.get(account.id)
    assert row is not None
    return row.last_login_at, row.warned_at


async def test_a_warm_login_is_one_unit_of_work_and_writes_no_activity_within_the_minute(ctx: Context) -> None:
    ctx.clock = clock = StillClock()
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx, "warm")
    auth = Authenticator(ctx)
    await _login(auth, pro)  # cold: the hash, then the cache holds the pair
    clock.advance(5)
    with statements(ctx) as seen:
        await _login(auth, pro)
    dialect = "postgresql" if ctx.db.is_postgresql else "sqlite"
    assert len(seen) <= BOUNDS[dialect], seen
    assert not [s for s in seen if "account_activity" in s and not s.startswith("SELECT")], seen
    assert sum(1 for s in seen if s.startswith("SELECT accounts.")) == 1, seen  # the account, read once
    if ctx.db.is_sqlite:
        assert [s for s in seen if s.startswith("BEGIN")] == ["BEGIN IMMEDIATE"], seen  # no read transaction
    async with ctx.uow(readonly=True) as uow:
        logins = [e for e in await uow.audit_log.tail(10) if e.action == "login"]
    assert [e.outcome for e in logins] == ["ok", "ok"]  # every login audited, the warm one too


async def test_the_last_login_is_kept_to_the_minute_and_a_login_after_a_warning_at_once(ctx: Context) -> None:
    ctx.clock = clock = StillClock()
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx, "minute")
    auth = Authenticator(ctx)
    first = clock()
    await _login(auth, pro)
    assert await _activity(ctx, pro) == (first, None)
    clock.advance(30)
    await _login(auth, pro)
    assert await _activity(ctx, pro) == (first, None)  # within the minute: not written again
    clock.advance(LAST_LOGIN_EVERY.total_seconds() - 30)
    later = clock()
    await _login(auth, pro)
    assert await _activity(ctx, pro) == (later, None)

    clock.advance(10)
    warned = clock()
    async with ctx.uow() as uow:
        await uow.activity.warned(pro.id, warned)
        await uow.commit()
    clock.advance(10)  # 20 s after the last login written, but after the warning: written now
    back = clock()
    await _login(auth, pro)
    assert await _activity(ctx, pro) == (back, warned)
