"""PREVIEW (RFC 8970) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

The preview is at most 256 characters of the message's text, whitespace folded: the plain part
when there is one, else the HTML part as text; attachments never. FETCH PREVIEW (LAZY) is the same;
it does not set \\Seen, is audited as a read of the content, and is never logged.
"""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Iterator

import pytest

from mailserver import logs
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import parse
from mailserver.message import parse_message
from mailserver.message.preview import preview
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, message, raw_command

HTML_ONLY = (
    b"From: a@b.test\r\nTo: c@d.test\r\nSubject: html\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    b"<html><head><title>T</title><style>p {color: red}</style></head>"
    b"<body><p>Bonjour&nbsp;Madame,</p><p>vos <b>r\xc3\xa9sultats</b> sont arriv\xc3\xa9s.</p></body></html>\r\n"
)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logs.JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def logged() -> Iterator[Lines]:
    logger = logging.getLogger("masante")
    handler, level = Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def previews(m: imaplib.IMAP4_SSL, seqs: str, item: str = "PREVIEW") -> list[str]:
    typ, data = m.fetch(seqs, f"({item})")
    assert typ == "OK", data
    out = []
    for part in data:
        if isinstance(part, tuple):  # a literal (non-ASCII text)
            out.append(part[1].decode())
        elif part and b"PREVIEW " in part:
            out.append(part.split(b"PREVIEW ", 1)[1].rstrip(b")").strip(b'"').decode())
    return out


def test_preview(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account, logged: Lines) -> None:
    assert b"PREVIEW" in raw_command(m, "CAPABILITY")[0].split()
    long_text = "Compte-rendu   de\n\nconsultation.\t" + "x" * 300
    srv.deliver(user, message("a@b.test", user.address, "long", long_text))
    srv.deliver(user, message("a@b.test", user.address, "alt", "Texte brut.", html="<p>Texte <b>HTML</b></p>"))
    srv.deliver(user, HTML_ONLY)
    srv.deliver(user, message("a@b.test", user.address, "pj", "", attachments=[("notes.txt", "text/plain", b"secret")]))
    m.select("INBOX")
    before = len(srv.audit("imap.fetch"))
    got = previews(m, "1:4")
    assert got[0] == ("Compte-rendu de consultation. " + "x" * 300)[:256] and len(got[0]) == 256
    assert got[1] == "Texte brut."  # the plain part, not the HTML one
    assert got[2] == "Bonjour Madame, vos résultats sont arrivés."  # entities decoded, spaces folded
    assert got[3] == ""  # an attachment is not the text
    assert previews(m, "2", "PREVIEW (LAZY)") == ["Texte brut."]
    assert raw_command(m, "SEARCH SEEN")[0] == b"* SEARCH"  # PREVIEW is no read of the message
    assert len(srv.audit("imap.fetch")) > before  # but decrypting it is audited
    assert not [line for line in logged.lines if "consultation" in line or "sultats" in line]


def test_preview_of_a_message() -> None:
    msg = parse_message(b"Subject: x\r\n\r\n  un   deux\r\n trois \r\n")
    assert preview(msg) == "un deux trois"
    assert preview(parse_message(b"Subject: x\r\n\r\n")) == ""
    (f,) = parse(b"a FETCH 1 (PREVIEW (LAZY) FLAGS)\r\n")
    assert isinstance(f, c.Fetch) and f.items == (c.FetchAttr("PREVIEW"), c.FetchAttr("FLAGS"))
    assert parse(c.to_wire(f)) == [f]
