"""The crash campaign: a real ``masante-server`` killed (SIGKILL) at seeded random moments under load.

The load is 20 SMTP submission clients (smtplib, STARTTLS, AUTH) sending to a patient of the server, one
message in three also to a professional of another operator (whose MTA is an aiosmtpd sink of this
process), and IMAP clients (imaplib over TLS) that APPEND, STORE ``\\Flagged``, and for one message in
three STORE ``\\Deleted`` and UID EXPUNGE it. The kill moment is a number of acknowledgements (``250``
or ``OK``, both loads together, and at least one of each load) drawn from ``random.Random(seed)``.

Invariants checked after every restart (``Campaign.verify``):
- every message whose submission got ``250`` is in the patient's INBOX exactly once, readable (its body
  decrypts); no message is there twice, acknowledged or not;
- every APPEND that got ``OK`` is there once under the UID its APPENDUID named, unless its EXPUNGE had
  been sent; a STORE that got ``OK`` holds; an EXPUNGE that got ``OK`` holds; UIDs are unique;
- the audit chain verifies (what ``masante-admin audit verify`` runs);
- at the end, the outbound queue has resumed: every acknowledged message to the other operator reached
  its MTA (at least once: a relay that dies after the peer's ``250`` and before its own commit sends it
  again, as RFC 5321 §6.1 allows), and the queue is empty.

``tests/crash/test_crash.py`` runs a short form of it; ``make bench-crash`` the full one.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import imaplib
import os
import random
import re
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from crypto.tls import client_context
from directory.trust import TrustSpace
from mailserver.bodies import read_body
from mailserver.config import Config
from mailserver.context import Context
from mailserver.store.models import Message, QueuedMessage
from tests import support
from tests.harness.messages import message
from tests.test_server_process import Output, clean_env

PRO = f"dr.house@{support.PRO_DOMAIN}"  # the SMTP clients' sender
APPENDER = f"dr.wilson@{support.PRO_DOMAIN}"  # the IMAP clients' account
PATIENT = f"{support.PATIENT_INS}@{support.PATIENT_DOMAIN}"
OTHER = "clinique.test"  # another operator of the trust space: its MTA is the sink
OTHER_DN = "CN=mx.clinique.test,O=Clinique Test,C=FR"
REMOTE = f"dr.far@{OTHER}"
#: seconds to wait for a server to start, a client to give up, the queue to drain (failures, not pacing)
TIMEOUT = 120.0
#: the queue's lease: how long a claim of the killed process holds its rows back
LEASE = 2


# --- the server, as a process ---------------------------------------------------------------------------


class ServerProcess:
    """``masante-server --config CFG`` in a subprocess; ``start`` returns once it listens."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[str] | None = None
        self.output: Output | None = None

    def start(self) -> ServerProcess:
        self.proc = subprocess.Popen(  # noqa: S603 - our own server
            [sys.executable, "-c", "from mailserver.app import main; main()", "--config", str(self.cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(),
        )
        self.output = Output(self.proc)
        self.output.wait_for("stop with Ctrl-C", self.proc, timeout=TIMEOUT)
        return self

    def _reap(self) -> None:
        assert self.proc is not None and self.output is not None
        self.output.finish()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self._reap()

    def stop(self) -> int:
        """SIGTERM; the exit status (0: a clean stop)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._reap()
        return code

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
            self._reap()


# --- the other operator's MTA ----------------------------------------------------------------------------


class Sink:
    """An SMTP server (aiosmtpd, STARTTLS required) counting the subjects it receives."""

    def __init__(self, pki: support.TestPKI) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(pki.server_cert, pki.server_key)
        self.port = support.free_port()
        self.got: Counter[str] = Counter()
        self.cond = threading.Condition()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, tls_context=tls, require_starttls=True)

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's
        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(envelope.content)
        with self.cond:
            self.got[str(headers["Subject"])] += 1
            self.cond.notify_all()
        return "250 2.0.0 received"

    def wait_for(self, subjects: set[str], timeout: float = TIMEOUT) -> set[str]:
        """Wait until every one of ``subjects`` was received; those still missing after ``timeout``."""
        with self.cond:
            self.cond.wait_for(lambda: subjects <= self.got.keys(), timeout=timeout)
            return subjects - self.got.keys()

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


# --- the site ---------------------------------------------------------------------------------------------


@dataclass
class Site:
    """A server directory on disk: configuration, keys, a populated database, the ports it listens on."""

    config: Config
    pki: support.TestPKI
    submission: int
    imaps: int

    @property
    def cfg(self) -> Path:
        return self.config.path

    def tls(self) -> ssl.SSLContext:
        return client_context(self.pki.ca_file)

    def admin(self, *args: str) -> list[str]:
        return [sys.executable, "-c", "from admin_cli.main import main; main()", "--config", str(self.cfg), *args]

    def context(self) -> Context:
        return Context.open(self.config)


def make_site(tmp: Path, db_url: str, pki: support.TestPKI, sink_port: int | None) -> Site:
    submission, imaps = support.free_port(), support.free_port()
    config = support.make_config(
        tmp,
        db_url,
        pki,
        ports={"mx": -1, "submission": submission, "submissions": -1, "imap": -1, "imaps": imaps},
        policy={"rate_professional_per_hour": 0},
        # every client logs in from 127.0.0.1 at once: the limiter counts attempts in flight as failures
        limits={"login_failures_per_source": 1000, "login_failures_per_account": 1000},
        queue={"poll_interval": 0.2, "first_retry": 1, "backoff_factor": 1.0, "lease": LEASE},
        log={"level": "WARNING"},
    )
    config.path.write_text(config.to_toml())
    asyncio.run(_populate(config, sink_port))
    return Site(config, pki, submission, imaps)


async def _populate(config: Config, sink_port: int | None) -> None:
    ctx = Context.open(config)
    try:
        await support.add_domains(ctx)
        await support.make_pro(ctx)
        await support.make_pro(ctx, "dr.wilson")
        await support.make_patient(ctx)
        if sink_port is not None:
            await TrustSpace(ctx).add(OTHER, actor="test", dns=[OTHER_DN], mta_host="127.0.0.1", mta_port=sink_port)
    finally:
        await ctx.close()


# --- what the clients were told ---------------------------------------------------------------------------


@dataclass
class Ledger:
    """Every acknowledgement a client received, in the clients' threads; ``cond`` is notified at each one."""

    submitted: list[str] = field(default_factory=list)  # subjects that got 250
    remote: set[str] = field(default_factory=set)  # of those, the ones also sent to the other operator
    appended: dict[str, int] = field(default_factory=dict)  # subject -> UID of its APPEND OK
    flagged: set[str] = field(default_factory=set)  # STORE +FLAGS (\Flagged) OK
    expunging: set[str] = field(default_factory=set)  # STORE \Deleted or UID EXPUNGE sent
    expunged: set[str] = field(default_factory=set)  # UID EXPUNGE OK
    refusals: list[str] = field(default_factory=list)  # a NO or 4xx/5xx while the server was up
    acks: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)

    def ack(self, record: Callable[[], None]) -> None:
        with self.cond:
            record()
            self.acks += 1
            self.cond.notify_all()


#: what a client meets when the server dies under it
GONE = (OSError, EOFError, smtplib.SMTPServerDisconnected, imaplib.IMAP4.abort, ssl.SSLError)


def smtp_client(site: Site, ledger: Ledger, stop: threading.Event, tag: str) -> None:
    s: smtplib.SMTP | None = None
    try:
        s = smtplib.SMTP("127.0.0.1", site.submission, timeout=TIMEOUT, local_hostname="client.test")
        s.starttls(context=site.tls())
        s.login(PRO, support.PASSWORD)
        i = 0
        while not stop.is_set():
            subject = f"smtp-{tag}-{i}"
            rcpts = [PATIENT, REMOTE] if i % 3 == 0 else [PATIENT]
            s.sendmail(PRO, rcpts, message(PRO, PATIENT, subject, f"{subject}\n" * 20))

            def record(subject: str = subject, remote: bool = len(rcpts) > 1) -> None:
                ledger.submitted.append(subject)
                if remote:
                    ledger.remote.add(subject)

            ledger.ack(record)
            i += 1
    except GONE:
        return  # the server died under us: what was not acknowledged may or may not be there
    except smtplib.SMTPResponseException as exc:
        with ledger.cond:
            ledger.refusals.append(f"{tag}: {exc.smtp_code} {exc.smtp_error!r}")
    finally:
        if s is not None:
            s.close()


APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


def imap_client(site: Site, ledger: Ledger, stop: threading.Event, tag: str) -> None:
    c: imaplib.IMAP4_SSL | None = None

    def ok(typ: str, data: list[Any], what: str) -> bool:
        if typ != "OK":
            with ledger.cond:
                ledger.refusals.append(f"{tag}: {what}: {typ} {data!r}")
        return typ == "OK"

    try:
        c = imaplib.IMAP4_SSL("127.0.0.1", site.imaps, ssl_context=site.tls(), timeout=TIMEOUT)
        c.login(APPENDER, support.PASSWORD)
        c.select("INBOX")
        i = 0
        while not stop.is_set():
            subject = f"imap-{tag}-{i}"
            i += 1
            typ, data = c.append("INBOX", "", None, message(APPENDER, APPENDER, subject, f"{subject}\n" * 20))
            m = APPENDUID.search(data[0] or b"")
            if not ok(typ, data, "APPEND") or not ok("OK" if m else "no APPENDUID", data, "APPEND"):
                continue
            assert m is not None
            uid = int(m.group(1))
            ledger.ack(lambda s=subject, u=uid: ledger.appended.__setitem__(s, u))
            typ, data = c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Flagged)")
            if ok(typ, data, "STORE"):
                ledger.ack(lambda s=subject: ledger.flagged.add(s))
            if i % 3:
                continue
            with ledger.cond:
                ledger.expunging.add(subject)
            typ, data = c.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")
            if not ok(typ, data, "STORE"):
                continue
            typ, data = c.uid("EXPUNGE", str(uid))
            if ok(typ, data, "UID EXPUNGE"):
                ledger.ack(lambda s=subject: ledger.expunged.add(s))
    except GONE:
        return
    except imaplib.IMAP4.error as exc:
        with ledger.cond:
            ledger.refusals.append(f"{tag}: {exc}")
    finally:
        if c is not None:
            try:
                c.shutdown()
            except OSError:
                pass


