"""Submission (587 STARTTLS, 465 TLS) as a mail client meets it, refusal by refusal, with smtplib and swaks."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import ssl
import subprocess
from pathlib import Path

import pytest

from crypto.tls import MSSANTE_TLS12_CIPHERS
from mailserver.context import Context
from tests import support
from tests.smtp.conftest import PATIENT, PRO, PRO2, site_fixture
from tests.smtp.harness import (
    ServerThread,
    find,
    inbox,
    marker,
    message,
    require_tool,
    submission,
    tls_client,
)

LIMIT = 300_000
MAX_RCPT = 5
MAX_HOPS = 10
ENHANCED = re.compile(r"\A[245]\.\d{1,3}\.\d{1,3} ")


site_server = site_fixture(limits={"max_message_size": LIMIT}, smtp={"max_recipients": MAX_RCPT, "max_hops": MAX_HOPS})


def swaks(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    require_tool("swaks")
    return subprocess.run(["swaks", *args], capture_output=True, text=True, timeout=timeout)


def code_text(reply: tuple[int, bytes]) -> tuple[int, str]:
    return reply[0], reply[1].decode()


def plain(site: ServerThread) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30, local_hostname="client.test")
    s.ehlo()
    return s


# --- what the server offers ------------------------------------------------------------------------------------


def test_ehlo_offers_starttls_then_auth(site: ServerThread, pki: support.TestPKI) -> None:
    s = plain(site)
    before = s.ehlo_resp.decode().splitlines()
    assert "STARTTLS" in before and not any(x.startswith("AUTH") for x in before)
    for ext in ("PIPELINING", f"SIZE {LIMIT}", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"):
        assert ext in before
    s.starttls(context=tls_client(pki))
    s.ehlo()
    after = s.ehlo_resp.decode().splitlines()
    assert "AUTH LOGIN PLAIN" in after and "STARTTLS" not in after
    code, text = code_text(s.docmd("STARTTLS"))
    assert (code, text[:5]) == (503, "5.5.1")
    s.quit()


def test_auth_before_tls_is_refused_530(site: ServerThread) -> None:
    s = plain(site)
    assert code_text(s.docmd("AUTH", "PLAIN AGRyLmhvdXNlQGhvcGl0YWwudGVzdABwdw==")) == (
        530,
        "5.7.0 Must issue a STARTTLS command first",
    )
    code, text = code_text(s.docmd("MAIL", f"FROM:<{PRO}>"))
    assert (code, text[:5]) == (530, "5.7.0")
    s.quit()


def test_mail_without_auth_is_refused_530(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki)
    code, text = code_text(s.docmd("MAIL", f"FROM:<{PRO}>"))
    assert (code, text[:5]) == (530, "5.7.0") and "AUTH" in text
    s.quit()


def test_tls_is_12_or_13_with_the_mssante_suites(site: ServerThread, pki: support.TestPKI) -> None:
    pki = pki
    ctx = tls_client(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30)
    s.starttls(context=ctx)
    sock = s.sock
    assert isinstance(sock, ssl.SSLSocket)
    assert sock.version() == "TLSv1.2" and sock.cipher()[0] in MSSANTE_TLS12_CIPHERS.split(":")
    s.quit()
    weak = tls_client(pki)
    weak.maximum_version = ssl.TLSVersion.TLSv1_2
    weak.set_ciphers("AES256-GCM-SHA384:AES128-SHA")  # RSA key exchange: not an MSSanté suite
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30)
    with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
        s.starttls(context=weak)
    s.close()


# --- accepted ---------------------------------------------------------------------------------------------------


def test_professional_writes_to_a_patient_and_headers_are_completed(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    raw = (
        f"From: {PRO}\r\nTo: {PATIENT}\r\nSubject: resultats {tag}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVos resultats.\r\n"
    ).encode()
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    code, text = code_text(s.data(raw))
    s.quit()
    assert code == 250 and text.startswith("2.0.0 Message accepted, id ")
    [stored] = find(site, PATIENT, tag)
    msg = email.message_from_bytes(stored, policy=email.policy.default)
    assert msg["Message-ID"] and msg["Date"]
    received = msg.get_all("Received")[0]
    assert "with ESMTPSA" in received and "TLSv1." in received and "client.test" in received


def test_submissions_port_is_implicit_tls(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = smtplib.SMTP_SSL("127.0.0.1", site.port("submissions"), timeout=30, context=tls_client(pki))
    s.ehlo()
    lines = s.ehlo_resp.decode().splitlines()
    assert "AUTH LOGIN PLAIN" in lines and "STARTTLS" not in lines
    s.login(PRO, support.PASSWORD)
    assert s.sendmail(PRO, [PATIENT, PRO2], message(PRO, PATIENT, f"465 {tag}")) == {}
    s.quit()
    assert len(find(site, PATIENT, tag)) == 1 and len(find(site, PRO2, tag)) == 1


def test_eight_bit_and_utf8_content_arrive_intact(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    raw = (
        f"From: {PRO}\r\nTo: {PATIENT}\r\nSubject: =?utf-8?q?r=C3=A9sultats?= {tag}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Hémoglobine glyquée : 6,1 %. Très bien.\r\n.\r\n..dotted line\r\n"
    ).encode()
    s = submission(site, pki, PRO)
    assert s.sendmail(PRO, [PATIENT], raw, mail_options=["BODY=8BITMIME", "SMTPUTF8"]) == {}
    s.quit()
    [stored] = find(site, PATIENT, tag)
    assert stored.endswith(raw.split(b"\r\n\r\n", 1)[1])


def test_two_recipients_of_one_account_get_one_copy(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    upper = PATIENT.upper().replace("@PATIENT.MASANTE.FR", "@patient.masante.fr")
    assert s.sendmail(PRO, [PATIENT, upper], message(PRO, PATIENT, f"twice {tag}")) == {}
    s.quit()
    assert len(find(site, PATIENT, tag)) == 1


# --- every refusal, with its code ------------------------------------------------------------------------------------


def test_recipient_refusals(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    s.mail(PRO)
    assert code_text(s.rcpt(f"nobody.here@{support.PRO_DOMAIN}"))[0:1] == (550,)
    assert code_text(s.rcpt(f"nobody.here@{support.PRO_DOMAIN}"))[1].startswith("5.1.1 ")
    code, text = code_text(s.rcpt("someone@gmail.com"))
    assert (code, text[:6]) == (550, "5.7.1 ") and "trust space" in text
    for bad in ("<not an address>", "<@>", "<a@@b.test>", "<a b@c.test>", "<x@-bad-.test>"):
        code, text = code_text(s.docmd("RCPT", f"TO:{bad}"))
        assert (code, text[:6]) == (501, "5.1.3 "), bad
    s.quit()


def test_sender_not_owned_is_553(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    code, text = code_text(s.mail(PRO2))
    assert (code, text[:6]) == (553, "5.7.1 ")
    code, text = code_text(s.docmd("MAIL", "FROM:<bad@@sender>"))
    assert (code, text[:6]) == (501, "5.1.3 ")
    s.quit()


def test_size_declared_too_big_is_552_at_mail(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    code, text = code_text(s.mail(PRO, [f"SIZE={LIMIT + 1}"]))
    assert (code, text[:6]) == (552, "5.3.4 ") and str(LIMIT) in text
    assert s.mail(PRO, [f"SIZE={LIMIT - 1000}"])[0] == 250
    s.quit()


def test_data_too_big_is_552_after_the_data_and_the_session_goes_on(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    big = message(PRO, PATIENT, f"big {tag}", ("x" * 76 + "\n") * (LIMIT // 77 + 10))
    code, text = code_text(s.data(big))
    assert (code, text[:6]) == (552, "5.3.4 ")
    assert s.noop()[0] == 250
    assert s.sendmail(PRO, [PATIENT], message(PRO, PATIENT, f"small {tag}")) == {}
    s.quit()
    assert [b"small" in m for m in find(site, PATIENT, tag)] == [True]


def raw_data(s: smtplib.SMTP, payload: bytes) -> tuple[int, str]:
    """DATA with bytes sent exactly as given (smtplib's data() would fix line endings)."""
    assert s.docmd("DATA")[0] == 354
    s.send(payload)
    return code_text(s.getreply())


@pytest.mark.parametrize(
    "payload",
    [
        b"Subject: lf\r\n\r\nline one\nline two\r\n.\r\n",
        b"Subject: cr\r\n\r\nline one\rline two\r\n.\r\n",
        # the smuggling shape: a lone-LF dot, then a second transaction inside the first
        b"Subject: smuggle\r\n\r\nhello\n.\nMAIL FROM:<x@gmail.com>\nRCPT TO:<y@gmail.com>\nDATA\nevil\n.\r\n.\r\n",
    ],
    ids=["bare-LF", "bare-CR", "smuggling"],
)
def test_bare_cr_or_lf_in_data_is_refused(site: ServerThread, pki: support.TestPKI, payload: bytes) -> None:
    before = len(inbox(site, PATIENT))
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    code, text = raw_data(s, payload)
    assert (code, text[:6]) == (554, "5.6.0 ")
    assert s.noop() == (250, b"2.0.0 OK, nothing done")  # one reply only: nothing was smuggled
    s.quit()
    assert len(inbox(site, PATIENT)) == before


def test_overlong_line_is_refused(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    code, text = raw_data(s, b"Subject: long\r\n\r\n" + b"y" * 1200 + b"\r\n.\r\n")
    assert (code, text[:6]) == (500, "5.5.6 ")
    s.quit()


def test_hop_limit(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    trace = b"".join(f"Received: from relay{i}.test by relay{i + 1}.test; x\r\n".encode() for i in range(MAX_HOPS))
    s.mail(PRO)
    s.rcpt(PATIENT)
    code, text = code_text(s.data(trace + message(PRO, PATIENT, f"loop {tag}")))
    assert (code, text[:6]) == (554, "5.4.6 ")
    ok = trace.split(b"\r\n", 1)[1] + message(PRO, PATIENT, f"noloop {tag}")  # one hop fewer
    assert s.sendmail(PRO, [PATIENT], ok) == {}
    s.quit()


def test_too_many_recipients_is_452(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    s.mail(PRO)
    for _ in range(MAX_RCPT):
        assert s.rcpt(PATIENT)[0] == 250
    code, text = code_text(s.rcpt(PATIENT))
    assert (code, text[:6]) == (452, "4.5.3 ")
    s.quit()


def test_bad_dsn_parameters_are_555(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    assert code_text(s.mail(PRO, ["RET=SOME"]))[0] == 555
    assert code_text(s.mail(PRO, ["FROBNICATE=1"])) == (
        555,
        "5.5.4 Parameter FROBNICATE not recognised or not implemented",
    )
    assert s.mail(PRO, ["RET=HDRS", "ENVID=a+2Bb"])[0] == 250
    code, text = code_text(s.rcpt(PATIENT, ["NOTIFY=SOMETIMES"]))
    assert (code, text[:6]) == (555, "5.5.4 ")
    assert s.rcpt(PATIENT, ["NOTIFY=NEVER"])[0] == 250
    s.quit()


def test_every_reply_carries_an_enhanced_status_code(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    replies = [
        s.noop(),
        s.rset(),
        s.docmd("VRFY", PATIENT),
        s.docmd("HELP"),
        s.docmd("EXPN", "list"),
        s.docmd("FROBNICATE"),
        s.docmd("RCPT", f"TO:<{PATIENT}>"),
        s.docmd("DATA"),
        s.mail(PRO),
        s.docmd("MAIL", f"FROM:<{PRO}>"),
        s.rcpt(PATIENT),
        s.docmd("AUTH", "PLAIN"),
        s.rset(),
    ]
    for code, text in replies:
        assert 200 <= code < 600 and ENHANCED.match(text.decode()), (code, text)
    code, text = s.docmd("QUIT")
    s.close()
    assert (code, text.decode()[:6]) == (221, "2.0.0 ")


# --- durability ---------------------------------------------------------------------------------------------------


def test_storage_failure_answers_451_and_stores_nothing(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()

    async def rename(ctx: Context, old: str, new: str) -> None:
        async with ctx.db.engine.begin() as conn:
            await conn.exec_driver_sql(f"ALTER TABLE {old} RENAME TO {new}")

    before = len(inbox(site, PATIENT))
    site.call(rename, "blobs", "blobs_gone")
    try:
        s = submission(site, pki, PRO)
        s.mail(PRO)
        s.rcpt(PATIENT)
        code, text = code_text(s.data(message(PRO, PATIENT, f"lost? {tag}")))
        assert (code, text[:6]) == (451, "4.3.0 ")
    finally:
        site.call(rename, "blobs_gone", "blobs")
    assert s.sendmail(PRO, [PATIENT], message(PRO, PATIENT, f"again {tag}")) == {}
    s.quit()
    assert [b"again" in m for m in find(site, PATIENT, tag)] == [True]
    assert len(inbox(site, PATIENT)) == before + 1


# --- DSN ---------------------------------------------------------------------------------------------------------


def test_notify_success_gives_a_success_dsn(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    s.mail(PRO, ["RET=HDRS", f"ENVID=env-{tag}"])
    s.rcpt(PATIENT, ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{PATIENT}"])
    assert s.data(message(PRO, PATIENT, f"dsn {tag}"))[0] == 250
    s.quit()
    [report] = [m for m in inbox(site, PRO) if f"env-{tag}".encode() in m]
    msg = email.message_from_bytes(report, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report" and msg.get_param("report-type") == "delivery-status"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    per_message, per_rcpt = parts[1].get_payload()
    assert per_message["Original-Envelope-Id"] == f"env-{tag}"
    assert per_rcpt["Action"] == "delivered" and per_rcpt["Status"] == "2.0.0"
    assert per_rcpt["Final-Recipient"] == f"rfc822; {PATIENT}"
    assert msg["Auto-Submitted"] == "auto-replied"


# --- swaks ------------------------------------------------------------------------------------------------------------


def swaks_base(site: ServerThread, pki: support.TestPKI, *extra: str) -> list[str]:
    return [
        "--server", "127.0.0.1", "--port", str(site.port("submission")), "--tls", "--tls-verify",
        "--tls-ca-path", str(pki.ca_file), "--ehlo", "swaks.test", "--timeout", "30", *extra,
    ]  # fmt: skip


def test_swaks_starttls_auth_login_and_pipelining(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    r = swaks(
        *swaks_base(site, pki),
        "--auth", "LOGIN", "--auth-user", PRO, "--auth-password", support.PASSWORD, "--pipeline",
        "--from", PRO, "--to", PATIENT, "--header", f"Subject: swaks {tag}", "--body", "via swaks",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<~  250-PIPELINING" in r.stdout and "235 2.7.0" in r.stdout
    assert len(find(site, PATIENT, tag)) == 1


def replies_in_one_record(s: smtplib.SMTP, group: bytes) -> list[str]:
    """Send a pipelined ``group`` of commands in one write and return the reply lines of the server's first TLS
    record: ``SSLSocket.recv`` returns one record's data at most, and each write of the server is one record."""
    s.sock.sendall(group)
    return s.sock.recv(65536).decode().splitlines()


def test_a_pipelined_groups_replies_come_in_one_write(site: ServerThread, pki: support.TestPKI) -> None:
    """RFC 2920 §3.2: the replies to MAIL, RCPT and RSET wait while the next command is already read, and leave
    with the next reply; a refused recipient among them too. One command at a time is answered at once."""
    s = submission(site, pki, PRO)
    tag = marker()
    group = f"MAIL FROM:<{PRO}>\r\nRCPT TO:<{PRO2}>\r\nRCPT TO:<someone@outside.example>\r\nDATA\r\n"
    lines = replies_in_one_record(s, group.encode())
    assert [line[:9] for line in lines] == ["250 2.1.0", "250 2.1.5", "550 5.7.1", "354 End d"], lines
    s.sock.sendall(message(PRO, PRO2, tag) + b"\r\n.\r\n")
    assert s.getreply()[0] == 250
    assert len(find(site, PRO2, tag)) == 1
    lines = replies_in_one_record(s, b"RSET\r\nRSET\r\nNOOP\r\n")
    assert [line[:9] for line in lines] == ["250 2.0.0"] * 3, lines
    assert replies_in_one_record(s, f"MAIL FROM:<{PRO}>\r\n".encode())[0].startswith("250 2.1.0")
    s.quit()


def test_a_client_pipelining_without_end_still_gets_its_replies(site: ServerThread, pki: support.TestPKI) -> None:
    """At most ``HELD_REPLIES`` replies wait for the next one: 200 RSETs in one write are answered in writes of
    that many at most, all 200 of them, in order."""
    from mailserver.smtp.engine import HELD_REPLIES

    s = submission(site, pki, PRO)
    first = replies_in_one_record(s, b"RSET\r\n" * 200)
    assert 1 < len(first) < 200 and len(first) <= HELD_REPLIES + 1, len(first)
    lines = list(first)
    while len(lines) < 200:
        lines += s.sock.recv(65536).decode().splitlines()
    assert len(lines) == 200 and all(line.startswith("250 2.0.0 ") for line in lines), lines
    s.quit()


def test_swaks_size_refusal(site: ServerThread, pki: support.TestPKI, tmp_path: Path) -> None:
    body = tmp_path / "big.txt"
    body.write_text(("z" * 70 + "\n") * (LIMIT // 71 + 20))
    r = swaks(
        *swaks_base(site, pki),
        "--auth", "PLAIN", "--auth-user", PRO, "--auth-password", support.PASSWORD,
        "--from", PRO, "--to", PATIENT, "--body", f"@{body}",
    )  # fmt: skip
    assert r.returncode != 0 and "552 5.3.4" in r.stdout, r.stdout


def test_swaks_dsn_extension_is_offered(site: ServerThread, pki: support.TestPKI) -> None:
    r = swaks(*swaks_base(site, pki), "--quit-after", "EHLO")
    assert r.returncode == 0 and "<~  250-DSN" in r.stdout, r.stdout


# --- last: failed logins slow the next ones down (per peer address) ---------------------------------------------------


def test_bad_credentials_are_535(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki)
    with pytest.raises(smtplib.SMTPAuthenticationError) as err:
        s.login(PRO, "not the password")
    assert err.value.smtp_code == 535 and err.value.smtp_error.startswith(b"5.7.8 ")
    s.quit()
    r = swaks(*swaks_base(site, pki), "--auth", "PLAIN", "--auth-user", PRO, "--auth-password", "wrong", "--quit-after",
              "AUTH")  # fmt: skip
    assert r.returncode != 0 and "535 5.7.8" in r.stdout
