"""The outbound queue with an operator that cannot be reached: retries with backoff, then a DSN the sender reads."""

from __future__ import annotations

import email
import email.policy
import imaplib
import smtplib
import subprocess
from email.message import EmailMessage

import pytest

from mailserver.context import Context
from mailserver.smtp.queue import retry_delay
from mailserver.store.models import AuditEntry
from tests import support
from tests.smtp.conftest import OTHER, PRO, site_fixture
from tests.smtp.harness import ServerThread, find, marker, message, require_tool, submission, tls_client

BOUNCE_AFTER = 4


site_server = site_fixture(
    queue={"bounce_after": BOUNCE_AFTER, "delay_warning_after": 1, "first_retry": 1, "backoff_factor": 1.0}
)


def imap_messages(site: ServerThread, pki: support.TestPKI, user: str) -> list[bytes]:
    """Every message of ``user``'s INBOX, read over IMAPS as the user's mail client would."""
    m = imaplib.IMAP4_SSL("127.0.0.1", site.port("imaps"), ssl_context=tls_client(pki), timeout=30)
    try:
        m.login(user, support.PASSWORD)
        m.select("INBOX", readonly=True)
        typ, data = m.uid("SEARCH", None, "ALL")  # type: ignore[arg-type]
        assert typ == "OK"
        out = []
        for uid in data[0].split():
            typ, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
            out += [p[1] for p in parts if isinstance(p, tuple)]
        return out
    finally:
        m.logout()


def attempts(site: ServerThread, rcpt: str) -> int | None:
    """How many attempts the queued message to ``rcpt`` has had; None once it left the queue."""

    async def go(ctx: Context) -> int | None:
        async with ctx.uow(readonly=True) as uow:
            rows = [q for q in await uow.queue.list() if q.rcpt_to == rcpt]
        return rows[0].attempts if rows else None

    return site.call(go)


def report_of(raw: bytes) -> tuple[EmailMessage, list[dict[str, str]]]:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage) and msg.get_content_type() == "multipart/report"
    status = [p for p in msg.iter_parts() if p.get_content_type() == "message/delivery-status"][0]
    return msg, [dict(block) for block in status.get_payload()]


async def audit_of(ctx: Context) -> list[AuditEntry]:
    async with ctx.uow(readonly=True) as uow:
        return list(await uow.audit_log.tail(5000))


def test_backoff_schedule() -> None:
    delays = [retry_delay(n, first=300, factor=2, cap=4 * 3600) for n in range(1, 10)]
    assert delays[:4] == [300, 600, 1200, 2400] and delays[-1] == 4 * 3600 and delays == sorted(delays)


def test_unreachable_operator_is_retried_then_bounced_and_read_over_imap(
    site: ServerThread, pki: support.TestPKI
) -> None:
    """Submitted with swaks; the DSN is read over IMAP."""
    require_tool("swaks")
    tag = marker()
    rcpt = f"dr.cameron@{OTHER}"
    r = subprocess.run(
        [
            "swaks", "--server", "127.0.0.1", "--port", str(site.port("submission")), "--tls", "--tls-verify",
            "--tls-ca-path", str(pki.ca_file), "--auth", "PLAIN", "--auth-user", PRO, "--auth-password",
            support.PASSWORD, "--from", PRO, "--to", rcpt, "--header", f"Subject: lettre {tag}", "--body", tag,
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0 and "250 2.0.0 Message accepted" in r.stdout, r.stdout
    site.settle()  # the first attempt, at once: refused, nothing listens
    for made in range(1, BOUNCE_AFTER + 1):  # one a second (first_retry 1, factor 1) until it expires
        assert attempts(site, rcpt) == made
        assert find(site, PRO, tag) == []  # no DSN while it is still being retried
        site.advance(1)
    assert attempts(site, rcpt) is None  # expired: bounced, out of the queue
    [bounce] = [m for m in imap_messages(site, pki, PRO) if tag.encode() in m]
    msg, (per_message, per_rcpt) = report_of(bounce)
    assert msg["From"] == "Mail Delivery System <MAILER-DAEMON@localhost>"
    assert per_message["Reporting-MTA"] == "dns; localhost"
    assert per_rcpt["Action"] == "failed" and per_rcpt["Status"] == "5.4.7"
    assert per_rcpt["Final-Recipient"] == f"rfc822; {rcpt}"
    assert "cannot connect" in per_rcpt["Diagnostic-Code"]
    returned = [p for p in msg.iter_parts() if p.get_content_type() == "message/rfc822"]
    assert returned and tag in returned[0].as_string()

    events = [e for e in site.call(audit_of) if e.object_id.startswith("queue:")]
    bounced = [e for e in events if e.action == "queue.bounced"]
    assert bounced
    qid = bounced[-1].object_id
    assert len([e for e in events if e.object_id == qid and e.action == "queue.deferred"]) == BOUNCE_AFTER


def test_notify_never_bounces_silently_and_delay_warns_first(site: ServerThread, pki: support.TestPKI) -> None:
    quiet, loud = marker(), marker()
    s = submission(site, pki, PRO)
    s.sendmail(PRO, [f"a@{OTHER}"], message(PRO, f"a@{OTHER}", f"quiet {quiet}"), rcpt_options=["NOTIFY=NEVER"])
    s.sendmail(PRO, [f"b@{OTHER}"], message(PRO, f"b@{OTHER}", f"loud {loud}"), rcpt_options=["NOTIFY=DELAY,FAILURE"])
    s.quit()
    site.settle()  # the first attempts: nothing listens
    assert find(site, PRO, loud) == []
    site.advance(1)  # the second attempt, a second later: past delay_warning_after, the DELAY warning
    [delayed] = [m for m in find(site, PRO, loud) if b"Action: delayed" in m]
    site.advance(BOUNCE_AFTER - 1)  # then it expires (bounce_after): the failure, once
    reports = [m for m in find(site, PRO, loud) if b"Action: failed" in m]
    assert len(reports) == 1 and [m for m in find(site, PRO, loud) if b"Action: delayed" in m] == [delayed]
    _msg, (_m, per_rcpt) = report_of(delayed)
    assert per_rcpt["Status"].startswith("4.") and "Will-Retry-Until" in per_rcpt
    assert find(site, PRO, quiet) == []


def test_a_queued_message_is_sealed_at_rest(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    s.sendmail(PRO, [f"c@{OTHER}"], message(PRO, f"c@{OTHER}", f"sealed {tag}", f"secret {tag}"))
    s.quit()

    async def rows(ctx: Context) -> list[bytes]:
        async with ctx.uow(readonly=True) as uow:
            return [q.body for q in await uow.queue.list() if q.rcpt_to == f"c@{OTHER}"]

    bodies = site.call(rows)
    assert bodies and all(tag.encode() not in b for b in bodies)


def test_quit_after_rcpt_leaves_nothing_queued(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(f"d@{OTHER}")
    s.quit()

    async def rows(ctx: Context) -> int:
        async with ctx.uow(readonly=True) as uow:
            return len([q for q in await uow.queue.list() if q.rcpt_to == f"d@{OTHER}"])

    assert site.call(rows) == 0
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.noop()
