"""The quota at end of DATA is bounded once, in the delivering transaction (``quota.admit``): a recipient whose
mailbox fills up while the message travels is refused alone, and the others still get it.

Before the bound moved into the writer, DATA looked at the quota first, in a transaction of its own; a
delivery that outran that look refused the whole message ``452 4.2.2`` when it had more than one recipient.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Iterator

import pytest

from tests import support
from tests.harness.server import server_fixture
from tests.imap.conftest import TIMEOUT, domains
from tests.smtp.harness import ServerThread, inbox, message, submission

PRO_MESSAGES = 6
RACERS = 5  # the roomy mailbox takes them all (fewer than PRO_MESSAGES)
ROOM = 2

quota_server = server_fixture(
    domains,
    name="quota_server",
    limits={"quota_messages_professional": PRO_MESSAGES},
    policy={"rate_professional_per_hour": 0},
)


@pytest.fixture
def srv(quota_server: ServerThread) -> Iterator[ServerThread]:
    yield quota_server
    quota_server.reset_throttle()


def test_a_mailbox_filled_meanwhile_refuses_its_recipient_alone(srv: ServerThread, pki: support.TestPKI) -> None:
    nearly, roomy, sender = srv.make_pro("nearly"), srv.make_pro("roomy"), srv.make_pro("racer")
    for i in range(PRO_MESSAGES - ROOM):
        srv.deliver(nearly, message("a@b.test", nearly.address, f"held {i}"))
    barrier = threading.Barrier(RACERS, timeout=TIMEOUT)

    def send(i: int) -> int:
        s = submission(srv, pki, sender.address)
        try:
            s.mail(sender.address)
            assert s.rcpt(nearly.address)[0] == 250  # not full yet: every racer gets this far
            assert s.rcpt(roomy.address)[0] == 250
            barrier.wait()
            code, _ = s.data(message(sender.address, nearly.address, f"racer {i}"))
            return int(code)
        finally:
            s.quit()

    with concurrent.futures.ThreadPoolExecutor(RACERS) as pool:
        answers = list(pool.map(send, range(RACERS)))
    assert answers == [250] * RACERS, answers  # never 452 4.2.2: nothing to retry
    assert len(inbox(srv, roomy.address)) == RACERS
    assert len(inbox(srv, nearly.address)) == PRO_MESSAGES
