"""QUOTA (RFC 9208) through real sockets and TLS: GETQUOTA, GETQUOTAROOT, SETQUOTA refused, and the quota
enforced on IMAP APPEND and COPY (``NO [OVERQUOTA]``) and on SMTP delivery (``552 5.2.2`` at RCPT or DATA), for
both resources (STORAGE, MESSAGE), and without overshoot under concurrent APPENDs and deliveries.

The module's server gives a professional 40,000 octets and 8 messages, a patient 60,000 octets (no limit on
the count), of which 10,000 for the vault. Usage is said in KiB, rounded up; the limits in KiB, rounded down.
"""

from __future__ import annotations

import concurrent.futures
import imaplib
import ssl
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import imapclient
import pytest

from mailserver.store.models import Account
from tests import support
from tests.harness.server import server_fixture
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, domains, imaps, message, raw_command
from tests.smtp.harness import inbox, submission

T = TypeVar("T")
PRO_QUOTA = 40_000
PRO_MESSAGES = 8
PATIENT_QUOTA = 60_000
VAULT_QUOTA = 10_000

quota_server = server_fixture(
    domains,
    name="quota_server",
    limits={
        "quota_professional": PRO_QUOTA,
        "quota_messages_professional": PRO_MESSAGES,
        "quota_patient": PATIENT_QUOTA,
        "vault_quota": VAULT_QUOTA,
    },
    policy={"rate_professional_per_hour": 0},
)


@pytest.fixture
def srv(quota_server: ServerThread) -> Iterator[ServerThread]:
    yield quota_server
    quota_server.reset_throttle()


