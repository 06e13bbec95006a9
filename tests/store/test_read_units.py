"""A read-only unit of work reads, and cannot write.

On PostgreSQL it runs without a transaction (at READ COMMITTED each statement has its own snapshot anyway:
no BEGIN, no ROLLBACK, two round trips fewer), so a write slipped into it would be committed at once: every
INSERT, UPDATE or DELETE on its connection, Core or an ORM flush, is refused before it reaches the database,
on both databases. A reader that needs one snapshot asks for it (the audit report).
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, func, insert, select, text, update

from mailserver.context import Context
from mailserver.store.db import ReadOnlyViolation
from mailserver.store.models import Domain, DomainKind


async def domains(ctx: Context) -> int:
    async with ctx.uow(readonly=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Domain)) or 0)


async def test_a_read_unit_refuses_core_writes(ctx: Context) -> None:
    before = await domains(ctx)
    async with ctx.uow(readonly=True) as uow:
        with pytest.raises(ReadOnlyViolation, match="cannot insert"):
            await uow.session.execute(insert(Domain).values(name="slipped.example", kind=DomainKind.PROFESSIONAL))
        with pytest.raises(ReadOnlyViolation, match="cannot update"):
            await uow.session.execute(update(Domain).values(name="renamed.example"))
        with pytest.raises(ReadOnlyViolation, match="cannot delete"):
            await uow.session.execute(delete(Domain))
    assert await domains(ctx) == before


async def test_a_read_unit_refuses_an_orm_flush(ctx: Context) -> None:
    before = await domains(ctx)
    async with ctx.uow(readonly=True) as uow:
        uow.session.add(Domain(name="added.example", kind=DomainKind.PROFESSIONAL))
        with pytest.raises(ReadOnlyViolation):
            await uow.session.flush()
    assert await domains(ctx) == before
    async with ctx.uow() as uow:  # a writing unit writes as ever
        uow.session.add(Domain(name="added.example", kind=DomainKind.PROFESSIONAL))
        await uow.commit()
    assert await domains(ctx) == before + 1


async def test_on_postgresql_a_read_has_no_transaction(ctx: Context) -> None:
    if not ctx.db.is_postgresql:
        pytest.skip("SQLite reads in a deferred transaction: one snapshot of the WAL for the unit")
    xid = text("SELECT txid_current()")  # a transaction's id: the same for each statement of one transaction
    async with ctx.uow(readonly=True) as uow:
        first = (await uow.session.execute(xid)).scalar_one()
        second = (await uow.session.execute(xid)).scalar_one()
        assert first != second  # each statement its own
    async with ctx.uow() as uow:
        first = (await uow.session.execute(xid)).scalar_one()
        second = (await uow.session.execute(xid)).scalar_one()
        assert first == second  # a writing unit has its transaction
        await uow.rollback()
