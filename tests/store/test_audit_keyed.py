"""The audit chain is keyed and anchored: whoever can write the database cannot rewrite it unseen.

Each attack is the one a database writer without the key can do: recompute the
chain with plain SHA-256 after an edit, or cut the newest entries and rewind
the head to the last one kept. Both databases; the anchors are the file the
server writes; ``masante-admin audit verify`` says what it found.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from admin_cli.main import cli
from mailserver.context import Context
from mailserver.store import migrate
from mailserver.store.auditchain import GENESIS, canonical, legacy_link
from mailserver.store.db import Database
from mailserver.store.models import AuditEntry
from mailserver.store.repositories.audit import AuditReport
from tests import support
from tests.conftest import PG_ADMIN_DSN


async def write_entries(ctx: Context, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        async with ctx.uow() as uow:
            uow.audit(f"user{i}@hopital.test", "login", f"account:{i}", "ok", "imap from 127.0.0.1")
            await uow.commit()
        await support.audit_caught_up(ctx)  # PostgreSQL: each chained (and anchored if due) before the next


async def report(ctx: Context) -> AuditReport:
    async with ctx.uow(readonly=True) as uow:
        return await uow.audit_log.report()


async def sql(ctx: Context, statement: str, **params: object) -> None:
    async with ctx.uow() as uow:
        await uow.session.execute(text(statement), params)
        await uow.commit()


async def rows(ctx: Context) -> list[tuple[int, dt.datetime, str, str, str, str, str | None]]:
    async with ctx.uow(readonly=True) as uow:
        await uow.audit_log.caught_up()
        entries = (await uow.session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
        return [(e.seq, e.at, e.actor, e.action, e.object_id, e.outcome, e.detail) for e in entries]


async def rechain_with_plain_sha256(ctx: Context) -> None:
    """What an attacker with the database and without the key can do: recompute every link and the head."""
    prev = GENESIS
    for seq, at, actor, action, object_id, outcome, detail in await rows(ctx):
        h = legacy_link(prev, canonical(seq, at, actor, action, object_id, outcome, detail))
        await sql(ctx, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s", p=prev, h=h, s=seq)
        prev = h
    await sql(ctx, "UPDATE audit_head SET hash = :h", h=prev)


def anchor_lines(config: support.Config) -> list[dict[str, object]]:
    path = config.resolve(config.audit.anchor_file)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def admin_verify(config: support.Config) -> tuple[int, str]:
    r = CliRunner().invoke(cli, ["--config", str(config.path), "audit", "verify"], catch_exceptions=False)
    return r.exit_code, r.output


def write_toml(config: support.Config) -> None:
    config.path.write_text(config.to_toml(), encoding="utf-8")


async def test_intact_keyed_chain_is_reported_with_what_can_be_trusted(config: support.Config) -> None:
    write_toml(config)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 5)
        r = await report(ctx)
    finally:
        await ctx.close()  # a clean shutdown anchors the head
    assert (r.checked, r.broken, r.keyed_from) == (5, None, 1)
    assert [a["seq"] for a in anchor_lines(config)] == [1, 5]
    code, out = await asyncio.to_thread(admin_verify, config)
    assert code == 0, out
    assert "audit log intact: 5 entries; entries 1-5 are keyed and can be trusted" in out
    assert "covers entry 5" in out


async def test_edited_row_rechained_with_plain_sha256_is_found(config: support.Config) -> None:
    write_toml(config)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 5)
        await sql(ctx, "UPDATE audit_log SET outcome = 'fail' WHERE seq = 3")
        await rechain_with_plain_sha256(ctx)
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and r.checked == 0 and r.broken.seq == 1
    assert "altered" in r.broken.reason and "keyed hash" in r.broken.reason
    code, out = await asyncio.to_thread(admin_verify, config)
    assert code == 1 and "audit log broken at entry 1" in out and "nothing from entry 1 on" in out, out


async def test_edited_row_alone_is_found_where_it_is(config: support.Config) -> None:
    write_toml(config)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 5)
        await sql(ctx, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 4")
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and (r.checked, r.broken.seq) == (3, 4)
    assert "entries 1-3 are keyed and can be trusted, nothing from entry 4 on" in r.sentence()


async def test_cut_tail_with_rewound_head_is_found_by_the_anchor(config: support.Config) -> None:
    write_toml(config)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 6)
    finally:
        await ctx.close()  # anchors entry 6
    ctx = Context.open(config)
    try:
        # the attacker deletes entries 5 and 6 and makes the head agree with entry 4
        await sql(ctx, "DELETE FROM audit_log WHERE seq >= 5")
        await sql(ctx, "UPDATE audit_head SET seq = 4, hash = (SELECT hash FROM audit_log WHERE seq = 4)")
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and (r.checked, r.broken.seq) == (4, 5)
    assert "entries 5-6 were removed from the end and the head rewound" in r.broken.reason
    code, out = await asyncio.to_thread(admin_verify, config)
    assert code == 1 and "broken at entry 5" in out and "entries 1-4 are keyed and can be trusted" in out, out


async def test_a_forged_anchor_line_is_found(config: support.Config) -> None:
    write_toml(config)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 2)
    finally:
        await ctx.close()
    path = config.resolve(config.audit.anchor_file)
    line = anchor_lines(config)[-1]
    line["seq"] = 1  # an attacker who cut the log tries to move the anchor back with it
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    ctx = Context.open(config)
    try:
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and "not signed by this server's audit key" in r.broken.reason
    assert r.sentence().startswith("audit log cannot be trusted: the anchor file was tampered with")


async def test_another_key_does_not_verify(config: support.Config, tmp_path: Path) -> None:
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 2)
    finally:
        await ctx.close()
    other = tmp_path / "other.key"
    from crypto.audit import AuditKey, write_audit_key_file

    write_audit_key_file(other, AuditKey.generate())
    config.audit.key_file = other
    config.audit.anchor_file = tmp_path / "other-anchors.log"
    ctx = Context.open(config)
    try:
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and r.broken.seq == 1 and "keyed hash" in r.broken.reason


async def test_anchors_every_n_entries(config: support.Config) -> None:
    config.audit.anchor_every = 3
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 7)
        assert [a["seq"] for a in anchor_lines(config)] == [1, 4, 7]
        await write_entries(ctx, 1, start=7)
        assert [a["seq"] for a in anchor_lines(config)] == [1, 4, 7]  # not due yet...
    finally:
        await ctx.close()
    assert [a["seq"] for a in anchor_lines(config)] == [1, 4, 7, 8]  # ...until the clean shutdown
    assert os.stat(config.resolve(config.audit.anchor_file)).st_mode & 0o077 == 0


async def test_a_rolled_back_unit_of_work_is_never_anchored(config: support.Config) -> None:
    ctx = Context.open(config)
    try:
        async with ctx.uow() as uow:
            uow.audit("x", "never", "account:1", "ok")
    finally:
        await ctx.close()
    assert anchor_lines(config) == []


async def test_without_the_key_nothing_is_audited_and_the_error_says_why(config: support.Config) -> None:
    config.resolve(config.audit.key_file).unlink()
    ctx = Context.open(config)
    try:
        with pytest.raises(Exception, match="masante-admin init"):
            await write_entries(ctx, 1)
    finally:
        await ctx.close()


# --- existing databases: migration 0004 keeps their entries as legacy ------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
async def legacy_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database at revision 0003 holding three entries chained the old way (plain SHA-256)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        dsn = None
    else:
        request.getfixturevalue("pg_database")  # skips (or fails in CI) without PostgreSQL
        name = f"masante_legacy_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        await support.pg_admin(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"')
        dsn = support.pg_database_of(PG_ADMIN_DSN, name)
        url = support.sqlalchemy_pg_url(dsn)
    db = Database(url)
    try:
        await migrate.upgrade(db, "0003")
        prev = GENESIS
        async with db.engine.begin() as conn:
            for seq in (1, 2, 3):
                at = dt.datetime(2026, 11, 30, 12, 0, seq, tzinfo=dt.UTC)
                values = (seq, at, f"old{seq}@hopital.test", "login", f"account:{seq}", "ok", None)
                h = legacy_link(prev, canonical(*values))
                await conn.execute(
                    text(
                        "INSERT INTO audit_log (seq, at, actor, action, object_id, outcome, detail, prev_hash, hash) "
                        "VALUES (:seq, :at, :actor, 'login', :obj, 'ok', NULL, :prev, :hash)"
                    ),
                    {"seq": seq, "at": at, "actor": values[2], "obj": values[4], "prev": prev, "hash": h},
                )
                prev = h
            await conn.execute(text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": prev})
        await migrate.upgrade(db)
    finally:
        await db.dispose()
    yield url
    if dsn is not None:
        await support.pg_admin(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_old_entries_verify_as_legacy_up_to_the_marker(
    legacy_url: str, tmp_path: Path, pki: support.TestPKI
) -> None:
    config = support.make_config(tmp_path, legacy_url, pki)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 2)
        r = await report(ctx)
    finally:
        await ctx.close()
    assert (r.checked, r.keyed_from, r.broken) == (5, 4, None)
    sentence = r.sentence()
    assert "entries 1-3 are legacy" in sentence and "entries 4-5 are keyed and can be trusted" in sentence


async def test_moving_the_legacy_marker_is_found_by_the_anchor(
    legacy_url: str, tmp_path: Path, pki: support.TestPKI
) -> None:
    config = support.make_config(tmp_path, legacy_url, pki)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 2)
    finally:
        await ctx.close()  # the anchors record keyed_from = 4
    ctx = Context.open(config)
    try:
        # make every entry "legacy", so that a plain SHA-256 rechain would verify
        await sql(ctx, "UPDATE audit_head SET keyed_from = 1000")
        await sql(ctx, "UPDATE audit_log SET outcome = 'fail' WHERE seq = 5")
        await rechain_with_plain_sha256(ctx)
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and "the legacy marker was moved" in r.broken.reason


async def test_rewriting_legacy_entries_breaks_the_first_keyed_link(
    legacy_url: str, tmp_path: Path, pki: support.TestPKI
) -> None:
    """Legacy entries can be recomputed, but the first keyed entry holds the old last hash under the key."""
    config = support.make_config(tmp_path, legacy_url, pki)
    ctx = Context.open(config)
    try:
        await write_entries(ctx, 1)
        await sql(ctx, "UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
        prev = GENESIS
        for seq, at, actor, action, object_id, outcome, detail in (await rows(ctx))[:3]:
            h = legacy_link(prev, canonical(seq, at, actor, action, object_id, outcome, detail))
            await sql(ctx, "UPDATE audit_log SET prev_hash = :p, hash = :h WHERE seq = :s", p=prev, h=h, s=seq)
            prev = h
        r = await report(ctx)
    finally:
        await ctx.close()
    assert r.broken is not None and r.broken.seq == 4 and "does not follow" in r.broken.reason
