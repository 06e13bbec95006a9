"""Issue 11: a mailbox deleted and created again, even within the same second, gets a larger UIDVALIDITY.

RFC 3501 §2.3.1.1: the UIDs of the new mailbox restart at 1, so a client that kept the old UIDVALIDITY
must see a new one, never the old one again. Through real sockets and TLS with imaplib, on both databases.
"""

from __future__ import annotations

import ssl
import subprocess
import sys

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import ServerThread, crlf, imaps, message


def test_a_mailbox_deleted_and_created_again_gets_a_larger_uidvalidity(
    srv: ServerThread, user: Account, tls_client: ssl.SSLContext
) -> None:
    m = imaps(srv, tls_client, user)
    try:
        assert m.create("x")[0] == "OK"
        assert m.append("x", "", None, crlf(message("a@example.org", user.address, "x")))[0] == "OK"
        assert m.select("x")[0] == "OK"
        first = int(m.response("UIDVALIDITY")[1][0])
        m.unselect()
        assert m.delete("x")[0] == "OK"
        assert m.create("x")[0] == "OK"
        assert m.select("x")[0] == "OK"
        second = int(m.response("UIDVALIDITY")[1][0])
        assert second > first, (first, second)
    finally:
        m.logout()


def _recreate_in_another_process(srv: ServerThread, user: Account, name: str) -> int:
    """DELETE and CREATE ``name`` in a process of its own (a second server, or this one restarted)."""
    kek = srv.ctx.keyring.current.to_text().strip()
    proc = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.imap.mailbox_process", srv.config.database.url, kek, user.address, name],
        capture_output=True,
        env=support.audit_env(srv.config),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return int(proc.stdout)


def test_uidvalidity_grows_across_processes_and_restarts(
    srv: ServerThread, user: Account, tls_client: ssl.SSLContext
) -> None:
    m = imaps(srv, tls_client, user)
    try:
        seen: list[int] = []
        for _ in range(20):  # ahead of the clock: each one more than the last
            assert m.create("x")[0] == "OK"
            assert m.select("x")[0] == "OK"
            seen.append(int(m.response("UIDVALIDITY")[1][0]))
            m.unselect()
            assert m.delete("x")[0] == "OK"
        seen.append(_recreate_in_another_process(srv, user, "x"))
        seen.append(_recreate_in_another_process(srv, user, "x"))
        assert m.delete("x")[0] == "OK"
        assert m.create("x")[0] == "OK"
        assert m.select("x")[0] == "OK"
        seen.append(int(m.response("UIDVALIDITY")[1][0]))
        assert seen == sorted(set(seen)), seen
    finally:
        m.logout()
