"""Two operators on one machine, each in the other's trust space: mail goes both ways over mutual TLS with DKIM.

Operator A (``hopital.a.test``) and operator B (``patient.masante.fr`` and
``clinique.b.test``) are two whole servers with their own databases, KEKs,
DKIM keys and certificates from one test CA. A professional at A writes to a
patient at B through A's submission port; A signs and queues it, its worker
delivers it to B's MX; the patient reads it over IMAP at B and replies through
B's submission port; the reply reaches the professional's INBOX at A.
"""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from directory.accounts import AccountService
from directory.dkim import DkimKeys
from directory.trust import TrustSpace
from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.store.models import AccountKind, DomainKind
from tests import support
from tests.smtp.conftest import free_port
from tests.smtp.harness import Databases, ServerThread, find, marker, message, tls_client

A_DOMAIN = "hopital.a.test"
B_PATIENTS = "patient.masante.fr"
B_PROS = "clinique.b.test"
A_HOST, B_HOST = "mx.hopital.a.test", "mx.b.test"
A_DN = "CN=mx.hopital.a.test,O=Operateur A,C=FR"
B_DN = "CN=mx.b.test,O=Operateur B,C=FR"
PRO_A = f"dr.martin@{A_DOMAIN}"
PATIENT_B = f"{support.PATIENT_INS}@{B_PATIENTS}"
FULL_B = f"200000000000787@{B_PATIENTS}"  # a patient whose mailbox is full
PATIENT_QUOTA = 200_000  # octets a patient may hold at either operator


@dataclass
class Operator:
    name: str
    hostname: str
    dn: str
    tmp: Path
    db_url: str
    mx_port: int
    config: support.Config
    server: ServerThread | None = None
    clock: FakeClock = field(default_factory=FakeClock)  # the machine's clock: it outlives a restart

    def start(self) -> ServerThread:
        self.server = ServerThread(self.config, clock=self.clock, name=f"operator-{self.name}").start()
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    @property
    def up(self) -> ServerThread:
        assert self.server is not None
        return self.server


def make_operator(name: str, hostname: str, dn: str, tmp: Path, db_url: str, pki: support.TestPKI) -> Operator:
    issued = pki.ca.issue(dn, dns_names=(hostname, "localhost"), ip_addresses=("127.0.0.1",))
    cert, key = tmp / f"{name}.pem", tmp / f"{name}.key"
    issued.write(cert, key)
    mx_port = free_port()
    cfg = support.make_config(
        tmp,
        db_url,
        pki,
        server={"hostname": hostname, "bind": "127.0.0.1"},
        ports={"mx": mx_port},
        tls={"cert": str(cert), "key": str(key), "client_cert": str(cert), "client_key": str(key)},
        policy={"remote_patient_domains": [B_PATIENTS], "rate_professional_per_hour": 0},
        limits={"quota_patient": PATIENT_QUOTA},
        queue={"poll_interval": 0.2, "first_retry": 1, "backoff_factor": 1.0, "connect_timeout": 5,
               "command_timeout": 30},
    )  # fmt: skip
    return Operator(name, hostname, dn, tmp, db_url, mx_port, cfg)


