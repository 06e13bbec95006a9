"""How many SQL statements each IMAP command and a delivery cost, on SQLite and PostgreSQL (issue 10 point 4).

Each figure is an upper bound: a command that costs more than its bound fails the
test, so a change that adds round trips on the hot path is seen. Statements are
counted at the driver (``before_cursor_execute`` on the server's engine), the
transaction's own ``BEGIN`` left out so that both databases count alike, and so
are the audit chain's statements and PostgreSQL's ``pg_notify`` (the unit of
work's commit, not the command's path: they are printed apart).

- A mailbox that did not change costs nothing to look at again: NOOP, and a FETCH
  of FLAGS, are answered from the process's shared view of the selected mailbox.
- A COPY, MOVE or APPEND is not read back either: the process's view of the
  mailboxes it wrote takes the change after the commit.
- A change is read once per process: of two sessions with the mailbox selected,
  the first to look reads it, the second finds it already read; a change made by
  a session of the process is not read back at all.
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from mailserver.context import Context
from mailserver.notify import CHANNEL
from mailserver.store.models import Account
from tests.harness.server import CALL_TIMEOUT
from tests.harness.statements import Counter, listening
from tests.imap.conftest import ServerThread, imaps, message

MESSAGES = 20

#: statements per command the code may not exceed (before issue 10 point 4: SQLite / PostgreSQL, audit left out)
BOUNDS = {
    "SELECT": 3,  # 6 / 6
    # 3 / 3; 2 / 2 before the messages came from the process's view when it holds the mailbox at the row's modseq
    "SELECT again": 1,
    "UID FETCH FLAGS": 0,  # 1 / 1
    "UID FETCH BODY.PEEK": 1,  # 4 / 4
    "UID FETCH BODY (sets \\Seen)": 3,  # 10 / 11
    "UID STORE": 2,  # 9 / 10
    # the mailbox row alone, outside the writer: the process's view says nothing changes and is at its modseq;
    # 2 / 2 (and a writing unit of work, rolled back) before
    "UID STORE, nothing changed": 1,
    "UID EXPUNGE": 4,  # 13 / 14
    # 11 / 12 (8, and the quota's usage since QUOTA, RFC 9208, read in the writing transaction); 9 / 9 before the
    # account and the mailbox were read in one statement and the process's view took the new message without
    # reading it back
    "APPEND": 7,
    "UID COPY": 5,  # 12 / 8 through the ORM (a row per copy on SQLite); with the quota's usage
    "UID MOVE": 6,  # 14 / 12 through the ORM, the source's changes read back after the commit
    "NOOP on the destination after a COPY": 1,  # its \\Recent claim; 3 / 3 before the view took the copies
    "STATUS": 1,  # 3 / 3
    "NOOP, nothing changed": 0,  # 1 / 1
    "NOOP after a STORE by another session": 0,  # 3 / 3
    "NOOP, first session after a delivery": 3,  # 3 / 3
    "NOOP, second session after the same delivery": 0,  # 3 / 3
    "delivery": 5,  # 5 / 6 (one of them the test's own read of the account)
    # 8 / 8 (the delivery's own statements left out); 5 since the group commit: the two sessions' \Recent claims
    # can reach the writer before either is applied to the shared view, and the loser reads the row again
    "IDLE wake-up of two sessions after a delivery": 5,
}
#: units of work that write, per command, on SQLite (each one a SAVEPOINT of a group commit's batch): an APPEND
#: into the selected mailbox claims its \Recent in its own unit (2 before: the claim was a unit of its own)
UNITS = {
    "APPEND": 1,
    "UID STORE": 1,
    "UID STORE, nothing changed": 0,
    "UID EXPUNGE": 1,
    "UID FETCH BODY.PEEK": 1,
    "SELECT again": 0,
    "STATUS": 0,
}
#: PostgreSQL sends every commit back through LISTEN; a write that hears its own echo before it can say it was its
#: own (its commit still sealing audit entries, a loaded machine) reads the mailbox row once more
PG_ECHO = {
    "UID FETCH BODY (sets \\Seen)": 1,
    "UID STORE": 1,
    "UID EXPUNGE": 1,
    "APPEND": 1,
    "UID MOVE": 1,
    "NOOP on the destination after a COPY": 1,
    "NOOP after a STORE by another session": 1,
    "IDLE wake-up of two sessions after a delivery": 1,
}
#: PostgreSQL locks the account's quota anchor with the target mailbox (``mailserver.quota.admit``), and before
#: the pair of mailbox rows of a COPY or MOVE: one statement
PG_QUOTA_LOCK = {"APPEND": 1, "UID COPY": 1, "UID MOVE": 1}
#: a mailbox id no mailbox has: the test's own notification, to know that every earlier one has come back
MARKER = -1
#: figures measured over a window that also holds another measured operation, left out
LESS = {"IDLE wake-up of two sessions after a delivery": "delivery"}
#: statements of the commit rather than of the command (the audit chain, PostgreSQL's notification), and the
#: queue worker's look at its queue, which runs in the background whatever the clients do
#: the group commit's own statements (each unit in a savepoint of the batch's transaction) count with the commit
_COMMIT = ("audit_", "pg_advisory_xact_lock", "pg_notify", "FROM outbound_queue", "SAVEPOINT")


def _of_commit(statement: str) -> bool:
    return any(word in statement for word in _COMMIT)


@pytest.fixture
def counter(srv: ServerThread) -> Iterator[Counter]:
    with listening(srv.ctx.db.engine) as c:
        yield c


def _check(counts: dict[str, list[str]], postgresql: bool) -> None:
    figures = {name: sum(not _of_commit(x) for x in s) for name, s in counts.items()}
    for name, part in LESS.items():
        figures[name] -= figures[part]
    commit = {name: sum(_of_commit(x) for x in s) for name, s in counts.items()}
    print("statements per command:", figures, "and of their commits:", commit)  # noqa: T201 - pytest -s
    bounds = {
        name: n + (PG_ECHO.get(name, 0) + PG_QUOTA_LOCK.get(name, 0) if postgresql else 0) for name, n in BOUNDS.items()
    }
    over = {name: (n, bounds[name]) for name, n in figures.items() if n > bounds[name]}
    assert not over, {name: (n, bound, counts[name]) for name, (n, bound) in over.items()}
    if not postgresql:
        units = {name: sum(x.lstrip().startswith("SAVEPOINT") for x in counts[name]) for name in UNITS}
        more = {name: (n, UNITS[name]) for name, n in units.items() if n > UNITS[name]}
        assert not more, {name: (n, bound, counts[name]) for name, (n, bound) in more.items()}


async def _marker(ctx: Context) -> None:
    with ctx.db.notifier.subscribe([MARKER]) as sub:
        async with ctx.db.engine.begin() as conn:
            await conn.execute(select(func.pg_notify(CHANNEL, str(MARKER))))
        assert await sub.wait(CALL_TIMEOUT), "the change listener did not hear the test's notification"


def _quiet(srv: ServerThread, *sessions: imaplib.IMAP4_SSL) -> None:
    """Every notification sent so far has come back (PostgreSQL delivers them in commit order: the test's own
    marker last) and each of ``sessions`` has looked at its mailbox since: what is measured next is the next
    command alone, not the echo of an earlier one."""
    if srv.ctx.db.is_postgresql:
        srv.call(_marker)
    for c in sessions:
        c.noop()


def _idle_until_exists(srv: ServerThread, user: Account, *clients: imaplib.IMAP4_SSL) -> None:
    srv.deliver(user, message("lab@lab.test", user.address, "while idling"))
    for c in clients:
        while b"EXISTS" not in (line := c.readline()):
            assert line, "the connection closed during IDLE"
        c.send(b"DONE\r\n")
        while not c.readline().startswith(b"I1 OK"):
            pass


def test_statements_per_command_stay_within_their_bounds(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account, counter: Counter
) -> None:
    counts: dict[str, list[str]] = {}

    def measure(name: str, op: Any, *quiet: imaplib.IMAP4_SSL) -> Any:
        _quiet(srv, *quiet)
        with counter.counting() as seen:
            result = op()
        counts[name] = seen
        return result

    measure("delivery", lambda: srv.deliver(user, message("lab@lab.test", user.address, "first")))
    for i in range(MESSAGES - 1):
        srv.deliver(user, message("lab@lab.test", user.address, f"message {i}"))

    a, b, other = (imaps(srv, tls_client, user) for _ in range(3))
    try:
        typ, _ = measure("SELECT", lambda: a.select("INBOX"))
        assert typ == "OK"
        measure("SELECT again", lambda: b.select("INBOX"))
        other.select("INBOX")
        typ, data = measure("UID FETCH FLAGS", lambda: a.uid("FETCH", "1:*", "(FLAGS)"), a)
        assert typ == "OK" and len(data) == MESSAGES
        typ, data = measure("UID FETCH BODY.PEEK", lambda: a.uid("FETCH", "1:3", "(BODY.PEEK[])"), a)
        assert typ == "OK" and b"first" in data[0][1]
        typ, data = measure("UID FETCH BODY (sets \\Seen)", lambda: a.uid("FETCH", "4:6", "(BODY[])"), a)
        assert typ == "OK" and any(b"\\Seen" in x for x in data if isinstance(x, bytes)), data
        typ, data = measure("UID STORE", lambda: a.uid("STORE", "1:10", "+FLAGS", "(\\Flagged)"), a)
        assert typ == "OK" and len(data) == 10
        typ, data = measure("UID STORE, nothing changed", lambda: a.uid("STORE", "1:10", "+FLAGS", "(\\Flagged)"), a)
        assert typ == "OK" and len(data) == 10 and all(b"\\Flagged" in x for x in data), data
        a.uid("STORE", "11:12", "+FLAGS.SILENT", "(\\Deleted)")
        typ, _ = measure("UID EXPUNGE", lambda: a.uid("EXPUNGE", "11:12"), a)
        assert typ == "OK" and a.untagged_responses.pop("EXPUNGE") == [b"12", b"11"]
        typ, data = measure("APPEND", lambda: a.append("INBOX", "", None, message(user.address, "x@y.test", "kept")), a)
        assert typ == "OK" and b"APPENDUID" in data[0]
        a.create("Kept")
        other.select("Kept")
        typ, data = measure("UID COPY", lambda: a.uid("COPY", "1:5", "Kept"), a, other)
        assert typ == "OK" and a.untagged_responses.pop("COPYUID", None), a.untagged_responses
        measure("NOOP on the destination after a COPY", other.noop)
        assert other.untagged_responses.pop("EXISTS")[-1] == b"5", other.untagged_responses
        typ, data = other.fetch("1:5", "(FLAGS)")
        assert typ == "OK" and all(b"\\Flagged" in x for x in data), data  # the copies keep their flags
        other.select("INBOX")
        typ, data = measure("UID MOVE", lambda: a.uid("MOVE", "6:8", "Kept"), a)
        assert typ == "OK" and a.untagged_responses.pop("EXPUNGE", None) == [b"8", b"7", b"6"], a.untagged_responses
        typ, data = measure("STATUS", lambda: a.status("INBOX", "(MESSAGES UNSEEN UIDNEXT)"), a)
        assert typ == "OK" and b"MESSAGES 16" in data[0]
        assert b"(MESSAGES 8)" in a.status("Kept", "(MESSAGES)")[1][0]  # 5 copied, 3 moved
        measure("NOOP, nothing changed", a.noop, a)
        other.uid("STORE", "2", "+FLAGS", "(\\Answered)")
        measure("NOOP after a STORE by another session", a.noop)
        assert any(b"\\Answered" in x for x in a.untagged_responses.pop("FETCH", [])), a.untagged_responses
        _quiet(srv, a, b)
        srv.deliver(user, message("lab@lab.test", user.address, "late"))
        _quiet(srv)
        measure("NOOP, first session after a delivery", b.noop)
        measure("NOOP, second session after the same delivery", a.noop)
        for c in (a, b):
            assert c.untagged_responses.pop("EXISTS")[-1] == b"17", c.untagged_responses
        for c in (a, b):
            c.send(b"I1 IDLE\r\n")
            assert c.readline().startswith(b"+ ")
        measure("IDLE wake-up of two sessions after a delivery", lambda: _idle_until_exists(srv, user, a, b))
    finally:
        for c in (a, b, other):
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                c.logout()
    _check(counts, srv.ctx.db.is_postgresql)
