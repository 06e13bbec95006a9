"""Mailbox names at rest: a folder named after a diagnosis is not readable without the credential key.

The row keeps a keyed digest of (account, name) for lookups and the unique constraint, and the name sealed;
checked in the bytes the database holds (the SQLite file and its WAL, ``pg_dump`` of PostgreSQL).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from crypto.credentials import CredentialKey
from crypto.metadata import MetadataKey
from mailserver import mailboxes as mbx
from mailserver.store import migrate
from mailserver.store.db import Database
from mailserver.store.errors import Conflict
from mailserver.store.uow import UnitOfWork
from tests import support
from tests.store.test_sealed_grants import bare_url, database_bytes, readable

__all__ = ["bare_url"]  # the fixture, shared with the grants' migration test

DIAGNOSIS = "Oncologie/Tumeur-du-sein"
RENAMED = "Suivi-chimiotherapie"


async def test_a_mailbox_name_is_sealed_and_found_by_digest(ctx: support.Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    async with ctx.uow() as uow:
        await mbx.create_mailbox(uow, patient.id, DIAGNOSIS)
        await uow.commit()
    async with ctx.uow() as uow:
        names = [m.name for m in await uow.mailboxes.list(patient.id)]
        assert "Oncologie" in names and DIAGNOSIS in names and names == sorted(names)
        found = await uow.mailboxes.get(patient.id, DIAGNOSIS)
        assert found is not None and found.name == DIAGNOSIS
        assert await uow.mailboxes.get(patient.id, DIAGNOSIS.lower()) is None  # names are case-sensitive
        assert (await uow.mailboxes.get(patient.id, "inbox")) is not None  # but INBOX is not
        with pytest.raises(Conflict):
            await uow.mailboxes.create(patient.id, DIAGNOSIS, uidvalidity=1)
    assert readable(database_bytes(ctx.config.database_url), "Oncologie", "Tumeur") == []


async def test_a_renamed_mailbox_is_sealed_again(ctx: support.Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    async with ctx.uow() as uow:
        await mbx.create_mailbox(uow, patient.id, DIAGNOSIS)
        await uow.commit()
    async with ctx.uow() as uow:
        await mbx.rename_mailbox(uow, patient.id, "Oncologie", RENAMED, patient=True)
        await uow.commit()
    async with ctx.uow(readonly=True) as uow:
        names = {m.name for m in await uow.mailboxes.list(patient.id)}
        assert await uow.mailboxes.get(patient.id, DIAGNOSIS) is None
        moved = await uow.mailboxes.get(patient.id, f"{RENAMED}/Tumeur-du-sein")
    assert {RENAMED, f"{RENAMED}/Tumeur-du-sein"} <= names and not {"Oncologie", DIAGNOSIS} & names
    assert moved is not None
    assert readable(database_bytes(ctx.config.database_url), "Oncologie", "Tumeur", "chimio") == []


async def test_another_credential_key_opens_no_name(ctx: support.Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    ctx.db._metadata_key = MetadataKey(CredentialKey.generate())  # a copy of the database, without our key
    async with ctx.uow(readonly=True) as uow:
        assert await uow.mailboxes.get(patient.id, "INBOX") is None
        with pytest.raises(Exception, match="does not open under this credential key"):
            await uow.mailboxes.list(patient.id)


async def test_upgrading_seals_the_names_already_there_and_downgrading_opens_them(
    bare_url: str, tmp_path: Path
) -> None:
    key = MetadataKey(CredentialKey.generate())
    db = Database(bare_url)
    try:
        await migrate.upgrade(db, "0017")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO domains (name, kind, created_at) VALUES ('hopital.test', 'professional', "
                    "CURRENT_TIMESTAMP)"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO accounts (address, domain_id, kind, status, created_at) "
                    "SELECT 'dr@hopital.test', id, 'PER', 'active', CURRENT_TIMESTAMP FROM domains"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO mailboxes (account_id, name, uidvalidity, uidnext, highestmodseq, "
                    "first_recent_uid, subscribed, created_at) SELECT id, :n, 7, 1, 1, 1, true, CURRENT_TIMESTAMP "
                    "FROM accounts"
                ),
                {"n": DIAGNOSIS},
            )
        with pytest.raises(RuntimeError, match="1 mailbox names are sealed or opened with the credential key"):
            await migrate.upgrade(db)
        db.metadata_key_loader = lambda: key
        await migrate.upgrade(db)
        assert readable(database_bytes(bare_url), "Oncologie", "Tumeur") == []
        async with UnitOfWork(db) as uow:
            account = await uow.accounts.by_address("dr@hopital.test")
            assert account is not None
            [box] = await uow.mailboxes.list(account.id)
            assert (box.name, box.uidvalidity) == (DIAGNOSIS, 7)
        await migrate.downgrade(db, "0017")
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT name FROM mailboxes"))).scalars().all() == [DIAGNOSIS]
    finally:
        await db.dispose()
