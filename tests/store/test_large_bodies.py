"""Large message bodies (issue 14 point 3): stored without extra copies, read back the same, old rows still read.

Runs on SQLite and PostgreSQL. A sealed body past ``LARGE_BODY`` goes to the row's last column,
``large_body``, written in pieces (SQLite: incremental blob I/O; PostgreSQL: through a large object,
unlinked in the same transaction); ``body`` is then empty.
"""

from __future__ import annotations

import os
import uuid

from sqlalchemy import select, text

from crypto.envelope import DataKey
from mailserver.bodies import account_key
from mailserver.context import Context
from mailserver.store.models import Blob
from mailserver.store.repositories.mail import LARGE_BODY
from tests import support
from tests.store.test_storage import deliver_one, read


def big_message(marker: str, size: int) -> bytes:
    line = os.urandom(57).hex().encode()[:76] + b"\r\n"
    body = line * (size // len(line))
    return f"Subject: large {marker}\r\nMessage-ID: <{marker}@test>\r\n\r\n".encode() + body


async def columns(ctx: Context, blob_id: str) -> tuple[int, int | None]:
    async with ctx.uow(readonly=True) as uow:
        row = (
            await uow.session.execute(
                select(text("length(body)"), text("length(large_body)")).select_from(Blob).where(Blob.id == blob_id)
            )
        ).one()
    return int(row[0]), None if row[1] is None else int(row[1])


async def test_a_large_body_is_stored_in_pieces_and_reads_back_the_same(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    raw = big_message(uuid.uuid4().hex, 3 * LARGE_BODY + 12345)
    msg = await deliver_one(ctx, patient, raw)
    assert await read(ctx, patient.id, msg) == raw
    body, large = await columns(ctx, msg.blob_id)
    assert body == 0 and large is not None and large == len(raw) + 2 + 12 + 16
    if not ctx.db.is_sqlite:  # the large object the pieces went through is gone with the transaction's end
        async with ctx.uow(readonly=True) as uow:
            assert (await uow.session.execute(text("SELECT count(*) FROM pg_largeobject_metadata"))).scalar_one() == 0


async def test_a_small_body_and_a_row_written_before_large_body_existed_still_read(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    small = b"Subject: small\r\n\r\nBonjour\r\n"
    msg = await deliver_one(ctx, patient, small)
    assert await columns(ctx, msg.blob_id) == (len(small) + 30, None)
    assert await read(ctx, patient.id, msg) == small

    # a large body as the earlier code stored it: in ``body``, sealed in one piece
    raw = big_message(uuid.uuid4().hex, 2 * LARGE_BODY)
    later = await deliver_one(ctx, patient, raw)
    async with ctx.uow() as uow:
        account = await uow.accounts.get(patient.id)
        assert account is not None
        key: DataKey = account_key(ctx.keyring, account)
        sealed = bytes(key.seal(raw, object_id=f"blob:{later.blob_id}", purpose="body"))
        await uow.session.execute(
            text("UPDATE blobs SET body = :b, large_body = NULL WHERE id = :id"), {"b": sealed, "id": later.blob_id}
        )
        await uow.commit()
    assert await read(ctx, patient.id, later) == raw
