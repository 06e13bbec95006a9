"""Two processes append to one mailbox at once: UIDs never collide and each writer sees them increase."""

from __future__ import annotations

import asyncio
import sys

import pytest

from mailserver.context import Context
from tests import support

N = 500


@pytest.mark.slow
async def test_two_processes_appending_to_one_mailbox_get_unique_increasing_uids(ctx: Context) -> None:
    await support.add_domains(ctx)
    patient = await support.make_patient(ctx)
    url = ctx.config.database.url
    if ctx.db.is_sqlite:
        url = "sqlite:///" + ctx.db.url.split(":///", 1)[1]
    kek = ctx.keyring.current.to_text().strip()
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.store.uid_writer",
            url,
            kek,
            patient.address,
            str(N),
            tag,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=support.audit_env(ctx.config),
        )
        for tag in ("A", "B")
    ]
    outs = await asyncio.gather(*(p.communicate() for p in procs))
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    per_process = [[int(u) for u in out.split()] for out, _ in outs]

    for uids in per_process:
        assert len(uids) == N
        assert all(a < b for a, b in zip(uids, uids[1:], strict=False)), "UIDs must increase for each writer"
    everything = per_process[0] + per_process[1]
    assert sorted(everything) == list(range(1, 2 * N + 1)), "UIDs must be unique and leave no gap"
    async with ctx.uow(readonly=True) as uow:
        inbox = await uow.mailboxes.get(patient.id, "INBOX")
        assert inbox is not None
        rows = await uow.messages.list(inbox.id)
    assert inbox.uidnext == 2 * N + 1
    assert [m.uid for m in rows] == list(range(1, 2 * N + 1))
    assert len({m.modseq for m in rows}) == 2 * N  # every append has its own modseq
