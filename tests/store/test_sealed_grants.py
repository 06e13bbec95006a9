"""Conversation grants at rest: who may write to whom is not readable without the credential key.

A patient's grant names the professional treating them; the table keeps keyed digests for lookups and a
sealed copy for reading back. Checked in the bytes the database really holds: the SQLite file and its WAL,
and ``pg_dump`` of the PostgreSQL database.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from crypto.credentials import CredentialKey
from crypto.metadata import MetadataKey
from mailserver.admission import Admission
from mailserver.store import migrate
from mailserver.store.db import Database
from mailserver.store.uow import UnitOfWork
from tests import support
from tests.conftest import PG_ADMIN_DSN

PATIENT = f"{support.PATIENT_INS}@{support.PATIENT_DOMAIN}"
CONTACT = "dr.cardiologue-rare@hopital.test"
OPENER = "secretariat.cardio-rare@hopital.test"


def database_bytes(url: str) -> bytes:
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        files = (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"))
        return b"".join(p.read_bytes() for p in files if p.exists())
    dsn = "postgresql://" + url.split("://", 1)[1]
    return subprocess.run(["pg_dump", "--data-only", dsn], check=True, capture_output=True, timeout=60).stdout


def readable(blob: bytes, *words: str) -> list[str]:
    low = blob.lower()
    return [w for w in words if w.lower().encode() in low or w.lower().encode("utf-16-le") in low]


async def test_a_grant_leaves_no_address_in_the_database(ctx: support.Context) -> None:
    async with ctx.uow() as uow:
        assert await uow.grants.grant(PATIENT, CONTACT, granted_by=OPENER, at=ctx.clock())
        await uow.commit()
    async with ctx.uow(readonly=True) as uow:
        assert await uow.grants.has(PATIENT.upper(), CONTACT)
        assert not await uow.grants.has(PATIENT, OPENER)
        [grant] = await uow.grants.of_patient(PATIENT)
    assert (grant.patient, grant.contact, grant.granted_by) == (PATIENT, CONTACT, OPENER)
    assert await Admission(ctx).grants_of(PATIENT) == [CONTACT]
    assert readable(database_bytes(ctx.config.database_url), PATIENT, CONTACT, OPENER, "cardio") == []


async def test_a_refreshed_grant_is_sealed_again_and_withdrawn_by_pair(ctx: support.Context) -> None:
    async with ctx.uow() as uow:
        await uow.grants.grant(PATIENT, CONTACT, granted_by=CONTACT, at=ctx.clock())
        assert not await uow.grants.grant(PATIENT, CONTACT, granted_by=OPENER, at=ctx.clock())
        await uow.grants.grant(PATIENT, "other@hopital.test", granted_by=OPENER, at=ctx.clock())
        await uow.commit()
    async with ctx.uow() as uow:
        assert [(g.contact, g.granted_by) for g in await uow.grants.of_patient(PATIENT)] == [
            (CONTACT, OPENER),
            ("other@hopital.test", OPENER),
        ]
        assert await uow.grants.withdraw(PATIENT, CONTACT)
        assert not await uow.grants.withdraw(PATIENT, CONTACT)
        assert await uow.grants.forget_patient(PATIENT) == 1
        await uow.commit()
    assert await Admission(ctx).grants_of(PATIENT) == []


async def test_another_credential_key_finds_and_opens_nothing(ctx: support.Context) -> None:
    async with ctx.uow() as uow:
        await uow.grants.grant(PATIENT, CONTACT, granted_by=OPENER, at=ctx.clock())
        await uow.commit()
    ctx.db._metadata_key = MetadataKey(CredentialKey.generate())  # a copy of the database, without our key
    async with ctx.uow(readonly=True) as uow:
        assert not await uow.grants.has(PATIENT, CONTACT)
        assert await uow.grants.of_patient(PATIENT) == []


@pytest.fixture(params=["sqlite", "postgresql"])
async def bare_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A database of its own, migrated to 0009 (before grants were sealed)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        dsn = None
    else:
        name = f"grants_{os.getpid()}_{secrets.token_hex(4)}"
        try:
            await support.pg_admin(PG_ADMIN_DSN, f'CREATE DATABASE "{name}"')
        except Exception as exc:  # noqa: BLE001 - the reason is reported
            if os.environ.get("MASANTE_REQUIRE_POSTGRES"):
                pytest.fail(f"PostgreSQL is required here but unreachable: {exc}")
            pytest.skip(f"PostgreSQL not reachable: {exc}")
        dsn = support.pg_database_of(PG_ADMIN_DSN, name)
        url = support.sqlalchemy_pg_url(dsn)
    db = Database(url)
    try:
        await migrate.upgrade(db, "0009")
    finally:
        await db.dispose()
    yield url
    if dsn is not None:
        await support.pg_admin(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_upgrading_seals_the_grants_already_there_and_downgrading_opens_them(bare_url: str) -> None:
    key = MetadataKey(CredentialKey.generate())
    db = Database(bare_url)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO conversation_grants (patient, contact, granted_by, granted_at, refreshed_at) "
                    "VALUES (:p, :c, :g, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"p": PATIENT, "c": CONTACT.upper(), "g": OPENER},
            )
        with pytest.raises(RuntimeError, match="1 conversation grants are sealed or opened with the credential key"):
            await migrate.upgrade(db)  # no key: stops, and says how to go on
        assert await migrate.current_revision(db) == "0009"
        db.metadata_key_loader = lambda: key
        await migrate.upgrade(db)
        async with db.engine.connect() as conn:
            columns = (await conn.execute(text("SELECT * FROM conversation_grants"))).keys()
        assert {"patient", "contact", "granted_by"}.isdisjoint(columns)
        assert readable(database_bytes(bare_url), PATIENT, CONTACT, OPENER) == []
        async with UnitOfWork(db) as uow:
            [grant] = await uow.grants.of_patient(PATIENT)
            assert await uow.grants.has(PATIENT, CONTACT)
        assert (grant.contact, grant.granted_by) == (CONTACT.lower(), OPENER)

        await migrate.downgrade(db, "0009")
        async with db.engine.connect() as conn:
            rows = (await conn.execute(text("SELECT patient, contact, granted_by FROM conversation_grants"))).all()
        assert [tuple(r) for r in rows] == [(PATIENT, CONTACT.lower(), OPENER)]
    finally:
        await db.dispose()