# --- what the store holds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stored:
    uid: int
    flags: frozenset[str]
    subject: str


async def _contents(ctx: Context, address: str) -> list[Stored]:
    """``address``'s INBOX, every body decrypted (a message that cannot be read fails here)."""
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    async with ctx.uow(readonly=True) as uow:
        account = await uow.accounts.by_address(address)
        assert account is not None, address
        mailbox = await uow.mailboxes.get(account.id, "INBOX")
        assert mailbox is not None
        rows = (await uow.session.execute(select(Message).where(Message.mailbox_id == mailbox.id))).scalars().all()
        out = []
        for m in rows:
            raw = await read_body(uow, ctx.keyring, account, m)
            out.append(Stored(m.uid, frozenset(m.flags.split()), str(parser.parsebytes(raw)["Subject"])))
        return out


async def _queued(ctx: Context) -> int:
    async with ctx.uow(readonly=True) as uow:
        return int((await uow.session.execute(select(func.count()).select_from(QueuedMessage))).scalar_one())


async def audit_report(ctx: Context) -> tuple[bool, str]:
    """What ``masante-admin audit verify`` says: (intact, its sentence)."""
    async with ctx.uow(readonly=True) as uow:
        report = await uow.audit_log.report()
    return report.intact, report.sentence()


def with_context(site: Site, fn: Callable[[Context], Any]) -> Any:
    async def go() -> Any:
        ctx = site.context()
        try:
            return await fn(ctx)
        finally:
            await ctx.close()

    return asyncio.run(go())


