"""The audit log is a SHA-256 chain: any edit, deletion or truncation is found and located."""

from __future__ import annotations

from sqlalchemy import text

from mailserver.context import Context
from tests import support


async def write_entries(ctx: Context, n: int) -> None:
    for i in range(n):
        async with ctx.uow() as uow:
            uow.audit(f"user{i}@hopital.test", "login", f"account:{i}", "ok", "imap from 127.0.0.1")
            await uow.commit()
    await support.audit_caught_up(ctx)  # PostgreSQL: chained (in the background) before the test edits the rows


async def verify(ctx: Context) -> tuple[int, object]:
    async with ctx.uow(readonly=True) as uow:
        return await uow.audit_log.verify()


async def sql(ctx: Context, statement: str) -> None:
    async with ctx.uow() as uow:
        await uow.session.execute(text(statement))
        await uow.commit()


async def test_intact_chain(ctx: Context) -> None:
    await write_entries(ctx, 5)
    checked, broken = await verify(ctx)
    assert (checked, broken) == (5, None)
    async with ctx.uow(readonly=True) as uow:
        tail = await uow.audit_log.tail(2)
    assert [e.seq for e in tail] == [4, 5] and tail[0].prev_hash != tail[1].prev_hash


async def test_entries_of_a_rolled_back_unit_of_work_are_not_written(ctx: Context) -> None:
    async with ctx.uow() as uow:
        uow.audit("x", "never", "account:1", "ok")
    assert await verify(ctx) == (0, None)


async def test_edited_entry_is_found(ctx: Context) -> None:
    await write_entries(ctx, 5)
    await sql(ctx, "UPDATE audit_log SET outcome = 'fail' WHERE seq = 3")
    checked, broken = await verify(ctx)
    assert checked == 2 and broken is not None and broken.seq == 3 and "altered" in broken.reason


async def test_deleted_entry_is_found(ctx: Context) -> None:
    await write_entries(ctx, 5)
    await sql(ctx, "DELETE FROM audit_log WHERE seq = 2")
    checked, broken = await verify(ctx)
    assert checked == 1 and broken is not None and broken.seq == 2 and "missing" in broken.reason


async def test_renumbered_deletion_is_found(ctx: Context) -> None:
    """Deleting entry 2 and renumbering the rest to hide the gap still breaks the hash links."""
    await write_entries(ctx, 4)
    await sql(ctx, "DELETE FROM audit_log WHERE seq = 2")
    await sql(ctx, "UPDATE audit_log SET seq = seq - 1 WHERE seq > 2")
    checked, broken = await verify(ctx)
    assert broken is not None and broken.seq == 2


async def test_truncated_end_is_found(ctx: Context) -> None:
    await write_entries(ctx, 5)
    await sql(ctx, "DELETE FROM audit_log WHERE seq >= 4")
    checked, broken = await verify(ctx)
    assert checked == 3 and broken is not None and "removed from the end" in broken.reason


async def test_chain_continues_across_units_of_work_with_several_entries(ctx: Context) -> None:
    async with ctx.uow() as uow:
        for i in range(3):
            uow.audit("admin:root", "account.create", f"account:{i}", "ok")
        await uow.commit()
    await write_entries(ctx, 2)
    assert await verify(ctx) == (5, None)
