"""The SMTP engine against a hostile probe (issue 14): NUL in DATA, DSN header injection, slow clients,
the client certificate's key type, and multi-line replies written at once. Real sockets, real TLS.

The site runs with tiny pace bounds (a command line within 0.5 s of its first
octet, DATA at 2,000 octets/s after 0.3 s) so that the trickling clients here
are cut off in about a second; smtplib sends each line and the whole DATA in
one write, well inside them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import select
import smtplib
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.pki import parse_dn
from mailserver.clock import SystemClock
from mailserver.smtp import dsn
from mailserver.smtp.engine import MasanteSMTP
from tests import support
from tests.smtp.conftest import OTHER, OTHER_DN, PATIENT, PRO, site_fixture
from tests.smtp.harness import ServerThread, inbox, marker, message, mx, read_reply, submission, text

LINE_DEADLINE = 0.5
MIN_RATE = 2000
GRACE = 0.3
#: how long a test waits for the server to cut a slow client off (the bounds above, and a loaded machine)
CUTOFF = 10.0


#: the deadlines are real time (the engine's timers run on the event loop), and so is this module's queue
site_server = site_fixture(
    clock=SystemClock,
    smtp={"command_line_deadline": LINE_DEADLINE, "data_min_rate": MIN_RATE, "data_rate_grace": GRACE},
)


def raw_data(s: smtplib.SMTP, payload: bytes) -> tuple[int, str]:
    """DATA with the bytes exactly as given (smtplib's data() would fix line endings)."""
    assert s.docmd("DATA")[0] == 354
    s.send(payload)
    return text(s.getreply())


# --- NUL in DATA (RFC 6152 §2, RFC 2045 §2.8; BINARYMIME is not offered) -------------------------------------


@pytest.mark.parametrize("body", [[], ["BODY=8BITMIME"], ["BODY=7BIT"]], ids=["no-BODY", "8BITMIME", "7BIT"])
def test_nul_in_data_is_refused(site: ServerThread, pki: support.TestPKI, body: list[str]) -> None:
    tag = marker()
    before = len(inbox(site, PATIENT))
    s = submission(site, pki, PRO)
    assert s.mail(PRO, body)[0] == 250
    assert s.rcpt(PATIENT)[0] == 250
    raw = message(PRO, PATIENT, f"nul {tag}", "before\0after\n")
    code, msg = raw_data(s, raw + b".\r\n")
    assert (code, msg[:6]) == (554, "5.6.0 ") and "NUL" in msg
    assert s.noop()[0] == 250  # the session goes on
    assert s.sendmail(PRO, [PATIENT], message(PRO, PATIENT, f"clean {tag}")) == {}
    s.quit()
    assert len(inbox(site, PATIENT)) == before + 1


def test_ehlo_with_a_control_character_is_refused(site: ServerThread) -> None:
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30)
    s.send(b"EHLO a\rX-Injected: yes\r\n")
    code, msg = text(s.getreply())
    assert (code, msg[:6]) == (501, "5.5.4 ")
    s.close()


# --- DSN header injection (RFC 3461 §4) ---------------------------------------------------------------------------

INJECTED_ENVID = "x+0D+0AX-Injected-Envid:+20yes"
INJECTED_ORCPT = f"rfc822;{PATIENT}+0D+0AX-Injected-Orcpt:+20yes"


