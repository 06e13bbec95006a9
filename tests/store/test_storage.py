"""Storage on SQLite and PostgreSQL: accounts, mailboxes, encrypted messages at rest, shredding, rotation.

Every test here runs twice, ids ``[sqlite]`` and ``[postgresql]``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, text

from crypto.envelope import DecryptionFailed, KeyDestroyed, load_keyring, pending_path
from directory.accounts import AccountService
from directory.errors import AccountExists, InvalidAddress, InvalidState, UnknownDomain
from mailserver.bodies import read_body
from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.keys import rotate_kek
from mailserver.mailboxes import PATIENT_EXTRA
from mailserver.store import migrate
from mailserver.store.models import Account, AccountKind, AccountStatus, Blob, Message
from tests import support


async def deliver_one(ctx: Context, account: Account, raw: bytes, mailbox: str | None = None) -> Message:
    async with ctx.uow() as uow:
        acct = await uow.accounts.get(account.id)
        assert acct is not None
        result = await deliver(uow, ctx.keyring, raw, [acct], mailbox=mailbox)
        await uow.commit()
    d = result.delivered[0]
    async with ctx.uow(readonly=True) as uow:
        (msg,) = await uow.messages.by_uids(d.mailbox_id, [d.uid])
    return msg


async def read(ctx: Context, account_id: int, msg: Message) -> bytes:
    async with ctx.uow(readonly=True) as uow:
        acct = await uow.accounts.get(account_id)
        assert acct is not None
        return await read_body(uow, ctx.keyring, acct, msg)


async def test_migrations_match_the_models(ctx: Context) -> None:
    assert await migrate.current_revision(ctx.db) == migrate.head_revision()
    assert await migrate.schema_drift(ctx.db) == []


async def test_account_gets_a_key_and_its_special_mailboxes(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    patient = await support.make_patient(ctx)
    async with ctx.uow(readonly=True) as uow:
        pro_boxes = {m.name: m.special_use for m in await uow.mailboxes.list(pro.id)}
        patient_boxes = {m.name for m in await uow.mailboxes.list(patient.id)}
    assert pro_boxes == {"INBOX": None, "Sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Junk": "\\Junk"}
    assert patient_boxes == set(pro_boxes) | set(PATIENT_EXTRA)
    assert {"Documents", "Documents/Resultats", "Agenda"} <= patient_boxes
    assert pro.wrapped_key is not None and patient.wrapped_key is not None
    assert patient.ins == support.PATIENT_INS and patient.kind is AccountKind.PATIENT


async def test_account_creation_refusals(ctx: Context) -> None:
    await support.add_domains(ctx)
    await support.make_pro(ctx)
    svc = AccountService(ctx)
    with pytest.raises(AccountExists):
        await support.make_pro(ctx)
    with pytest.raises(UnknownDomain, match="elsewhere.test"):
        await svc.create("a@elsewhere.test", AccountKind.PER, actor="t")
    with pytest.raises(InvalidState, match="patient domain"):
        await svc.create(f"x@{support.PATIENT_DOMAIN}", AccountKind.PER, actor="t")
    with pytest.raises(InvalidState, match="professional domain"):
        await svc.create(f"{support.PATIENT_INS}@{support.PRO_DOMAIN}", AccountKind.PATIENT, actor="t")
    with pytest.raises(InvalidAddress):
        await svc.create("no-at-sign", AccountKind.PER, actor="t")


async def test_message_is_encrypted_at_rest_and_readable_through_the_api(ctx: Context, tmp_path: Path) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    marker = f"MARKER-{uuid.uuid4().hex}"
    raw = support.make_message(
        "dr.house@hopital.test", patient.address, f"Resultats {marker}", f"Votre glycemie {marker} est normale.\n"
    )
    msg = await deliver_one(ctx, patient, raw)
    assert await read(ctx, patient.id, msg) == raw
    assert msg.uid == 1 and msg.size == len(raw)
    if ctx.db.is_sqlite:
        db_file = Path(ctx.db.url.split(":///", 1)[1])
        files = [db_file, Path(f"{db_file}-wal")]
        at_rest = b"".join(f.read_bytes() for f in files if f.exists())
        assert len(at_rest) > 0
    else:
        dsn = "postgresql://" + ctx.db.url.split("://", 1)[1]
        dump = await asyncio.create_subprocess_exec("pg_dump", "--data-only", dsn, stdout=asyncio.subprocess.PIPE)
        at_rest, _ = await dump.communicate()
        assert dump.returncode == 0
        assert b"COPY public.blobs" in at_rest
    assert marker.encode() not in at_rest
    assert patient.address.encode() in at_rest  # the addresses are there: we are looking at the right data


async def test_ciphertext_moved_to_another_row_does_not_decrypt(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    a = await deliver_one(ctx, patient, b"Subject: a\r\n\r\nfirst\r\n")
    b = await deliver_one(ctx, patient, b"Subject: b\r\n\r\nsecond\r\n")
    async with ctx.uow() as uow:
        body_a = (await uow.session.execute(select(Blob.body).where(Blob.id == a.blob_id))).scalar_one()
        await uow.session.execute(text("UPDATE blobs SET body = :b WHERE id = :id"), {"b": body_a, "id": b.blob_id})
        await uow.commit()
    assert await read(ctx, patient.id, a) == b"Subject: a\r\n\r\nfirst\r\n"
    with pytest.raises(DecryptionFailed):
        await read(ctx, patient.id, b)


async def test_wrapped_key_moved_to_another_account_does_not_unwrap(ctx: Context) -> None:
    await support.add_domains(ctx)
    one = await support.make_patient(ctx)
    two = await support.make_patient(ctx, support.OTHER_INS)
    msg = await deliver_one(ctx, two, b"Subject: x\r\n\r\nx\r\n")
    async with ctx.uow() as uow:
        await uow.session.execute(
            text("UPDATE accounts SET wrapped_key = :k WHERE id = :id"), {"k": one.wrapped_key, "id": two.id}
        )
        await uow.commit()
    with pytest.raises(DecryptionFailed):
        await read(ctx, two.id, msg)


async def test_close_with_erase_destroys_the_key_and_the_messages_with_it(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    raw = b"Subject: secret\r\n\r\nthe diagnosis\r\n"
    msg = await deliver_one(ctx, patient, raw)
    old_wrapped = patient.wrapped_key
    assert old_wrapped is not None
    data_key = ctx.keyring.unwrap(old_wrapped, owner=patient.owner_id)

    closed = await AccountService(ctx).close(patient.address, actor="test", erase=True)
    assert closed.status is AccountStatus.CLOSED and closed.wrapped_key is None

    with pytest.raises(KeyDestroyed):
        await read(ctx, patient.id, msg)
    async with ctx.uow(readonly=True) as uow:
        blob = await uow.blobs.get(msg.blob_id)
        acct = await uow.accounts.get(patient.id)
    assert blob is not None and raw not in blob.body  # the ciphertext is still there...
    assert acct is not None and acct.wrapped_key is None and acct.key_destroyed_at is not None
    # ...and nothing the server holds unwraps it any more: the only copy of the data key is gone
    if ctx.db.is_sqlite:
        db_file = Path(ctx.db.url.split(":///", 1)[1])
        at_rest = b"".join(f.read_bytes() for f in (db_file, Path(f"{db_file}-wal")) if f.exists())
        assert old_wrapped not in at_rest
        assert data_key not in at_rest
    async with ctx.uow(readonly=True) as uow:
        actions = [e.action for e in await uow.audit_log.tail(5)]
    assert "account.key-destroyed" in actions


async def test_closed_account_keeps_its_data_until_the_retention_period_ends(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    msg = await deliver_one(ctx, patient, b"Subject: kept\r\n\r\nkept\r\n")
    svc = AccountService(ctx)
    closed = await svc.close(patient.address, actor="test")
    assert closed.retention_until is not None
    assert closed.retention_until - closed.closed_at == dt.timedelta(days=3650)  # type: ignore[operator]
    assert await svc.run_retention(actor="test") == []
    assert await read(ctx, patient.id, msg) == b"Subject: kept\r\n\r\nkept\r\n"

    assert closed.retention_until is not None
    ctx.clock = FakeClock(closed.retention_until + dt.timedelta(seconds=1))  # the retention period is over
    assert await svc.run_retention(actor="test") == [patient.address]
    with pytest.raises(KeyDestroyed):
        await read(ctx, patient.id, msg)


async def test_status_changes(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    svc = AccountService(ctx)
    assert (await svc.set_status(pro.address, AccountStatus.DISABLED, actor="t")).status is AccountStatus.DISABLED
    with pytest.raises(InvalidState, match="only a patient"):
        await svc.set_status(pro.address, AccountStatus.OPPOSED, actor="t")
    await svc.close(pro.address, actor="t")
    with pytest.raises(InvalidState, match="closed"):
        await svc.set_status(pro.address, AccountStatus.ACTIVE, actor="t")


async def test_kek_rotation_rewraps_keys_without_touching_bodies(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    pro = await support.make_pro(ctx)
    m1 = await deliver_one(ctx, patient, b"Subject: 1\r\n\r\none\r\n")
    m2 = await deliver_one(ctx, pro, b"Subject: 2\r\n\r\ntwo\r\n")
    async with ctx.uow(readonly=True) as uow:
        bodies_before = {b.id: b.body for b in (await uow.session.execute(select(Blob))).scalars()}
    kek_file = ctx.config.resolve(ctx.config.keys.kek_file)
    old_kid = ctx.keyring.current.kid.hex()

    steps: list[tuple[int, int]] = []
    result = await rotate_kek(ctx, actor="test", progress=lambda done, total: steps.append((done, total)))

    assert result.old_kid == old_kid and result.new_kid != old_kid and result.accounts == 2
    assert steps[-1] == (result.accounts + result.queued, result.accounts + result.queued)  # the CLI's bar ends full
    assert not pending_path(kek_file).exists()
    fresh = load_keyring(kek_file)  # what a restarted server loads: only the new KEK
    assert fresh.kids == [result.new_kid]
    ctx.keyring = fresh
    assert await read(ctx, patient.id, m1) == b"Subject: 1\r\n\r\none\r\n"
    assert await read(ctx, pro.id, m2) == b"Subject: 2\r\n\r\ntwo\r\n"
    async with ctx.uow(readonly=True) as uow:
        bodies_after = {b.id: b.body for b in (await uow.session.execute(select(Blob))).scalars()}
        wrapped = [a.wrapped_key for a in await uow.accounts.list()]
    assert bodies_after == bodies_before
    assert all(w is not None and fresh.wrapped_kid(w) == result.new_kid for w in wrapped)


async def test_uids_are_allocated_in_order_per_mailbox(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    uids = [(await deliver_one(ctx, patient, f"Subject: {i}\r\n\r\n{i}\r\n".encode())).uid for i in range(5)]
    assert uids == [1, 2, 3, 4, 5]
    drafts = await deliver_one(ctx, patient, b"Subject: d\r\n\r\nd\r\n", mailbox="Drafts")
    assert drafts.uid == 1  # UIDs are per mailbox
    async with ctx.uow(readonly=True) as uow:
        inbox = await uow.mailboxes.get(patient.id, "inbox")  # INBOX is case-insensitive
    assert inbox is not None and inbox.uidnext == 6 and inbox.highestmodseq == 6
