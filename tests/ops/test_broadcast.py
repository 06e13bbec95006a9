"""Broadcast information: every active patient gets exactly one sealed copy, also after an interruption or a kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from sqlalchemy import func, select

from crypto.envelope import DecryptionFailed
from directory.accounts import AccountService
from directory.patients import PatientService
from mailserver.bodies import account_key, open_body
from mailserver.broadcast import BroadcastError, BroadcastService, Progress
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.store.models import Account, AccountKind, AccountStatus, Blob, DomainKind, Message
from tests import support

T = TypeVar("T")
PATIENTS = 1000  # the figure for the suite (100,000 in make bench-broadcast)
KILLED = 300
TEXT = "La campagne de vaccination contre la grippe commence le 15 octobre.\nParlez-en à votre médecin.\n".encode()


def make_ins(n: int) -> str:
    first13 = f"2{n:012d}"
    return first13 + f"{97 - int(first13) % 97:02d}"


async def open_patients(ctx: Context, n: int) -> None:
    report = await PatientService(ctx).open_many((make_ins(i) for i in range(n)), actor="test")
    assert report.opened == n


async def inbox_counts(ctx: Context) -> dict[int, int]:
    """Messages in each account's INBOX, by account id (accounts with none are absent)."""
    async with ctx.uow(readonly=True) as uow:
        accounts = await uow.accounts.list()
        inboxes = await uow.mailboxes.get_many((a.id, "INBOX") for a in accounts)  # names are sealed: by digest
        owner = {m.id: account_id for (account_id, _), m in inboxes.items()}
        rows = await uow.session.execute(
            select(Message.mailbox_id, func.count(Message.id))
            .where(Message.mailbox_id.in_(sorted(owner)))
            .group_by(Message.mailbox_id)
        )
        return {owner[int(m)]: int(c) for m, c in rows.all()}


async def patient_ids(ctx: Context) -> set[int]:
    async with ctx.uow(readonly=True) as uow:
        accounts = await uow.accounts.list(kind=AccountKind.PATIENT, status=AccountStatus.ACTIVE)
        return {a.id for a in accounts}


class Interrupted(Exception):
    pass


def stop_after(pages: int) -> object:
    seen: list[Progress] = []

    def progress(p: Progress) -> None:
        seen.append(p)
        if len(seen) == pages:
            raise Interrupted  # after the page's commit: as a ^C between two pages

    return progress


