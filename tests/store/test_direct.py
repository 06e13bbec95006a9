"""Statements sent straight to the driver (``store.direct``: asyncpg, the project's SQLite driver) behave as the
session's own: same rows, same transaction, same errors, heard by the engine's listeners."""

from __future__ import annotations

import pytest
from sqlalchemy import bindparam, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from directory.accounts import AccountService
from mailserver.context import Context
from mailserver.store import direct
from mailserver.store.db import ReadOnlyViolation
from mailserver.store.models import AccountKind, DomainKind, Mailbox
from mailserver.store.models.base import utcnow
from mailserver.store.retry import sqlstate
from tests import support
from tests.harness.statements import listening

_mb = Mailbox.__table__
#: an expanding IN, a value bound in the statement itself, and a NOT IN
_BOXES = (
    select(_mb.c.id, _mb.c.account_id, _mb.c.uidnext)
    .where(_mb.c.account_id.in_(bindparam("accounts", expanding=True)))
    .where(_mb.c.uidnext >= 1)
    .where(_mb.c.id.not_in(bindparam("not_these", expanding=True)))
    .order_by(_mb.c.id)
)
_COUNT = select(func.count()).select_from(_mb).where(_mb.c.account_id == bindparam("account_id"))
_COLUMNS = ("account_id", "name_digest", "name_sealed", "uidvalidity", "uidnext", "highestmodseq", "first_recent_uid")
_ADD = insert(_mb).values({name: bindparam(name) for name in (*_COLUMNS, "subscribed", "created_at")})


