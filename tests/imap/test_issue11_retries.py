"""Issue 11: a transaction PostgreSQL aborts as a deadlock is run again on every writing mailbox command.

APPEND, CREATE, DELETE, RENAME, SUBSCRIBE and UNSUBSCRIBE each open one unit of work; when PostgreSQL
aborts it (SQLSTATE 40P01), the command runs it again and answers OK, and the session goes on. The abort
is a real one: PostgreSQL itself raises ``deadlock_detected`` inside the command's transaction, once, at a
point after its first writes. Through real sockets and TLS with imaplib.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from mailserver import metrics
from mailserver.store import retry
from mailserver.store.models import Account
from mailserver.store.repositories.audit import AuditRepository
from mailserver.store.repositories.base import Repository
from mailserver.store.repositories.mail import MailboxRepository
from tests.imap.conftest import ServerThread, crlf, imaps, message

_ABORT = text("DO $$ BEGIN RAISE EXCEPTION 'deadlock (test)' USING ERRCODE = 'deadlock_detected'; END $$")


def _abort_once(monkeypatch: pytest.MonkeyPatch, cls: type[Repository], name: str) -> None:
    """The next call of ``cls.name`` first has PostgreSQL abort its transaction as a deadlock."""
    original = getattr(cls, name)
    armed = True

    async def aborting(self: Repository, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - any repository method
        nonlocal armed
        if armed:
            armed = False
            await self.session.execute(_ABORT)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, aborting)


@pytest.fixture
def pg(srv: ServerThread) -> Iterator[ServerThread]:
    if not srv.ctx.db.is_postgresql:
        pytest.skip("SQLite has one writer at a time: no deadlock, no serialization failure to retry")
    yield srv


def _append(m: imaplib.IMAP4_SSL, user: Account) -> tuple[str, Any]:
    return m.append("INBOX", "", None, crlf(message("a@example.org", user.address, "retried")))


COMMANDS: dict[str, tuple[type[Repository], str, Callable[[imaplib.IMAP4_SSL, Account], tuple[str, Any]]]] = {
    # APPEND: at its commit, when the blob, the new UID and the message row are written (in one statement)
    "APPEND": (AuditRepository, "stage", _append),
    "CREATE": (MailboxRepository, "create", lambda m, _: m.create("new")),
    "DELETE": (MailboxRepository, "delete", lambda m, _: m.delete("old")),
    "RENAME": (MailboxRepository, "flush", lambda m, _: m.rename("old", "renamed")),
    "SUBSCRIBE": (MailboxRepository, "flush", lambda m, _: m.subscribe("old")),
    "UNSUBSCRIBE": (MailboxRepository, "flush", lambda m, _: m.unsubscribe("old")),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_deadlock_in_a_mailbox_command_is_retried(
    pg: ServerThread, user: Account, tls_client: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    cls, method, run = COMMANDS[command]
    m = imaps(pg, tls_client, user)
    try:
        assert m.create("old")[0] == "OK"
        before = retry.retried
        _abort_once(monkeypatch, cls, method)
        typ, data = run(m, user)
        monkeypatch.undo()
        assert typ == "OK", data
        assert retry.retried == before + 1
        assert m.noop()[0] == "OK"  # the session goes on
        names = b" ".join(d for d in m.list()[1] if isinstance(d, bytes))
        expected = {"CREATE": b"new", "RENAME": b"renamed"}.get(command)
        if expected is not None:
            assert expected in names
        if command == "DELETE":
            assert b'"old"' not in names and b" old" not in names
        if command == "APPEND":
            assert m.select("INBOX")[1] == [b"1"]
    finally:
        m.logout()


def _delivered() -> float:
    """Every copy ``masante_deliveries`` counted, whatever its label (the registry /metrics serves)."""
    return sum(s.value for f in metrics.REGISTRY.collect() for s in f.samples if s.name == "masante_deliveries_total")


def test_a_retried_append_counts_one_delivery(
    pg: ServerThread, user: Account, tls_client: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aborted run had already filed the copy in its unit of work: only the run that commits counts."""
    m = imaps(pg, tls_client, user)
    try:
        before, retried = _delivered(), retry.retried
        _abort_once(monkeypatch, AuditRepository, "stage")  # the copy written, its count asked for
        typ, data = _append(m, user)
        monkeypatch.undo()
        assert typ == "OK", data
        assert retry.retried == retried + 1
        assert _delivered() == before + 1
    finally:
        m.logout()