def test_envid_and_orcpt_with_control_characters_are_refused(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    code, msg = text(s.mail(PRO, ["RET=HDRS", f"ENVID={INJECTED_ENVID}"]))
    assert (code, msg[:6]) == (501, "5.5.4 ") and "ENVID" in msg and "control" in msg
    for value in ("x+00y", "x+09y", "x+7Fy", "x+C2+85y"):  # NUL, HT, DEL, and U+0085 (a C1 control)
        assert s.mail(PRO, [f"ENVID={value}"])[0] == 501
    assert s.mail(PRO, ["RET=HDRS", f"ENVID=env-{tag}"])[0] == 250
    code, msg = text(s.rcpt(PATIENT, ["NOTIFY=SUCCESS,FAILURE", f"ORCPT={INJECTED_ORCPT}"]))
    assert (code, msg[:6]) == (501, "5.5.4 ") and "ORCPT" in msg
    assert s.rcpt(PATIENT, ["NOTIFY=SUCCESS,FAILURE", f"ORCPT=rfc822;{PATIENT}"])[0] == 250
    assert s.data(message(PRO, PATIENT, f"dsn {tag}"))[0] == 250
    s.quit()
    reports = [m for m in inbox(site, PRO) if f"env-{tag}".encode() in m]
    assert len(reports) == 1
    assert all(b"X-Injected" not in m for m in inbox(site, PRO))
    msg_ = email.message_from_bytes(reports[0], policy=email.policy.default)
    per_message, per_rcpt = list(msg_.iter_parts())[1].get_payload()
    assert per_message["Original-Envelope-Id"] == f"env-{tag}"
    assert per_rcpt["Original-Recipient"] == f"rfc822;{PATIENT}"


def test_a_failure_dsn_escapes_control_characters_whatever_the_caller() -> None:
    """dsn.build is the last door: values from an older queue row or a remote reply come out as one line."""
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    report = dsn.build(
        reporting_mta="mx.test",
        sender="MAILER-DAEMON@mx.test",
        to="dr@x.test",
        original=b"Subject: x\r\n\r\nbody\r\n",
        recipients=[
            dsn.RecipientStatus(
                "p@y.test",
                dsn.Action.FAILED,
                "5.1.1",
                "550 5.1.1 no\r\nX-Injected-Diag: yes",
                original_recipient="rfc822;p@y.test\r\nX-Injected-Orcpt: yes",
            )
        ],
        arrival=now,
        now=now,
        envid="e\r\nX-Injected-Envid: yes\x00",
    )
    assert not any(line.startswith(b"X-Injected") for line in report.split(b"\r\n"))
    assert b"\x00" not in report
    parts = list(email.message_from_bytes(report, policy=email.policy.default).iter_parts())
    per_message, per_rcpt = parts[1].get_payload()
    assert "X-Injected" not in per_message.keys() and "X-Injected-Orcpt" not in per_rcpt.keys()


# --- slow clients (issue 14 #2) -------------------------------------------------------------------------------


def trickle_until_cut(sock: socket.socket | ssl.SSLSocket, payload: bytes, gap: float = 0.05) -> tuple[bytes, float]:
    """Send ``payload`` one octet per ``gap`` seconds until the server speaks; (what it said, seconds)."""
    start = time.monotonic()
    for i in range(len(payload)):
        sock.sendall(payload[i : i + 1])
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending()
        if pending or select.select([sock], [], [], gap)[0]:
            return read_reply(sock), time.monotonic() - start
        if time.monotonic() - start > CUTOFF:
            break
    return b"", time.monotonic() - start


def test_a_command_line_trickled_in_is_cut_at_its_deadline(site: ServerThread) -> None:
    sock = socket.create_connection(("127.0.0.1", site.port("submission")), timeout=30)
    assert read_reply(sock).startswith(b"220 ")
    sock.sendall(b"NOOP\r\n")  # a whole line is fine
    assert read_reply(sock).startswith(b"250 ")
    # silence at a line's start is the idle timer's business, not the line deadline's
    assert select.select([sock], [], [], LINE_DEADLINE * 1.5)[0] == []
    sock.sendall(b"NOOP\r\n")
    assert read_reply(sock).startswith(b"250 ")
    said, seconds = trickle_until_cut(sock, b"EHLO " + b"x" * 400)
    assert said.startswith(b"421 4.4.2 ") and b"in time" in said, said
    assert LINE_DEADLINE <= seconds < CUTOFF
    assert sock.recv(100) == b""  # and the connection is closed
    sock.close()


def test_a_client_still_sending_when_cut_gets_the_reply_and_a_clean_end(site: ServerThread) -> None:
    """Closing with input unread sends a reset, which can destroy the 421 before the client reads it (the trickle
    test above met it once): the server sends the end of the stream, drops what still comes, then closes."""
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", site.port("submission")), timeout=30) as sock:
            assert read_reply(sock).startswith(b"220 ")
            sock.sendall(b"EHLO slow")  # a line begun, never ended
            assert select.select([sock], [], [], 30)[0]  # the 421 is here, unread
            sock.sendall(b"x" * 1000)  # the client, not listening, goes on
            said = b""
            while chunk := sock.recv(4096):  # the reply, then the end of the stream, not a reset
                said += chunk
            assert said.startswith(b"421 4.4.2 ") and b"in time" in said, said


def test_data_trickled_in_is_cut_below_the_minimum_rate(site: ServerThread, pki: support.TestPKI) -> None:
    before = len(inbox(site, PATIENT))
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    assert s.docmd("DATA")[0] == 354
    sock = s.sock
    assert sock is not None
    said, seconds = trickle_until_cut(sock, b"Subject: slow\r\n\r\n" + b"z" * 2000)
    assert said.startswith(b"421 4.4.2 ") and b"slowly" in said, said
    assert GRACE <= seconds < CUTOFF
    s.close()
    assert len(inbox(site, PATIENT)) == before


def test_data_at_a_steady_rate_is_not_cut(site: ServerThread, pki: support.TestPKI) -> None:
    """Above the minimum rate, DATA may take longer than the grace period and the line deadline."""
    tag = marker()
    s = submission(site, pki, PRO)
    s.mail(PRO)
    s.rcpt(PATIENT)
    assert s.docmd("DATA")[0] == 354
    sock = s.sock
    assert sock is not None
    raw = message(PRO, PATIENT, f"steady {tag}", ("s" * 70 + "\n") * 200) + b".\r\n"
    step = 1000  # 10,000 octets/s: five times the floor
    start = time.monotonic()
    for i in range(0, len(raw) - step, step):
        sock.sendall(raw[i : i + step])
        if select.select([sock], [], [], 0.1)[0]:  # nothing may be said while the data flows
            pytest.fail(f"the server spoke during DATA, after {time.monotonic() - start:.2f} s: {read_reply(sock)!r}")
    assert time.monotonic() - start > GRACE
    sock.sendall(raw[i + step :])
    code, msg = text(s.getreply())
    assert code == 250, msg
    s.quit()


# --- the client certificate's key type on the MX port (issue 14 #8) ---------------------------------------------


def issue_ec_client(pki: support.TestPKI, dn: str, d: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(parse_dn(dn))
        .issuer_name(pki.ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(pki.ca.key, hashes.SHA256())
    )
    cert_file, key_file = d / "ec.pem", d / "ec.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_an_ecdsa_client_certificate_is_refused_on_the_mx_port(
    site: ServerThread, pki: support.TestPKI, tmp_path: Path
) -> None:
    sender = f"dr.cuddy@{OTHER}"
    s = mx(site, pki, issue_ec_client(pki, OTHER_DN, tmp_path))
    code, msg = text(s.mail(sender))
    assert (code, msg[:6]) == (550, "5.7.1 ") and "key type" in msg and "RSA" in msg
    s.quit()
    s = mx(site, pki, pki.issue_client(OTHER_DN, tmp_path))  # the same DN with an RSA key
    assert s.mail(sender)[0] == 250
    s.quit()


# --- multi-line replies in one write (issue 14 #8: sslscan --starttls-smtp) ------------------------------------


class _RecordingTransport:
    """The real transport, with every write recorded."""

    def __init__(self, inner: asyncio.Transport) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_ehlo_reply_is_one_write(pki: support.TestPKI) -> None:
    loop = asyncio.get_running_loop()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    recorders: list[_RecordingTransport] = []

    class Recorded(MasanteSMTP):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            recorder = _RecordingTransport(transport)  # type: ignore[arg-type]
            recorders.append(recorder)
            super().connection_made(recorder)  # type: ignore[arg-type]

    def engine() -> MasanteSMTP:
        return Recorded(
            object(),
            hostname="mx.test",
            loop=loop,
            starttls_context=tls,
            require_tls=True,
            offer_auth=False,
            require_auth=False,
            data_size_limit=10_000,
            max_recipients=5,
            max_line_length=1000,
            timeout=30,
        )

    server = await loop.create_server(engine, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")
        writer.write(b"EHLO client.test\r\n")
        lines = []
        while not lines or lines[-1][3:4] != b" ":
            lines.append(await asyncio.wait_for(reader.readline(), 10))
        assert b"250-STARTTLS\r\n" in lines and len(lines) > 5
        [recorder] = recorders
        [ehlo_write] = [w for w in recorder.writes if w.startswith(b"250")]
        assert ehlo_write == b"".join(lines)
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