async def accounts(ctx: Context) -> list[int]:
    svc = AccountService(ctx)
    await svc.add_domain(support.PRO_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    ids = []
    for name in ("dr.a", "dr.b"):
        account = await svc.create(f"{name}@{support.PRO_DOMAIN}", AccountKind.PER, actor="test")
        ids.append(account.id)
    return ids


async def test_rows_are_those_sqlalchemy_reads(ctx: Context) -> None:
    a, b = await accounts(ctx)
    async with ctx.uow() as uow:
        params = {"accounts": [a, b], "not_these": [0]}
        expected = [tuple(r) for r in (await uow.session.execute(_BOXES, params)).all()]
        got = [tuple(r) for r in await direct.fetch(uow.session, _BOXES, params)]
        one = [tuple(r) for r in await direct.fetch(uow.session, _BOXES, {"accounts": [a], "not_these": [0]})]
        first = expected[0][0]
        without_first = await direct.fetch(uow.session, _BOXES, {"accounts": [a, b], "not_these": [first]})
    assert got == expected and len(expected) > 2
    assert one == [r for r in expected if r[1] == a] and one
    assert [r[0] for r in without_first] == [r[0] for r in expected[1:]]
    if ctx.db.is_postgresql:  # one prepared statement whatever the number of values
        assert "= ANY($1)" in direct.compiled(_BOXES).sql and "<> ALL(" in direct.compiled(_BOXES).sql


async def test_what_it_writes_commits_or_rolls_back_with_the_unit_of_work(ctx: Context) -> None:
    a, _ = await accounts(ctx)
    async with ctx.uow(readonly=True) as uow:
        before = int((await uow.session.execute(_COUNT, {"account_id": a})).scalar_one())
    row = {"account_id": a, "name_digest": b"x" * 32, "name_sealed": b"", "uidvalidity": 1, "uidnext": 1}
    row |= {"highestmodseq": 1, "first_recent_uid": 1, "subscribed": True, "created_at": utcnow()}
    async with ctx.uow() as uow:  # the direct statement is the unit's first: it begins the transaction
        await direct.execute_many(uow.session, _ADD, [row])
        assert (await direct.fetch(uow.session, _COUNT, {"account_id": a}))[0][0] == before + 1
        await uow.rollback()
    async with ctx.uow() as uow:
        await direct.execute_many(uow.session, _ADD, [row | {"name_digest": b"y" * 32}])
        await uow.commit()
    async with ctx.uow(readonly=True) as uow:
        after = int((await uow.session.execute(_COUNT, {"account_id": a})).scalar_one())
    assert after == before + 1


async def test_an_error_is_sqlalchemys_with_the_sqlstate_and_the_unit_rolls_back(ctx: Context) -> None:
    a, _ = await accounts(ctx)
    async with ctx.uow(readonly=True) as uow:
        digest = (await uow.session.execute(select(_mb.c.name_digest).where(_mb.c.account_id == a))).scalars().first()
    row = {"account_id": a, "name_digest": digest, "name_sealed": b"", "uidvalidity": 1, "uidnext": 1}
    row |= {"highestmodseq": 1, "first_recent_uid": 1, "subscribed": True, "created_at": utcnow()}
    with pytest.raises(IntegrityError) as caught:
        async with ctx.uow() as uow:
            await direct.execute_many(uow.session, _ADD, [row])
    if ctx.db.is_postgresql:
        assert sqlstate(caught.value) == "23505"
    async with ctx.uow() as uow:  # the pool's connection is usable again
        assert (await direct.fetch(uow.session, _COUNT, {"account_id": a}))[0][0] >= 1
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1


async def test_the_engines_listeners_hear_each_statement(ctx: Context) -> None:
    a, _ = await accounts(ctx)
    with listening(ctx.db.engine) as counter, counter.counting() as seen:
        async with ctx.uow() as uow:
            await direct.fetch(uow.session, _COUNT, {"account_id": a})
            await direct.fetch(uow.session, _BOXES, {"accounts": [a, a + 1], "not_these": [0]})
            await uow.commit()
    dialect = ctx.db.engine.dialect
    heard = [s for s in seen if "mailboxes" in s]
    assert heard[0] == direct.compiled(_COUNT, dialect).sql and len(heard) == 2
    # SQLite: a ? per account id, the bound 1, the id left out; PostgreSQL: an array, the 1, an array
    assert heard[1].count("?") == 4 if ctx.db.is_sqlite else heard[1].count("$") == 3, heard[1]


async def test_a_read_only_unit_of_work_refuses_a_direct_write(ctx: Context) -> None:
    a, _ = await accounts(ctx)
    row = {"account_id": a, "name_digest": b"z" * 32, "name_sealed": b"", "uidvalidity": 1, "uidnext": 1}
    row |= {"highestmodseq": 1, "first_recent_uid": 1, "subscribed": True, "created_at": utcnow()}
    async with ctx.uow(readonly=True) as uow:
        with pytest.raises(ReadOnlyViolation):
            await direct.execute_many(uow.session, _ADD, [row])
        read = int((await uow.session.execute(_COUNT, {"account_id": a})).scalar_one())
        assert (await direct.fetch(uow.session, _COUNT, {"account_id": a}))[0][0] == read  # a read is served


async def test_a_session_keeps_its_connection_for_one_transaction_only(ctx: Context) -> None:
    """The connection is looked up once per transaction of the session (``direct._connection``): after a
    rollback or a commit the next statement runs in the session's next transaction, on whatever connection
    the pool gives it, not on the one given back."""
    a, _ = await accounts(ctx)
    row = {"account_id": a, "name_digest": b"k" * 32, "name_sealed": b"", "uidvalidity": 1, "uidnext": 1}
    row |= {"highestmodseq": 1, "first_recent_uid": 1, "subscribed": True, "created_at": utcnow()}
    async with ctx.db.writer() as session:
        before = (await direct.fetch(session, _COUNT, {"account_id": a}))[0][0]
        await direct.execute_many(session, _ADD, [row])
        await session.rollback()
        assert (await direct.fetch(session, _COUNT, {"account_id": a}))[0][0] == before
        await direct.execute_many(session, _ADD, [row])
        await session.commit()
        assert (await direct.fetch(session, _COUNT, {"account_id": a}))[0][0] == before + 1
        await session.commit()
    async with ctx.uow(readonly=True) as uow:
        assert (await uow.session.execute(_COUNT, {"account_id": a})).scalar_one() == before + 1
