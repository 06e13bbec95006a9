"""Large messages read at once (issue 14 point 3, ``mailserver.smtp.gate``): the gate's bound holds
under parallel submissions, a message that cannot get a slot in time is answered 451 4.3.2 and
nothing is kept, and the size limit still answers the delayed 552. Real sockets, real TLS.

The site counts any message past 2,000 octets as large, with one slot. The tests hold that
slot from the server's own loop, so that the sessions must queue behind it; they wait on the
gate's own counters (``LargeMessageGate.until``), never on time.
"""

from __future__ import annotations

import select
import smtplib
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mailserver.smtp.gate import LargeMessageGate
from tests import support
from tests.smtp.conftest import PRO, PRO2, site_fixture
from tests.smtp.harness import (
    ServerThread,
    find,
    holding_the_gate,
    listener,
    marker,
    message,
    read_reply,
    send,
    submission,
)

LARGE = 2_000
LIMIT = 60_000

site_server = site_fixture(
    limits={
        "large_message_size": LARGE,
        "large_messages_at_once": 1,
        "large_message_wait": 60,
        "max_message_size": LIMIT,
        "large_message_min_rate": 100_000,
    },
    smtp={"data_rate_grace": 0.3},
)


def gate_of(server: ServerThread) -> LargeMessageGate:
    return listener(server).rt.gate


def big(tag: str, n: int, size: int = 10_000) -> bytes:
    return message(PRO, PRO2, f"large {tag} {n}", ("Compte rendu d'imagerie. " * (size // 25 + 1))[:size] + "\n")


@pytest.fixture
def held(site: ServerThread):  # type: ignore[no-untyped-def]
    """The gate's only slot, held by the test until it calls ``release()``."""
    with holding_the_gate(site) as (gate, release):
        yield gate, release


def test_large_messages_wait_for_a_slot_one_at_a_time(site: ServerThread, pki: support.TestPKI, held) -> None:  # type: ignore[no-untyped-def]
    gate, release = held
    tag = marker()
    gate.peak = 1  # the test's own slot
    with ThreadPoolExecutor(3) as pool:
        sent = [pool.submit(send, site, pki, big(tag, n)) for n in range(3)]

        async def three_waiting() -> None:
            await gate.until(lambda g: g.waiting == 3)

        site.call(three_waiting)  # every session stopped reading its data, none got past the gate
        assert not any(f.done() for f in sent)
        release()
        assert [f.result(timeout=60) for f in sent] == [{}, {}, {}]
    assert gate.peak == 1 and gate.in_use == 0 and gate.waiting == 0
    assert len(find(site, PRO2, tag)) == 3


def test_a_small_message_does_not_wait(site: ServerThread, pki: support.TestPKI, held) -> None:  # type: ignore[no-untyped-def]
    gate, _release = held
    tag = marker()
    assert send(site, pki, message(PRO, PRO2, f"small {tag}", "Bonjour.\n")) == {}
    assert gate.in_use == 1 and len(find(site, PRO2, tag)) == 1


def test_no_slot_in_time_is_a_451_and_nothing_kept(site: ServerThread, pki: support.TestPKI, held) -> None:  # type: ignore[no-untyped-def]
    gate, release = held
    tag = marker()
    gate.wait = 0
    try:
        s = submission(site, pki, PRO)
        try:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                s.sendmail(PRO, [PRO2], big(tag, 0))
            assert refused.value.smtp_code == 451
            assert refused.value.smtp_error.decode().startswith("4.3.2 ")
            release()
            assert s.sendmail(PRO, [PRO2], big(tag, 1)) == {}  # the session goes on; the slot is free again
        finally:
            s.quit()
    finally:
        gate.wait = 60
    kept = find(site, PRO2, tag)
    assert len(kept) == 1 and f"large {tag} 1".encode() in kept[0]
    assert gate.in_use == 0


def test_a_message_over_the_limit_is_still_the_delayed_552(site: ServerThread, pki: support.TestPKI) -> None:
    gate = gate_of(site)
    tag = marker()
    entered = gate.peak
    s = submission(site, pki, PRO)
    assert s.mail(PRO)[0] == 250 and s.rcpt(PRO2)[0] == 250
    code, text = s.data(big(tag, 0, size=LIMIT + 5_000))
    assert (code, text.decode()[:6]) == (552, "5.3.4 ")
    assert s.noop()[0] == 250
    s.quit()
    assert find(site, PRO2, tag) == []
    assert gate.in_use == 0 and gate.peak == entered  # refused while read: it never took a slot


def test_a_large_message_trickled_in_loses_its_slot(site: ServerThread, pki: support.TestPKI) -> None:
    """10,000 octets/s is ten times ``smtp.data_min_rate`` but a tenth of ``limits.large_message_min_rate``: once the
    message holds a slot it is cut (421 4.4.2) after the grace period, and the slot is free again. (Real time: the
    engine's pace timer runs on the event loop; the grace is 0.3 s here.)"""
    gate = gate_of(site)
    s = submission(site, pki, PRO)
    assert s.mail(PRO)[0] == 250 and s.rcpt(PRO2)[0] == 250
    assert s.docmd("DATA")[0] == 354
    sock = s.sock
    assert sock is not None
    line = b"Ligne du compte rendu.\r\n"  # lines ending in a dot: the reader takes the data piece by piece
    sock.sendall(b"Subject: slow large\r\n\r\n" + line * (LARGE // len(line) + 10))

    async def holding() -> None:
        await gate.until(lambda g: g.in_use == 1)

    site.call(holding)
    said = b""
    start = time.monotonic()
    while time.monotonic() - start < 10:
        sock.sendall(line * 20)  # 500 octets every 50 ms
        if select.select([sock], [], [], 0.05)[0]:
            said = read_reply(sock)
            break
    assert said.startswith(b"421 4.4.2 "), said
    s.close()

    async def free() -> None:
        await gate.until(lambda g: g.in_use == 0)

    site.call(free)
