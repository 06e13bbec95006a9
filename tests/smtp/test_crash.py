"""Durable acceptance: SIGKILL the server while 20 clients submit; every message that got 250 is there once."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import smtplib
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mailserver.bodies import read_body
from mailserver.context import Context
from tests import support
from tests.smtp.conftest import PATIENT, PRO, free_port
from tests.smtp.harness import Databases, message, tls_client
from tests.test_server_process import Output, clean_env

CLIENTS = 20
KILL_AFTER_ACKS = 150
KILL_AFTER_SECONDS = 8.0
MIN_ACKS = 20


def server_process(cfg: Path) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    output = Output(proc)
    output.wait_for("stop with Ctrl-C", proc, timeout=60)
    return proc, output


async def populate(config: support.Config) -> None:
    ctx = Context.open(config)
    try:
        await support.add_domains(ctx)
        await support.make_pro(ctx)
        await support.make_patient(ctx)
    finally:
        await ctx.close()


async def stored_subjects(config: support.Config) -> list[str]:
    ctx = Context.open(config)
    try:
        async with ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(PATIENT)
            assert account is not None
            mailbox = await uow.mailboxes.get(account.id, "INBOX")
            assert mailbox is not None
            from sqlalchemy import select

            from mailserver.store.models import Message

            rows = (await uow.session.execute(select(Message).where(Message.mailbox_id == mailbox.id))).scalars()
            subjects = []
            for m in rows.all():
                raw = await read_body(uow, ctx.keyring, account, m)  # decrypts: readable after the crash
                subjects.append(str(email.message_from_bytes(raw, policy=email.policy.default)["Subject"]))
            return subjects
    finally:
        await ctx.close()


@pytest.mark.slow
def test_sigkill_while_20_clients_send_loses_and_duplicates_nothing(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path
) -> None:
    port = free_port()
    config = support.make_config(
        tmp_path,
        dbs.new(),
        pki,
        ports={"mx": -1, "submission": port, "submissions": -1, "imap": -1, "imaps": -1},
        policy={"rate_professional_per_hour": 0},
        log={"level": "WARNING"},
    )
    config.path.write_text(config.to_toml())
    asyncio.run(populate(config))

    proc, _out = server_process(config.path)
    acked: list[str] = []
    lock = threading.Condition()  # notified at each acknowledgement
    stop = threading.Event()

    def client(n: int) -> None:
        s: smtplib.SMTP | None = None
        try:
            s = smtplib.SMTP("127.0.0.1", port, timeout=20)
            s.starttls(context=tls_client(pki))
            s.login(PRO, support.PASSWORD)
            i = 0
            while not stop.is_set():
                subject = f"crash-{n}-{i}"
                s.sendmail(PRO, [PATIENT], message(PRO, PATIENT, subject, f"message {subject}\n" * 20))
                with lock:
                    acked.append(subject)
                    lock.notify_all()
                i += 1
        except (smtplib.SMTPException, OSError):
            return  # the server died under us: what was not acknowledged may or may not be there
        finally:
            if s is not None:
                s.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        with lock:  # kill mid-stream: after that many acknowledgements, or that long at most...
            lock.wait_for(lambda: len(acked) >= KILL_AFTER_ACKS, timeout=KILL_AFTER_SECONDS)
            # ...but on a loaded machine, not before there is something to show
            lock.wait_for(lambda: len(acked) >= MIN_ACKS, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _out.finish()
        assert proc.stdout is not None
        proc.stdout.close()
        stop.set()
        for t in threads:
            t.join(30)
        with lock:
            confirmed = list(acked)
        assert len(confirmed) >= MIN_ACKS, "too few messages were accepted before the kill to show anything"

        proc, _out = server_process(config.path)  # the server comes back on the same store
        subjects = asyncio.run(stored_subjects(config))
        counts: dict[str, int] = {}
        for s in subjects:
            counts[s] = counts.get(s, 0) + 1
        missing = [s for s in confirmed if s not in counts]
        duplicated = [s for s, c in counts.items() if c > 1]
        assert missing == [] and duplicated == []
        assert all(s.startswith("crash-") for s in subjects)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        _out.finish()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
