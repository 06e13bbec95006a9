"""Memory per idle connection (issue 10): the TLS read buffer is one per event loop, and reads still work.

- Every TLS connection of the server reads through one shared buffer once its handshake is done,
  IMAPS and STARTTLS alike.
- Through that buffer a 10 MB APPEND arrives whole (its octets read back equal) and a command line
  of 60,000 octets is answered.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import ssl

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, imaps


def read_buffers(srv: ServerThread) -> list[bytearray]:
    """The TLS read buffer of every open IMAP session of the server."""
    return [s.writer.transport._ssl_protocol._ssl_buffer for lst in srv.listeners() for s in lst._sessions]


def test_tls_connections_read_through_one_shared_buffer(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    a, b = imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    c = imaplib.IMAP4(HOST, srv.port("imap"), timeout=TIMEOUT)
    try:
        c.starttls(ssl_context=tls_client)
        c.login(user.address, support.PASSWORD)
        buffers = read_buffers(srv)
        assert len(buffers) == 3
        assert all(x is buffers[0] for x in buffers)
        assert c.noop()[0] == "OK"  # and it still reads
    finally:
        for x in (a, b, c):
            x.logout()


def test_a_10_mb_append_and_a_long_command_line_still_work(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    m = imaps(srv, tls_client, user)
    try:
        head = f"From: lab@lab.test\r\nTo: {user.address}\r\nSubject: big\r\nMessage-ID: <big@test>\r\n\r\n"
        body = head.encode() + b"y" * 998 + b"\r\n" + bytes(range(32, 127)) * 10 + b"\r\n"
        body = body + (b"z" * 998 + b"\r\n") * (10 * 1024 * 1024 // 1000)
        typ, data = m.append("INBOX", None, None, body)
        assert typ == "OK", data
        m.select("INBOX")
        typ, fetched = m.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert typ == "OK"
        assert int(re.search(rb"RFC822.SIZE (\d+)", fetched[0][0]).group(1)) == len(body)  # type: ignore[union-attr]
        assert hashlib.sha256(fetched[0][1]).hexdigest() == hashlib.sha256(body).hexdigest()
        # a sequence set of ~60,000 octets: many TLS records, under [imap] max_line (65,536)
        uids = ",".join(str(n) for n in range(1, 12_000))
        assert len(uids) > 60_000
        typ, data = m.uid("FETCH", uids, "(FLAGS)")
        assert typ == "OK", data
    finally:
        m.logout()
