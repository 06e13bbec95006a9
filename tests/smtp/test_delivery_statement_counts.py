"""How many SQL statements one SMTP delivery costs, end of DATA to ``250``, on SQLite and PostgreSQL (issue 10
point 4).

Each figure is pinned: a change that adds a round trip to the delivery path fails the test, and one that saves
some says so by lowering the figure here. Statements are counted at the driver (``before_cursor_execute`` on the
server's engine) from the client's DATA to the server's ``250``: the whole unit of work, its commit, the audit
chain's statements (on PostgreSQL the sealer's run, awaited before the ``250``) and the group commit's
savepoint, all but the transaction's own ``BEGIN`` and the queue worker's look at its queue, which runs in the
background whatever the clients do.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from tests import support
from tests.smtp.conftest import PATIENT, PRO, PRO2
from tests.smtp.harness import ServerThread, find, marker, message, submission

#: statements per delivery (SQLite, PostgreSQL); before issue 10's lean delivery path (SQLite / PostgreSQL):
#: to a professional 11 / 15, to a patient (the conversation grant's two) 13 / 17
PINNED = {
    "professional": (9, 12),
    "patient": (11, 14),
}


class Counter:
    """Statements the server's engine sends, counted from any thread (the server runs in its own)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        head = statement.lstrip().upper()
        if head.startswith("BEGIN") or "FROM OUTBOUND_QUEUE" in head:
            return
        with self._lock:
            self.statements.append(statement)

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[str]]:
        with self._lock:
            start = len(self.statements)
        seen: list[str] = []
        yield seen
        with self._lock:
            seen += self.statements[start:]


@pytest.fixture
def counter(site: ServerThread) -> Iterator[Counter]:
    c = Counter()
    engine = site.ctx.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", c)
    try:
        yield c
    finally:
        event.remove(engine, "before_cursor_execute", c)


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
