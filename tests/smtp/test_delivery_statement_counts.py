"""How many SQL statements one SMTP delivery costs, end of DATA to ``250``, on SQLite and PostgreSQL (issue 10
point 4).

Each figure is pinned: a change that adds a round trip to the delivery path fails the test, and one that saves
some says so by lowering the figure here. Statements are counted at the driver (``before_cursor_execute`` on the
server's engine) from the client's DATA to the server's ``250``: the whole unit of work, its commit, the audit
chain's statements on SQLite (written by the group commit's batch) and its savepoint, all but the transaction's
own ``BEGIN`` and what runs in the background whatever the clients do: the queue worker's look at its queue, and
on PostgreSQL the sealer that chains the staged audit entries after the commit.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import support
from tests.harness.statements import Counter, background_sealer, listening
from tests.smtp.conftest import PATIENT, PRO, PRO2
from tests.smtp.harness import ServerThread, find, marker, message, submission

#: statements per delivery (SQLite, PostgreSQL); before issue 10's lean delivery path (SQLite / PostgreSQL):
#: to a professional 11 / 15, to a patient (the conversation grant's two) 13 / 17; PostgreSQL refreshes a grant with
#: one upsert (14 before), and stages the audit entries and sends the NOTIFY in one statement (12 / 13 before);
#: its sealer chains them in the background (11 / 12 before, the sealer's run awaited before the ``250``); it writes
#: the blob, the mailbox's new UID and the message row in one statement (6 / 7 before)
PINNED = {
    "professional": (9, 4),
    "patient": (11, 5),
}


@pytest.fixture
def counter(site: ServerThread) -> Iterator[Counter]:
    with listening(site.ctx.db.engine, skip=("FROM outbound_queue", *background_sealer(site.ctx.db))) as c:
        yield c


@pytest.mark.parametrize(("who", "rcpt"), [("professional", PRO2), ("patient", PATIENT)])
def test_one_delivery_costs_its_pinned_statements(
    site: ServerThread, pki: support.TestPKI, counter: Counter, who: str, rcpt: str
) -> None:
    s = submission(site, pki, PRO)
    try:
        s.sendmail(PRO, [rcpt], message(PRO, rcpt, "warm-up"))  # the server's first delivery fills its caches
        tag = marker()
        raw = message(PRO, rcpt, tag)
        code, _ = s.mail(PRO)
        assert code == 250
        code, _ = s.rcpt(rcpt)
        assert code == 250
        with counter.counting() as seen:
            code, _ = s.data(raw)
        assert code == 250
    finally:
        s.quit()
    assert len(find(site, rcpt, tag)) == 1
    sqlite, postgresql = PINNED[who]
    expected = postgresql if site.ctx.db.is_postgresql else sqlite
    print(f"statements for one delivery to a {who}:", len(seen))  # noqa: T201 - pytest -s
    assert len(seen) == expected, seen