async def setup_a(ctx: Context, b_mx: int) -> str:
    svc = AccountService(ctx)
    await svc.add_domain(A_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    await svc.create(PRO_A, AccountKind.PER, actor="test", password=support.PASSWORD, profession_code="10")
    trust = TrustSpace(ctx)
    for domain in (B_PATIENTS, B_PROS):
        await trust.add(domain, actor="test", dns=[B_DN], mta_host="127.0.0.1", mta_port=b_mx, dkim_signing=True)
    return (await DkimKeys(ctx).generate(A_DOMAIN, actor="test", selector="a2026")).record


async def setup_b(ctx: Context, a_mx: int) -> str:
    svc = AccountService(ctx)
    await svc.add_domain(B_PATIENTS, DomainKind.PATIENT, actor="test")
    await svc.add_domain(B_PROS, DomainKind.PROFESSIONAL, actor="test")
    await svc.create(PATIENT_B, AccountKind.PATIENT, actor="test", password=support.PASSWORD)
    await TrustSpace(ctx).add(
        A_DOMAIN, actor="test", dns=[A_DN], mta_host="127.0.0.1", mta_port=a_mx, dkim_signing=True
    )
    return (await DkimKeys(ctx).generate(B_PATIENTS, actor="test", selector="b2026")).record


async def add_key(ctx: Context, domain: str, selector: str, record: str) -> None:
    await DkimKeys(ctx).add(domain, selector, record, actor="test")


@pytest.fixture(scope="module")
def operators(
    dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Operator, Operator]]:
    a = make_operator("a", A_HOST, A_DN, tmp_path_factory.mktemp("operator-a"), dbs.new(), pki)
    b = make_operator("b", B_HOST, B_DN, tmp_path_factory.mktemp("operator-b"), dbs.new(), pki)
    try:
        a.start()
        b.start()
        a_record = a.up.call(setup_a, b.mx_port)
        b_record = b.up.call(setup_b, a.mx_port)
        b.up.call(add_key, A_DOMAIN, "a2026", a_record)
        a.up.call(add_key, B_PATIENTS, "b2026", b_record)
        yield a, b
    finally:
        a.stop()
        b.stop()


async def queued_attempts(ctx: Context, rcpt: str) -> list[int]:
    async with ctx.uow(readonly=True) as uow:
        return [q.attempts for q in await uow.queue.list() if q.rcpt_to == rcpt]


def submit(
    op: Operator,
    pki: support.TestPKI,
    user: str,
    raw: bytes,
    rcpt: str,
    mail_options: tuple[str, ...] = (),
    rcpt_options: tuple[str, ...] = (),
) -> None:
    s = smtplib.SMTP("127.0.0.1", op.up.port("submission"), timeout=30, local_hostname="client.test")
    s.starttls(context=tls_client(pki))
    s.login(user, support.PASSWORD)
    refused = s.sendmail(user, [rcpt], raw, mail_options=mail_options, rcpt_options=rcpt_options)
    s.quit()
    assert refused == {}


def parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def one_line(value: object) -> str:
    return " ".join(str(value).split())


def test_professional_writes_patient_reads_over_imap_and_replies(
    operators: tuple[Operator, Operator], pki: support.TestPKI
) -> None:
    a, b = operators
    tag = marker()
    submit(a, pki, PRO_A, message(PRO_A, PATIENT_B, f"Vos resultats {tag}", "Les resultats sont normaux.\n"), PATIENT_B)

    # at B: the patient reads it over IMAP
    def over_imap() -> list[bytes]:
        m = imaplib.IMAP4_SSL("127.0.0.1", b.up.port("imaps"), ssl_context=tls_client(pki), timeout=30)
        try:
            m.login(PATIENT_B, support.PASSWORD)
            m.select("INBOX")
            typ, data = m.uid("SEARCH", None, "SUBJECT", tag)  # type: ignore[arg-type]
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            bodies = []
            for uid in uids:
                typ, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
                bodies += [p[1] for p in parts if isinstance(p, tuple)]
            return bodies
        finally:
            m.logout()

    a.up.settle()  # A's queue relayed it to B's MX, which answered once it had committed
    [arrived] = over_imap()
    msg = parsed(arrived)
    hop_b, hop_a = (one_line(r) for r in msg.get_all("Received")[:2])
    assert f"by {B_HOST}" in hop_b and "with ESMTPS" in hop_b and f"client certificate {A_DN} verified" in hop_b
    assert f"by {A_HOST}" in hop_a and "with ESMTPSA" in hop_a and "TLSv1." in hop_a
    assert one_line(msg["Authentication-Results"]).startswith(f"{B_HOST}; dkim=pass header.d={A_DOMAIN} header.s=a2026")

    # the patient replies through B's submission; B's queue worker relays it to A's MX
    reply = message(
        PATIENT_B, PRO_A, f"Re: Vos resultats {tag}", "Merci docteur.\n", In_Reply_To=str(msg["Message-ID"])
    )
    submit(b, pki, PATIENT_B, reply, PRO_A)
    b.up.settle()
    [back] = find(a.up, PRO_A, f"Re: Vos resultats {tag}")
    answer = parsed(back)
    assert one_line(answer["Authentication-Results"]).startswith(
        f"{A_HOST}; dkim=pass header.d={B_PATIENTS} header.s=b2026"
    )
    hop = one_line(answer.get_all("Received")[0])
    assert f"by {A_HOST}" in hop and f"client certificate {B_DN} verified" in hop


