"""Login failure counters and account activity (``directory.limits``): rows locked for update, upserts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from mailserver.store.models import Account, AccountActivity, AccountStatus, LoginCounter
from mailserver.store.repositories.base import Repository, is_postgresql

#: a success's count given back (``directory.limits``): an address's count less the successes, an account's to zero
_GIVE_BACK = (
    update(LoginCounter)
    .where(LoginCounter.key == bindparam("k"))
    .values(failures=case((bindparam("zero"), 0), else_=func.greatest(LoginCounter.failures - bindparam("n"), 0)))
)


async def give_back(engine: AsyncEngine, counts: Sequence[tuple[str, int, bool]]) -> None:
    """PostgreSQL: successes' counts given back, ``(key, successes, to zero)`` each, in one round trip outside any
    unit of work (asyncpg's ``executemany``, atomic), the rows locked in key order as a batch of
    ``LoginCounterRepository.lock`` locks them (no wait in a cycle). A row gone (an administrator's reset) is
    left gone. An ended window or lockout is not brought to now here: the next guard does, to the same result."""
    async with engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await auto.execute(_GIVE_BACK, [{"k": k, "n": n, "zero": zero} for k, n, zero in sorted(counts)])


class _Upserts(Repository):
    def _insert(self, model: type[Any]) -> Any:
        return (postgresql.insert if is_postgresql(self.session) else sqlite.insert)(model)


class LoginCounterRepository(_Upserts):
    async def lock(self, keys: Iterable[str], *, create: Iterable[str] = ()) -> dict[str, LoginCounter]:
        """The counters of ``keys`` that exist, those of ``create`` made at zero first where missing, locked until
        the end of the transaction (``FOR UPDATE`` on PostgreSQL, in key order so that two transactions never wait
        on each other in a cycle; on SQLite the unit of work is already the only writer)."""
        made = sorted(set(create))
        ordered = sorted(set(keys) | set(made))
        if made:
            stmt = self._insert(LoginCounter).values([{"key": k, "failures": 0, "lockouts": 0} for k in made])
            if ordered == made:
                # every row made where missing, and the others locked, by the one statement (its rows in key
                # order): a round trip less than an INSERT then a SELECT ... FOR UPDATE
                upsert = stmt.on_conflict_do_update(index_elements=["key"], set_={"key": stmt.excluded.key})
                rows = await self.session.execute(select(LoginCounter).from_statement(upsert.returning(LoginCounter)))
                return {row.key: row for row in rows.scalars().all()}
            await self.session.execute(stmt.on_conflict_do_nothing(index_elements=["key"]))
        rows = await self.session.execute(
            select(LoginCounter).where(LoginCounter.key.in_(ordered)).order_by(LoginCounter.key).with_for_update()
        )
        return {row.key: row for row in rows.scalars().all()}

    async def get(self, key: str) -> LoginCounter | None:
        return await self.session.get(LoginCounter, key)

    async def prune(self, before: dt.datetime) -> int:
        """Forget counters with no failure and no lockout since ``before``; how many."""
        stmt = delete(LoginCounter).where(
            or_(LoginCounter.last_failure_at.is_(None), LoginCounter.last_failure_at < before),
            or_(LoginCounter.locked_until.is_(None), LoginCounter.locked_until < before),
            or_(LoginCounter.last_lockout_at.is_(None), LoginCounter.last_lockout_at < before),
        )
        result = await self.session.execute(stmt)
        return int(getattr(result, "rowcount", 0) or 0)

    async def clear(self) -> None:
        """Forget every counter (an administrator's reset; the tests between two cases)."""
        await self.session.execute(delete(LoginCounter))


class ActivityRepository(_Upserts):
    async def get(self, account_id: int) -> AccountActivity | None:
        return await self.session.get(AccountActivity, account_id)

    async def logged_in(self, account_id: int, at: dt.datetime) -> None:
        stmt = self._insert(AccountActivity).values(account_id=account_id, last_login_at=at)
        await self.session.execute(
            stmt.on_conflict_do_update(index_elements=["account_id"], set_={"last_login_at": at})
        )

    async def warned(self, account_id: int, at: dt.datetime) -> None:
        stmt = self._insert(AccountActivity).values(account_id=account_id, warned_at=at)
        await self.session.execute(stmt.on_conflict_do_update(index_elements=["account_id"], set_={"warned_at": at}))

    async def unused_since(self, cutoff: dt.datetime) -> Sequence[tuple[Account, AccountActivity | None]]:
        """Active accounts with no login since ``cutoff`` (never logged in: created before it), by address."""
        last = func.coalesce(AccountActivity.last_login_at, Account.created_at)
        stmt = (
            select(Account, AccountActivity)
            .outerjoin(AccountActivity, AccountActivity.account_id == Account.id)
            .where(Account.status == AccountStatus.ACTIVE, last < cutoff)
            .order_by(Account.address)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(stmt)).all()]
