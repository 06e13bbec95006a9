"""CATENATE (RFC 4469) through real sockets and TLS with imaplib: APPEND of a message put together from TEXT
literals and IMAP URLs (RFC 5092) of parts of this account's messages; NO [BADURL url] for a URL naming nothing.
"""

from __future__ import annotations

import imaplib
import ssl

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import parse
from mailserver.imap.protocol.urls import parse_url
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, crlf, imaps, raw_command

SOURCE = crlf(
    b"From: lab@b.test\n"
    b"To: dr@d.test\n"
    b"Subject: results\n"
    b"MIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="b"\n'
    b"\n"
    b"--b\n"
    b"Content-Type: text/plain\n"
    b"\n"
    b"See the attached results.\n"
    b"--b\n"
    b"Content-Type: application/pdf\n"
    b"Content-Transfer-Encoding: base64\n"
    b"\n"
    b"JVBERi0xLjQK\n"
    b"--b--\n"
)


def literal(data: bytes) -> bytes:
    return b"{%d+}\r\n" % len(data) + data


def uidvalidity(m: imaplib.IMAP4_SSL, mailbox: str) -> int:
    line = raw_command(m, f"STATUS {mailbox} (UIDVALIDITY)")[0]
    return int(line.rsplit(b" ", 1)[1].rstrip(b")"))


def test_catenate_builds_a_forward_from_text_and_urls(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    assert b"CATENATE" in raw_command(m, "CAPABILITY")[0].split()
    srv.deliver(user, SOURCE)
    v = uidvalidity(m, "INBOX")
    head = crlf(
        b"From: " + user.address.encode() + b"\nTo: other@d.test\nSubject: Fwd: results\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="z"\n\n--z\nContent-Type: text/plain\n\nForwarding.\n--z\n'
    )
    line = (
        b"APPEND Drafts (\\Draft) CATENATE (TEXT "
        + literal(head)
        + b' URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2.MIME" URL "/INBOX;UIDVALIDITY=%d/;UID=1/;SECTION=2"' % (v, v)
        + b" TEXT "
        + literal(b"\r\n--z--\r\n")
        + b")"
    )
    lines = raw_command(m, line)
    assert b"OK [APPENDUID" in lines[-1], lines
    m.select("Drafts")
    typ, data = m.fetch("1", "(BODY.PEEK[] BODY.PEEK[2.MIME] BINARY.PEEK[2])")
    assert typ == "OK"
    whole = data[0][1]  # type: ignore[index]
    pdf_mime = b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    assert whole == head + pdf_mime + b"JVBERi0xLjQK" + b"\r\n--z--\r\n"
    assert data[2][1] == b"%PDF-1.4\n"  # type: ignore[index]
    # a whole message by URL, and with MULTIAPPEND beside a plain literal
    url = b'"/INBOX;UIDVALIDITY=%d/;UID=1"' % v
    lines = raw_command(m, b"APPEND INBOX CATENATE (URL " + url + b") " + literal(SOURCE))
    assert lines[-1].split(b"] ")[0].endswith(b" 2:3"), lines
    m.select("INBOX")
    assert m.fetch("2", "(BODY.PEEK[])")[1][0][1] == SOURCE  # type: ignore[index]


@pytest.mark.parametrize(
    "url",
    [
        "/INBOX;UIDVALIDITY=1/;UID=1",  # another UIDVALIDITY
        "/Nowhere;UIDVALIDITY={v}/;UID=1",
        "/INBOX;UIDVALIDITY={v}/;UID=99",
        "/INBOX;UIDVALIDITY={v}/;UID=1/;SECTION=7",
        "/INBOX/;UID=1",
        "imap://someone.else@d.test/INBOX;UIDVALIDITY={v}/;UID=1",
    ],
)
def test_a_url_naming_nothing_is_badurl(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account, url: str) -> None:
    srv.deliver(user, SOURCE)
    wanted = url.format(v=uidvalidity(m, "INBOX"))
    lines = raw_command(m, b'APPEND Drafts CATENATE (TEXT {2+}\r\nhi URL "' + wanted.encode() + b'")')
    assert lines[-1].split(b" ", 1)[1].startswith(b"NO [BADURL " + wanted.encode() + b"]"), lines
    m.select("Drafts")
    assert m.search(None, "ALL")[1] == [b""]


def test_a_url_to_another_account_is_badurl(
    srv: ServerThread, tls_client: ssl.SSLContext, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    other = srv.make_pro()
    srv.deliver(other, SOURCE)
    o = imaps(srv, tls_client, other)
    try:
        v = uidvalidity(o, "INBOX")
    finally:
        o.logout()
    # the other account's INBOX is not this one's: the UIDVALIDITY (or UID) does not match here
    url = f"imap://{other.address.replace('@', '%40')}@localhost/INBOX;UIDVALIDITY={v}/;UID=1".encode()
    assert b"NO [BADURL" in raw_command(m, b'APPEND Drafts CATENATE (URL "' + url + b'")')[-1]


def test_parse_catenate_and_urls() -> None:
    (a,) = parse(b'a APPEND Drafts (\\Seen) CATENATE (TEXT {2+}\r\nhi URL "/INBOX;UIDVALIDITY=3/;UID=7") {1+}\r\nx\r\n')
    assert isinstance(a, c.Append)
    assert a.catenate == (c.CatPart(text=b"hi"), c.CatPart(url="/INBOX;UIDVALIDITY=3/;UID=7"))
    assert a.more == (c.AppendItem(message=b"x"),)
    assert parse(c.to_wire(a)) == [a]
    u = parse_url("/Caf%C3%A9;UIDVALIDITY=5/;UID=2/;SECTION=1.MIME/;PARTIAL=0.10")
    assert (u.mailbox, u.uidvalidity, u.uid, str(u.section), u.partial) == ("Café", 5, 2, "[1.MIME]", (0, 10))
    for bad in ("/INBOX;UIDVALIDITY=5", "/INBOX;UIDVALIDITY=5/;UID=2/;URLAUTH=x", "http://x/y"):
        with pytest.raises(ValueError):
            parse_url(bad)