def sized(sender: str, rcpt: str, subject: str, size: int) -> bytes:
    """A message of ``size`` octets or a line more (its body pads it)."""
    head = message(sender, rcpt, subject, "")
    return message(sender, rcpt, subject, ("x" * 70 + "\n") * max(0, -(-(size - len(head)) // 72)))


def kib(octets: int) -> int:
    return -(-octets // 1024)


def storage_used(srv: ServerThread, user: Account) -> int:
    async def read(ctx: object) -> int:
        from mailserver.store.repositories.quota import UsageViews

        async with srv.ctx.uow(readonly=True) as uow:
            return (await UsageViews(uow.session).usage(user.id)).octets

    return srv.call(read)


def test_quota_is_advertised_and_reported(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    listed = raw_command(m, "CAPABILITY")[0].split()
    assert b"QUOTA" in listed and b"QUOTA=RES-STORAGE" in listed and b"QUOTASET" not in listed
    assert b"QUOTA=RES-MESSAGE" in listed  # RFC 9208 §5.2
    lines = raw_command(m, "GETQUOTAROOT INBOX")
    assert lines[:2] == [b'* QUOTAROOT "INBOX" ""', b'* QUOTA "" (STORAGE 0 39 MESSAGE 0 8)']
    assert lines[-1].endswith(b"OK GETQUOTAROOT completed") and len(lines) == 3
    srv.deliver(user, sized("a@b.test", user.address, "one", 5000))
    srv.deliver(user, sized("a@b.test", user.address, "two", 3000), mailbox="Sent")
    used = storage_used(srv, user)
    assert 7900 < used < 8200
    lines = raw_command(m, 'GETQUOTA ""')
    assert lines[0] == f'* QUOTA "" (STORAGE {kib(used)} 39 MESSAGE 2 8)'.encode()
    assert lines[-1].endswith(b"OK GETQUOTA completed")
    assert b"NO [NONEXISTENT]" in raw_command(m, "GETQUOTA Documents")[-1]  # a professional has no vault root
    assert b"NO [NONEXISTENT]" in raw_command(m, "GETQUOTAROOT Nowhere")[-1]
    refused = raw_command(m, 'SETQUOTA "" (STORAGE 100000)')[-1]
    assert b"NO [NOPERM]" in refused and b"operator" in refused


def test_imapclient_reads_the_quota_roots(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    srv.deliver(user, sized("a@b.test", user.address, "one", 2500))
    with imapclient.IMAPClient(HOST, port=srv.port("imaps"), ssl=True, ssl_context=tls_client, timeout=TIMEOUT) as c:
        c.login(user.address, support.PASSWORD)
        assert c.has_capability("QUOTA")
        roots, quotas = c.get_quota_root("INBOX")
        assert roots.mailbox == "INBOX" and roots.quota_roots == [""]
        q, n = quotas
        assert (q.quota_root, q.resource, q.usage, q.limit) == ("", "STORAGE", kib(storage_used(srv, user)), 39)
        assert (n.quota_root, n.resource, n.usage, n.limit) == ("", "MESSAGE", 1, PRO_MESSAGES)
        assert c.get_quota("INBOX") == quotas and c._get_quota("") == quotas


def test_a_patient_has_a_vault_root_under_documents(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    patient = srv.make_patient(support.OTHER_INS)
    m = imaps(srv, tls_client, patient)
    try:
        lines = raw_command(m, 'GETQUOTAROOT "Documents/Resultats"')
        assert lines[0] == b'* QUOTAROOT "Documents/Resultats" "" "Documents"'
        assert lines[1] == b'* QUOTA "" (STORAGE 0 58)'
        assert lines[2] == b'* QUOTA "Documents" (STORAGE 0 9)'
        assert raw_command(m, "GETQUOTAROOT INBOX")[0] == b'* QUOTAROOT "INBOX" ""'
    finally:
        m.logout()


def test_append_past_the_quota_is_refused_whole(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, sized("a@b.test", user.address, "big", 30_000))
    before = storage_used(srv, user)
    typ, data = m.append("INBOX", "", None, sized(user.address, user.address, "too much", 12_000))
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA] The mailbox is full")
    assert f"of {PRO_QUOTA} bytes".encode() in data[0]
    assert storage_used(srv, user) == before
    typ, _ = m.append("Drafts", "", None, sized(user.address, user.address, "fits", 5_000))
    assert typ == "OK"


def test_a_multiappend_is_counted_whole(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    one = sized(user.address, user.address, "half", 22_000)
    wire = b"{%d+}\r\n" % len(one) + one
    lines = raw_command(m, b"APPEND INBOX " + wire + b" " + wire)
    assert b"NO [OVERQUOTA]" in lines[-1]
    assert storage_used(srv, user) == 0
    assert b"OK [APPENDUID" in raw_command(m, b"APPEND INBOX " + wire)[-1]


def test_copy_past_the_quota_is_refused_and_move_is_not(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, sized("a@b.test", user.address, "big", 25_000))
    m.select("INBOX")
    typ, data = m.copy("1", "Trash")
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA]")
    typ, _ = m._simple_command("MOVE", "1", "Trash")  # type: ignore[attr-defined]
    assert typ == "OK"  # a move takes no more room
    m.select("Trash")
    assert m.search(None, "ALL")[1] == [b"1"]


def test_smtp_refuses_a_full_mailbox_at_rcpt_and_a_message_too_big_for_it_at_data(
    srv: ServerThread, pki: support.TestPKI, user: Account
) -> None:
    full, nearly = srv.make_pro("full"), srv.make_pro("nearly")
    srv.deliver(full, sized("a@b.test", full.address, "fill", PRO_QUOTA + 10))
    srv.deliver(nearly, sized("a@b.test", nearly.address, "fill", 30_000))
    s = submission(srv, pki, user.address)
    try:
        s.mail(user.address)
        code, text = s.rcpt(full.address)
        assert code == 552 and text.startswith(b"5.2.2 The recipient's mailbox is full")
        assert s.rcpt(nearly.address)[0] == 250
        code, text = s.data(sized(user.address, nearly.address, "too big for you", 15_000))
        assert code == 552 and text.startswith(b"5.2.2 The recipient's mailbox has no room left")
        s.rset()
        s.mail(user.address)
        assert s.rcpt(nearly.address)[0] == 250
        assert s.data(sized(user.address, nearly.address, "small enough", 4_000))[0] == 250
    finally:
        s.quit()
    assert len(inbox(srv, nearly.address)) == 2
    assert len(inbox(srv, full.address)) == 1


def messages_held(srv: ServerThread, user: Account) -> int:
    async def read(ctx: object) -> int:
        from mailserver.store.repositories.quota import UsageViews

        async with srv.ctx.uow(readonly=True) as uow:
            return (await UsageViews(uow.session).usage(user.id)).messages

    return srv.call(read)


def test_the_message_count_is_bounded_on_append_and_smtp(
    srv: ServerThread, pki: support.TestPKI, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    for i in range(PRO_MESSAGES - 1):
        srv.deliver(user, sized("a@b.test", user.address, f"small {i}", 300))
    one = sized(user.address, user.address, "last one", 300)
    wire = b"{%d+}\r\n" % len(one) + one
    assert b"NO [OVERQUOTA]" in raw_command(m, b"APPEND Drafts " + wire + b" " + wire)[-1]  # two: counted whole
    assert messages_held(srv, user) == PRO_MESSAGES - 1
    assert m.append("Drafts", "", None, one)[0] == "OK"  # the last one fits
    typ, data = m.append("INBOX", "", None, one)
    assert typ == "NO" and data[0].startswith(b"[OVERQUOTA] The mailbox is full")
    assert f"of {PRO_MESSAGES} messages".encode() in data[0]
    assert raw_command(m, 'GETQUOTA ""')[0].endswith(f"MESSAGE {PRO_MESSAGES} {PRO_MESSAGES})".encode())
    sender = srv.make_pro("sender")
    s = submission(srv, pki, sender.address)
    try:
        s.mail(sender.address)
        code, text = s.rcpt(user.address)
        assert code == 552 and text.startswith(b"5.2.2 The recipient's mailbox is full")
    finally:
        s.quit()
    assert messages_held(srv, user) == PRO_MESSAGES


def _at_once(n: int, one: Callable[[int, threading.Barrier], T]) -> list[T]:
    """``one(i, barrier)`` in ``n`` threads, which meet at the barrier before their last command."""
    barrier = threading.Barrier(n, timeout=TIMEOUT)
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda i: one(i, barrier), range(n)))


RACERS = 10
ROOM = 3


def test_concurrent_appends_never_overshoot(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    for i in range(PRO_MESSAGES - ROOM):
        srv.deliver(user, sized("a@b.test", user.address, f"held {i}", 300))

    def append(i: int, barrier: threading.Barrier) -> str:
        c = imaps(srv, tls_client, user)
        try:
            barrier.wait()
            typ, data = c.append("INBOX", "", None, sized(user.address, user.address, f"racer {i}", 300))
            return typ if typ == "OK" else data[0].decode()
        finally:
            c.logout()

    answers = _at_once(RACERS, append)
    assert answers.count("OK") == ROOM, answers
    assert all(a.startswith("[OVERQUOTA]") for a in answers if a != "OK")
    assert messages_held(srv, user) == PRO_MESSAGES


def test_concurrent_deliveries_never_overshoot(srv: ServerThread, pki: support.TestPKI, user: Account) -> None:
    for i in range(PRO_MESSAGES - ROOM):
        srv.deliver(user, sized("a@b.test", user.address, f"held {i}", 300))
    sender = srv.make_pro("racer")

    def send(i: int, barrier: threading.Barrier) -> tuple[int, bytes]:
        s = submission(srv, pki, sender.address)
        try:
            s.mail(sender.address)
            assert s.rcpt(user.address)[0] == 250  # not full yet: all of them get this far
            barrier.wait()
            code, text = s.data(sized(sender.address, user.address, f"racer {i}", 300))
            return code, text
        finally:
            s.quit()

    answers = _at_once(RACERS, send)
    assert [code for code, _ in answers].count(250) == ROOM, answers
    assert all(code == 552 and text.startswith(b"5.2.2") for code, text in answers if code != 250), answers
    assert messages_held(srv, user) == PRO_MESSAGES