# --- the campaign -----------------------------------------------------------------------------------------


@dataclass
class Round:
    """One kill: after how many acknowledgements it was aimed, and what had been acknowledged by then."""

    aim: int
    acks: int
    submitted: int
    appended: int


@dataclass
class Campaign:
    site: Site
    seed: int
    smtp_clients: int = 20
    imap_clients: int = 20
    #: a kill is aimed at a number of new acknowledgements drawn from this range
    aim: tuple[int, int] = (10, 120)
    ledger: Ledger = field(default_factory=Ledger)
    rounds: list[Round] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def load_and_kill(self, server: ServerProcess) -> None:
        """Start the load on ``server``, SIGKILL it after a drawn number of acknowledgements, stop the load."""
        aim = self.rng.randint(*self.aim)
        stop = threading.Event()
        n = len(self.rounds)
        threads = [
            threading.Thread(target=smtp_client, args=(self.site, self.ledger, stop, f"{n}.{k}"), daemon=True)
            for k in range(self.smtp_clients)
        ] + [
            threading.Thread(target=imap_client, args=(self.site, self.ledger, stop, f"{n}.{k}"), daemon=True)
            for k in range(self.imap_clients)
        ]
        ledger = self.ledger
        with ledger.cond:
            start, submitted, appended = ledger.acks, len(ledger.submitted), len(ledger.appended)
        for t in threads:
            t.start()

        def due() -> bool:  # the drawn count, and both loads acknowledged in this round
            both = len(ledger.submitted) > submitted and len(ledger.appended) > appended
            return (ledger.acks - start >= aim and both) or bool(ledger.refusals)

        with ledger.cond:
            reached = ledger.cond.wait_for(due, timeout=TIMEOUT)
        server.kill()
        stop.set()
        for t in threads:
            t.join(TIMEOUT)
        assert reached, f"only {self.ledger.acks - start} acknowledgements of {aim} in {TIMEOUT} s"
        assert not self.ledger.refusals, self.ledger.refusals
        with self.ledger.cond:
            self.rounds.append(
                Round(aim, self.ledger.acks - start, len(self.ledger.submitted), len(self.ledger.appended))
            )

    def verify(self) -> list[str]:
        """What is wrong in the store against what the clients were told (empty: nothing)."""
        with self.ledger.cond:
            submitted = list(self.ledger.submitted)
            appended = dict(self.ledger.appended)
            flagged, expunging = set(self.ledger.flagged), set(self.ledger.expunging)
            expunged = set(self.ledger.expunged)

        async def look(ctx: Context) -> tuple[list[Stored], list[Stored], tuple[bool, str]]:
            return await _contents(ctx, PATIENT), await _contents(ctx, APPENDER), await audit_report(ctx)

        inbox, appender, (intact, sentence) = with_context(self.site, look)
        problems: list[str] = []
        counts = Counter(m.subject for m in inbox)
        problems += [f"submitted, got 250, missing: {s}" for s in submitted if s not in counts]
        problems += [f"delivered {c} times: {s}" for s, c in counts.items() if c > 1]
        by_subject: dict[str, list[Stored]] = {}
        for m in appender:
            by_subject.setdefault(m.subject, []).append(m)
        uids = Counter(m.uid for m in appender)
        problems += [f"UID {u} held by {c} messages" for u, c in uids.items() if c > 1]
        problems += [f"appended {len(v)} times: {s}" for s, v in by_subject.items() if len(v) > 1]
        for s, uid in appended.items():
            found = by_subject.get(s, [])
            if s in expunged:
                if found:
                    problems.append(f"expunged (OK) but still there: {s}")
            elif s not in expunging:
                if not found:
                    problems.append(f"appended (OK, UID {uid}), missing: {s}")
                elif found[0].uid != uid:
                    problems.append(f"appended with UID {uid}, stored as {found[0].uid}: {s}")
                elif s in flagged and "\\Flagged" not in found[0].flags:
                    problems.append(f"STORE \\Flagged got OK, flag lost: {s}")
        if not intact:
            problems.append(f"audit verify: {sentence}")
        return problems

    def queue_resumed(self, sink: Sink) -> list[str]:
        """Every acknowledged message to the other operator reached it, and the queue drained."""
        with self.ledger.cond:
            remote = set(self.ledger.remote)
        missing = sink.wait_for(remote)
        if missing:
            return [f"never relayed to {OTHER}: {s}" for s in sorted(missing)]
        deadline = time.monotonic() + TIMEOUT
        left = with_context(self.site, _queued)
        while left and time.monotonic() < deadline:  # the rows go in the commit after the peer's 250
            time.sleep(0.1)
            left = with_context(self.site, _queued)
        return [f"{left} messages still queued"] if left else []

    def run(self, kills: int, sink: Sink | None = None, report: Callable[[str], None] = lambda _: None) -> list[str]:
        """``kills`` rounds of load, kill, restart and verify; then the queue; a clean stop. The problems."""
        server = ServerProcess(self.site.cfg).start()
        problems: list[str] = []
        try:
            for k in range(kills):
                self.load_and_kill(server)
                server.start()  # the same store, the same ports
                found = self.verify()
                r = self.rounds[-1]
                report(
                    f"  kill {k + 1}/{kills} after {r.acks} acknowledgements (aimed at {r.aim}): "
                    f"{r.submitted} submitted and {r.appended} appended so far, "
                    + ("all there once, audit intact" if not found else f"{len(found)} PROBLEMS")
                )
                problems += found
            if sink is not None:
                found = self.queue_resumed(sink)
                report(
                    f"  queue: {len(self.ledger.remote)} acknowledged messages to {OTHER} "
                    + ("all relayed, queue empty" if not found else "NOT all relayed")
                )
                problems += found
            code = server.stop()
            if code != 0:
                problems.append(f"the restarted server did not stop cleanly (exit {code})")
        finally:
            server.ensure_dead()
        return problems


def another_process(site: Site, name: str) -> Site:
    """The configuration of a second ``masante-server`` on ``site``'s database and keys, on ports of its own
    (``<name>.toml`` beside the first, so that its relative paths name the same files)."""
    submission, imaps = support.free_port(), support.free_port()
    data = site.config.to_toml().replace(f"= {site.submission}\n", f"= {submission}\n")
    data = data.replace(f"= {site.imaps}\n", f"= {imaps}\n")
    path = site.cfg.with_name(f"{name}.toml")
    path.write_text(data)
    from mailserver.config import load

    config = load(path)
    assert (config.ports.submission, config.ports.imaps) == (submission, imaps)
    return Site(config, site.pki, submission, imaps)
