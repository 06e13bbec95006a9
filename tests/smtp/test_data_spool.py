"""A large DATA goes on to an encrypted temporary file while it is read (``mailserver.smtp.dataspool``,
issue 14 point 3): the file never holds the message's plaintext, it is gone once the DATA is answered
(stored or refused) or the client left mid-DATA, a dead process's files are removed at startup, and the
message is delivered byte for byte. Real sockets, real TLS, both databases.

The site spools any DATA past 1,000 octets and counts a message past ``GATE`` octets as large, with one
slot. The tests hold that slot (as ``test_large_messages`` does), so that a session stops reading with
``GATE`` octets on disk; they look at the spool directory then, waiting on the gate's own counters
(``LargeMessageGate.until``), never on time.
"""

from __future__ import annotations

import os
import smtplib
import stat
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from mailserver.smtp.gate import LargeMessageGate
from tests import support
from tests.harness.server import Databases, ServerThread, start_server
from tests.smtp.conftest import PRO, PRO2, SMTP_DEFAULTS, site_fixture
from tests.smtp.harness import find, holding_the_gate, listener, marker, message, send, submission

GATE = 2_600_000  # past two 1 MiB chunks: some of the message is sealed on disk while the session waits
SPOOL = {"limits": {"spool_threshold": 1_000, "large_message_size": GATE, "large_messages_at_once": 1}}

site_server = site_fixture(**SPOOL)


def spool_dir(server: ServerThread) -> Path:
    d = listener(server).rt.spool_dir
    assert d is not None
    return d


def spooled(server: ServerThread) -> list[Path]:
    return sorted(spool_dir(server).iterdir())


def large(tag: str, size: int = GATE + 400_000) -> bytes:
    line = f"Compte rendu {tag} : IRM cerebrale sans anomalie.\n"
    return message(PRO, PRO2, f"spool {tag}", line * (size // len(line) + 1))


def until(server: ServerThread, predicate: Callable[[LargeMessageGate], bool]) -> None:
    gate = listener(server).rt.gate

    async def wait() -> None:
        await gate.until(predicate)

    server.call(wait)


@pytest.fixture
def held(site: ServerThread) -> Iterator[Callable[[], None]]:
    """The gate's only slot, held by the test until it calls the function it is given."""
    with holding_the_gate(site) as (_, release):
        yield release


def in_flight(site: ServerThread, tag: str) -> Path:
    """The one spool file of the session waiting at the gate: sealed, 0600, without the message's text."""
    until(site, lambda g: g.waiting == 1)
    files = spooled(site)
    assert len(files) == 1, files
    f = files[0]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    on_disk = f.read_bytes()
    assert len(on_disk) >= 2 * (1 << 20)  # two sealed chunks written, the session read GATE octets
    assert tag.encode() not in on_disk and b"Compte rendu" not in on_disk and b"Subject:" not in on_disk
    return f


def test_a_large_data_is_spooled_encrypted_then_removed_and_delivered_byte_exact(
    site: ServerThread, pki: support.TestPKI, held: Callable[[], None]
) -> None:
    tag = marker()
    raw = large(tag)
    with ThreadPoolExecutor(1) as pool:
        sent: Future[dict[str, tuple[int, bytes]]] = pool.submit(send, site, pki, raw)
        f = in_flight(site, tag)
        held()
        assert sent.result(timeout=120) == {}
    assert not f.exists() and spooled(site) == []
    kept = find(site, PRO2, tag)
    assert len(kept) == 1
    assert kept[0].endswith(raw)  # the server adds its trace fields on top; the rest is the DATA, byte for byte
    assert len(kept[0]) - len(raw) < 2_000


def test_a_refused_data_removes_its_spool_file(
    site: ServerThread, pki: support.TestPKI, held: Callable[[], None]
) -> None:
    tag = marker()
    raw = large(tag) + b"un NUL \0 en fin de message\r\n"  # refused once read to the end: 554
    with ThreadPoolExecutor(1) as pool:
        sent = pool.submit(send, site, pki, raw)
        f = in_flight(site, tag)
        held()
        with pytest.raises(smtplib.SMTPDataError) as refused:
            sent.result(timeout=120)
    assert refused.value.smtp_code == 554
    assert not f.exists() and spooled(site) == []
    assert find(site, PRO2, tag) == []


def test_a_client_gone_mid_data_leaves_no_spool_file(
    site: ServerThread, pki: support.TestPKI, held: Callable[[], None]
) -> None:
    tag = marker()
    s = submission(site, pki, PRO)
    assert s.mail(PRO)[0] == 250 and s.rcpt(PRO2)[0] == 250
    assert s.docmd("DATA")[0] == 354
    sock = s.sock
    assert sock is not None
    sock.sendall(large(tag, GATE + 100_000))  # no terminator; the server reads GATE octets, then waits
    f = in_flight(site, tag)
    s.close()  # the client is gone mid-DATA (its socket and smtplib's file on it)
    held()
    until(site, lambda g: g.waiting == 0 and g.in_use == 0)  # the session got its slot, met the end of stream
    assert not f.exists() and spooled(site) == []
    assert find(site, PRO2, tag) == []


def test_the_spool_files_of_a_dead_process_are_removed_at_startup(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    dead = spool / "data-0123456789abcdef.spool"
    dead.write_bytes(os.urandom(4096))
    other = spool / "README"  # not a spool file: left alone
    other.write_text("x")
    sections = {name: dict(values) for name, values in SMTP_DEFAULTS.items()} | SPOOL
    server = start_server(tmp_path, dbs.new(), pki, sections=sections)
    try:
        assert spool_dir(server) == spool
        assert not dead.exists() and other.exists()
    finally:
        server.stop()


def test_a_spool_that_cannot_be_written_is_a_451_and_the_rest_is_never_taken_as_commands(
    site: ServerThread, pki: support.TestPKI
) -> None:
    tag = marker()
    d = spool_dir(site)
    d.rmdir()  # the spool directory gone (a disk failure, an operator's mistake)
    try:
        s = submission(site, pki, PRO)
        try:
            assert s.mail(PRO)[0] == 250 and s.rcpt(PRO2)[0] == 250
            lines = b"RSET\r\n" * 2_000  # what must never run as commands (each would answer 250 2.0.0 Reset)
            code, text = s.data(large(tag, 200_000) + lines)
            assert (code, text.decode()[:6]) == (451, "4.3.1 ")
            # the next reply is the NOOP's, not a RSET's: the data was read to its end, as data
            assert s.noop() == (250, b"2.0.0 OK, nothing done")
        finally:
            s.quit()
    finally:
        d.mkdir(mode=0o700)
    assert find(site, PRO2, tag) == []
    assert send(site, pki, large(tag, 200_000)) == {}  # the directory back: spooled again
    assert spooled(site) == []