async def test_every_active_patient_gets_one_copy_sealed_with_its_own_key(ctx: Context) -> None:
    await open_patients(ctx, PATIENTS)
    svc = PatientService(ctx)
    closed = await svc.open(make_ins(PATIENTS + 1), actor="test")
    await svc.close(closed.ins or "", actor="test")
    await AccountService(ctx).add_domain(support.PRO_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    pro = await AccountService(ctx).create(f"dr.who@{support.PRO_DOMAIN}", AccountKind.PER, actor="test")

    seen: list[Progress] = []
    done = await BroadcastService(ctx, page=128).send(
        subject="Grippe : la vaccination commence", text=TEXT, actor="admin:test", progress=seen.append
    )

    active = await patient_ids(ctx)
    assert len(active) == PATIENTS
    counts = await inbox_counts(ctx)
    assert {a: counts.get(a, 0) for a in active} == {a: 1 for a in active}
    assert closed.id not in counts and pro.id not in counts
    assert done.delivered == PATIENTS and not done.resumed
    assert [p.delivered for p in seen] == [*range(128, PATIENTS, 128), PATIENTS, PATIENTS]  # then the final mark
    assert seen[0].total == PATIENTS

    async with ctx.uow(readonly=True) as uow:
        rows = (
            await uow.session.execute(
                select(Account, Blob)
                .join(Blob, Blob.account_id == Account.id)
                .where(Account.kind == AccountKind.PATIENT)
                .order_by(Account.id)
                .limit(2)
            )
        ).all()
        (first, first_blob), (second, second_blob) = rows
        assert first_blob.id != second_blob.id  # a blob of its own per patient
        body = open_body(account_key(ctx.keyring, first), first_blob)
        assert b"Subject: Grippe : la vaccination commence" in body
        assert b"La campagne de vaccination" in body and b"Auto-Submitted: auto-generated" in body
        assert body == open_body(account_key(ctx.keyring, second), second_blob)  # the very same message
        with pytest.raises(DecryptionFailed):
            open_body(account_key(ctx.keyring, second), first_blob)
        actions = [e.action for e in await uow.audit_log.tail(5000)]
    assert actions.count("deliver") >= PATIENTS
    assert "broadcast-start" in actions and "broadcast-end" in actions


async def test_an_interrupted_broadcast_resumes_where_it_stopped(ctx: Context) -> None:
    await open_patients(ctx, 100)
    with pytest.raises(Interrupted):
        await BroadcastService(ctx, page=20).send(subject="Dépistage", text=TEXT, progress=stop_after(3))
    counts = await inbox_counts(ctx)
    assert sum(counts.values()) == 60 and set(counts.values()) == {1}
    (row,) = await BroadcastService(ctx).list()
    assert row.finished_at is None and row.delivered == 60

    await open_patients_more(ctx, 100, 110)  # opened during the interruption: served too
    done = await BroadcastService(ctx, page=20).send(subject="Dépistage", text=TEXT)
    assert done.resumed and done.broadcast_id == row.id and done.delivered == 110
    active = await patient_ids(ctx)
    counts = await inbox_counts(ctx)
    assert {a: counts.get(a, 0) for a in active} == {a: 1 for a in active}
    (row,) = await BroadcastService(ctx).list()
    assert row.finished_at is not None

    # once finished, the same information again is a new broadcast (an operator's choice), not a resume
    again = await BroadcastService(ctx, page=500).send(subject="Dépistage", text=TEXT)
    assert not again.resumed and again.broadcast_id != row.id
    assert set((await inbox_counts(ctx)).values()) == {2}


async def open_patients_more(ctx: Context, start: int, stop: int) -> None:
    await PatientService(ctx).open_many((make_ins(i) for i in range(start, stop)), actor="test")


@pytest.mark.parametrize(
    ("subject", "text", "reason"),
    [
        ("", TEXT, "needs a subject"),
        ("a\r\nBcc: x@y.z", TEXT, "control characters"),
        ("ok", b"\xff\xfe not utf-8", "not UTF-8"),
        ("ok", b"  \n", "empty"),
    ],
)
async def test_bad_input_is_refused_before_any_copy(ctx: Context, subject: str, text: bytes, reason: str) -> None:
    await open_patients(ctx, 3)
    with pytest.raises(BroadcastError, match=reason):
        await BroadcastService(ctx).send(subject=subject, text=text)
    assert await inbox_counts(ctx) == {}
    assert await BroadcastService(ctx).list() == []


def _admin(config: support.Config, *args: str) -> list[str]:
    """The real console script's command line (the process a test kills)."""
    return [*support.ADMIN_SCRIPT, "--config", str(config.path), *args]


#: run before ``masante-admin``: once a page has brought the broadcast to ``KILL_AT`` copies (committed: progress
#: is told after each page's commit), say ``step`` and wait to be killed, so that the kill lands in an unfinished
#: broadcast however fast the machine delivers (a finished one sent again is a new broadcast, by design)
KILL_AT = 60
HOOK = (
    "import time\n"
    "import mailserver.broadcast as b\n"
    "real = b.BroadcastService.send\n"
    "async def send(self, *a, progress=None, **k):\n"
    "    def told(p):\n"
    "        if progress is not None:\n"
    "            progress(p)\n"
    f"        if p.delivered >= {KILL_AT} and p.delivered < p.total:\n"
    "            print('step', flush=True)\n"
    "            time.sleep(3600)\n"
    "    return await real(self, *a, progress=told, **k)\n"
    "b.BroadcastService.send = send\n"
)


def test_the_command_killed_mid_way_and_run_again_leaves_one_copy_each(config: support.Config, tmp_path: Path) -> None:
    """``broadcast send`` killed with SIGKILL between two pages, then run again: exactly one copy per patient."""
    config.path.write_text(config.to_toml())
    env = support.audit_env(config)
    with_context(config, lambda ctx: open_patients(ctx, KILLED))
    file = tmp_path / "grippe.txt"
    file.write_bytes(TEXT)
    command = ["broadcast", "send", "--to", "patients", "--subject", "Grippe", "--page", "10", str(file)]
    admin = "from admin_cli.main import main; main()"
    with subprocess.Popen(  # noqa: S603 - our own command, with the test's hook
        [sys.executable, "-c", HOOK + admin, "--config", str(config.path), *command],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as first:
        try:
            assert first.stdout is not None
            while (line := first.stdout.readline()) and line != "step\n":  # the progress bar's lines, the mark
                pass
            assert line == "step\n", "the broadcast ended before it reached the kill point"
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
    killed_at = _delivered(config)
    assert KILL_AT <= killed_at < KILLED

    second = support.run_admin(*command, config=config.path, env=env, process=True)  # run again, by hand
    assert second.returncode == 0, second.stderr
    assert "resumed and finished" in second.stdout
    assert f"{KILLED} patient mailbox(es)" in second.stdout

    active = with_context(config, patient_ids)
    counts = with_context(config, inbox_counts)
    assert {a: counts.get(a, 0) for a in active} == {a: 1 for a in active}

    listed = support.run_admin("broadcast", "list", config=config.path, env=env)
    assert listed.returncode == 0 and "finished" in listed.stdout and "unfinished" not in listed.stdout


def _delivered(config: support.Config) -> int:
    """Copies committed so far (read from outside the broadcasting process)."""
    return sum(with_context(config, inbox_counts).values())


def with_context(config: support.Config, fn: Callable[[Context], Awaitable[T]]) -> T:
    """``fn`` run on a context of its own, in an event loop of its own (opened and closed in it)."""

    async def go() -> T:
        ctx = Context.open(config)
        try:
            return await fn(ctx)
        finally:
            await ctx.close()

    return asyncio.run(go())


def test_bad_input_from_the_command_line_is_one_line(config: support.Config, tmp_path: Path) -> None:
    config.path.write_text(config.to_toml())
    file = tmp_path / "bad.txt"
    file.write_bytes(b"\xff\xfe")
    r = support.run_admin(
        *("broadcast", "send", "--to", "patients", "--subject", "x", str(file)),
        config=config.path,
        env={**support.audit_env(config), **{k: "" for k in os.environ if k == "MASANTE_DEBUG"}},
    )
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: the message file is not UTF-8 text (byte 0)"]


FULL_AT = 2  # messages a patient may hold, in the quota test below


async def fill(ctx: Context, every: int) -> set[int]:
    """Bring every ``every``-th patient to its message quota (``FULL_AT``); their ids."""
    filled: set[int] = set()
    async with ctx.uow() as uow:
        patients = await uow.accounts.list(kind=AccountKind.PATIENT, status=AccountStatus.ACTIVE)
        for account in sorted(patients, key=lambda a: a.id)[::every]:
            for n in range(FULL_AT):
                raw = f"From: a@b.test\r\nTo: {account.address}\r\nSubject: earlier {n}\r\n\r\nhello\r\n".encode()
                await deliver(uow, ctx.keyring, raw, [account])
            filled.add(account.id)
        await uow.commit()
    return filled


def test_full_mailboxes_are_skipped_and_counted_across_a_resume(
    db_url: str, tmp_path: Path, pki: support.TestPKI
) -> None:
    """A patient whose quota is full is skipped, not waited for; the count said at the end covers every run."""
    config = support.make_config(tmp_path, db_url, pki, limits={"quota_messages_patient": FULL_AT})
    config.path.write_text(config.to_toml())
    env = support.audit_env(config)
    with_context(config, lambda ctx: open_patients(ctx, 40))
    full = with_context(config, lambda ctx: fill(ctx, 4))  # 10 of 40, spread over every page

    async def first_pages(ctx: Context) -> None:
        with pytest.raises(Interrupted):
            await BroadcastService(ctx, page=10).send(subject="Grippe", text=TEXT, progress=stop_after(2))

    with_context(config, first_pages)
    (row,) = with_context(config, lambda ctx: BroadcastService(ctx).list())
    assert row.finished_at is None and (row.delivered, row.skipped) == (15, 5)

    file = tmp_path / "grippe.txt"
    file.write_bytes(TEXT)
    done = support.run_admin(
        "broadcast", "send", "--to", "patients", "--subject", "Grippe", str(file), config=config.path, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "resumed and finished: 30 patient mailbox(es)" in done.stdout
    assert "10 full mailbox(es) skipped" in done.stdout
    counts = with_context(config, inbox_counts)
    active = with_context(config, patient_ids)
    assert {a: counts.get(a, 0) for a in active} == {a: FULL_AT if a in full else 1 for a in active}
    listed = support.run_admin("broadcast", "list", config=config.path, env=env)
    assert listed.returncode == 0 and "skipped (full)" in listed.stdout and " 30 " in listed.stdout
    assert " 10 " in listed.stdout