def test_notify_success_comes_back_from_the_other_operator(
    operators: tuple[Operator, Operator], pki: support.TestPKI
) -> None:
    a, b = operators
    tag = marker()
    submit(
        a, pki, PRO_A, message(PRO_A, PATIENT_B, f"accuse {tag}"), PATIENT_B,
        mail_options=(f"ENVID={tag}",), rcpt_options=("NOTIFY=SUCCESS,FAILURE",),
    )  # fmt: skip
    a.up.settle()  # relayed to B, which took the NOTIFY parameters: B reports the delivery itself
    b.up.settle()  # B's DSN, queued for A
    [report] = find(a.up, PRO_A, f"Original-Envelope-Id: {tag}")
    text = report.decode()
    assert f"Reporting-MTA: dns; {B_HOST}" in text and "Action: delivered" in text
    assert f"Final-Recipient: rfc822; {PATIENT_B}" in text


def test_a_refusal_at_the_other_operator_bounces_at_once(
    operators: tuple[Operator, Operator], pki: support.TestPKI
) -> None:
    a, _b = operators
    tag = marker()
    nobody = f"185077505612323@{B_PATIENTS}"
    submit(a, pki, PRO_A, message(PRO_A, nobody, f"perdu {tag}"), nobody)
    a.up.settle()  # B refused it at RCPT: A bounces at once, without a retry
    [report] = find(a.up, PRO_A, f"perdu {tag}")
    text = report.decode()
    assert "Action: failed" in text and "Status: 5.1.1" in text and "Remote-MTA: dns; 127.0.0.1" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1" in text


def test_the_queue_survives_a_restart_while_the_other_operator_is_down(
    operators: tuple[Operator, Operator], pki: support.TestPKI
) -> None:
    a, b = operators
    tag = marker()
    b.stop()
    try:
        submit(a, pki, PRO_A, message(PRO_A, PATIENT_B, f"patience {tag}"), PATIENT_B)
        a.up.settle()  # the first attempt fails: B is down
        assert a.up.call(queued_attempts, PATIENT_B) == [1]
        a.stop()
        a.start()
    finally:
        b.start()
    a.up.settle()
    assert find(b.up, PATIENT_B, f"patience {tag}") == []  # not before its retry is due
    a.up.advance(1)  # first_retry: the restarted worker tries again, and B is back
    assert find(b.up, PATIENT_B, f"patience {tag}") != [] and a.up.call(queued_attempts, PATIENT_B) == []


def test_a_full_mailbox_at_the_other_operator_bounces_with_5_2_2(
    operators: tuple[Operator, Operator], pki: support.TestPKI
) -> None:
    a, b = operators
    tag = marker()
    full = b.up.call(support.make_patient, FULL_B.partition("@")[0])
    b.up.deliver(full, message("x@y.test", FULL_B, "bulky", ("x" * 70 + "\n") * (PATIENT_QUOTA // 70)))
    submit(a, pki, PRO_A, message(PRO_A, FULL_B, f"trop plein {tag}"), FULL_B)
    a.up.settle()  # B refused it (552 5.2.2): A's queue bounces at once, the DSN says the mailbox is full
    [report] = find(a.up, PRO_A, f"trop plein {tag}")
    text = report.decode()
    assert "Action: failed" in text and "Status: 5.2.2" in text and f"Final-Recipient: rfc822; {FULL_B}" in text
    assert "Diagnostic-Code: smtp; 552 5.2.2" in text and "mailbox is full" in text
