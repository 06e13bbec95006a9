"""The process's shared view of selected mailboxes (``mailserver.imap.mailboxcache``) never hides a change for long.

- A change no notification tells this process of (another process on SQLite, no
  IDLE session to make the poller look) is seen once ``REVALIDATE_AFTER`` has
  passed on the server's clock: the next look reads the mailbox row again.
- A mailbox deleted by another session: the selected session's next command
  still ends it with BYE, as before the cache.
"""

from __future__ import annotations

import asyncio
import imaplib
import ssl
import sys

import pytest

from mailserver.imap.mailboxcache import REVALIDATE_AFTER
from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import ServerThread, imaps, message


def _deliver_from_another_process(srv: ServerThread, user: Account) -> bytes:
    async def run() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.imap.deliver_process",
            srv.config.database.url,
            srv.ctx.keyring.current.to_text().strip(),
            user.address,
            "behind the cache",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=support.audit_env(srv.config),
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-2000:]
        return out.strip()

    return asyncio.run(run())


def test_a_change_no_notification_announced_is_seen_after_the_revalidation_delay(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    srv.deliver(user, message("lab@lab.test", user.address, "one"))
    a = imaps(srv, tls_client, user)
    try:
        assert a.select("INBOX") == ("OK", [b"1"])
        a.noop()  # the mailbox is in the cache, current
        assert _deliver_from_another_process(srv, user) == b"2"
        srv.advance(REVALIDATE_AFTER)
        a.noop()
        assert a.untagged_responses.pop("EXISTS", [None])[-1] == b"2", a.untagged_responses
        typ, data = a.uid("FETCH", "2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"behind the cache" in data[0][1]
    finally:
        a.logout()


def test_a_selected_mailbox_deleted_by_another_session_ends_the_session(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    try:
        assert a.create("Projets")[0] == "OK"
        srv.deliver(user, message("lab@lab.test", user.address, "filed"), mailbox="Projets")
        assert a.select("Projets")[0] == "OK"
        a.noop()
        assert b.delete("Projets")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.abort, match="deleted by another session"):
            a.noop()
    finally:
        a.shutdown()
        b.logout()
