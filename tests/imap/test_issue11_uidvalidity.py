"""Issue 11: a mailbox deleted and created again, even within the same second, gets a larger UIDVALIDITY.

RFC 3501 §2.3.1.1: the UIDs of the new mailbox restart at 1, so a client that kept the old UIDVALIDITY
must see a new one, never the old one again. Through real sockets and TLS with imaplib, on both databases.
"""

from __future__ import annotations

import ssl

from mailserver.store.models import Account
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
