"""The message model through the doors: parsed once per accepted message, bounded, and shown as sent.

Real sockets: smtplib submits, imaplib reads back from the same server.
"""

from __future__ import annotations

import email.feedparser
import imaplib
import smtplib
import uuid

import pytest

from mailserver.message import MAX_DEPTH
from mailserver.message import mime as MM
from tests import support
from tests.directory.messages import with_attachments
from tests.message.test_model import nested
from tests.smtp.conftest import PRO, PRO2
from tests.smtp.harness import ServerThread, submission, tls_client

PDF = b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def imap(site: ServerThread, pki: support.TestPKI, user: str = PRO2) -> imaplib.IMAP4_SSL:
    m = imaplib.IMAP4_SSL("127.0.0.1", site.port("imaps"), ssl_context=tls_client(pki), timeout=30)
    m.login(user, support.PASSWORD)
    return m


def crlf(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def send(site: ServerThread, pki: support.TestPKI, raw: bytes, *, options: tuple[str, ...] = ()) -> None:
    with submission(site, pki, PRO) as s:
        s.sendmail(PRO, [PRO2], raw, mail_options=list(options))


def uid_of(m: imaplib.IMAP4, marker: str) -> bytes:
    m.select("INBOX")
    typ, data = m.uid("SEARCH", "HEADER", "X-Marker", marker)
    assert typ == "OK"
    (uid,) = data[0].split()
    return uid


def fetched(m: imaplib.IMAP4, uid: bytes, items: str) -> bytes:
    typ, data = m.uid("FETCH", uid.decode(), items)
    assert typ == "OK"
    return b"".join(part if isinstance(part, bytes) else part[0] + part[1] for part in data)


def test_one_parse_per_accepted_message(
    site: ServerThread, pki: support.TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    raw = crlf(with_attachments(PRO, PRO2, "Compte-rendu", [("cr.pdf", "application/pdf", PDF)], X_Marker=marker))
    parses: list[int] = []
    stdlib: list[int] = []
    real_parse, real_close = MM.parse_tree, email.feedparser.FeedParser.close

    def counting_parse(data: bytes, **kw: bool) -> MM.Entity:
        parses.append(len(data))
        return real_parse(data, **kw)

    def counting_close(self: email.feedparser.FeedParser) -> object:
        stdlib.append(1)
        return real_close(self)

    monkeypatch.setattr(MM, "parse_tree", counting_parse)
    monkeypatch.setattr(email.feedparser.FeedParser, "close", counting_close)
    send(site, pki, raw)
    monkeypatch.undo()
    assert len(parses) == 1 and parses[0] >= len(raw)  # the message as received, once
    assert stdlib == []  # and no second parser (the stdlib email package) behind it
    with imap(site, pki) as m:
        assert b"cr.pdf" in fetched(m, uid_of(m, marker), "(BODYSTRUCTURE)")


def test_utf8_subject_survives_to_envelope_and_search(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    raw = (
        f"From: Dr House <{PRO}>\r\nTo: {PRO2}\r\nSubject: Résultats de Éloïse {marker}\r\n"
        f"X-Marker: {marker}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\nHémoglobine normale.\r\n"
    ).encode()
    send(site, pki, raw, options=("SMTPUTF8", "BODY=8BITMIME"))
    with imap(site, pki) as m:
        uid = uid_of(m, marker)
        envelope = fetched(m, uid, "(ENVELOPE)")
        assert f"Résultats de Éloïse {marker}".encode() in envelope
        assert "\ufffd".encode() not in envelope
        m.literal = "Résultats".encode()  # type: ignore[attr-defined]
        typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
        assert typ == "OK" and uid in data[0].split()
        m.literal = "éloïse".encode()  # type: ignore[attr-defined]
        typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT")
        assert typ == "OK" and uid in data[0].split()  # case-insensitive beyond ASCII


def test_deep_mime_is_refused_permanently(site: ServerThread, pki: support.TestPKI) -> None:
    with submission(site, pki, PRO) as s, pytest.raises(smtplib.SMTPDataError) as refused:
        s.sendmail(PRO, [PRO2], nested(5000))
    assert refused.value.smtp_code == 554
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.6.0 ") and f"more than {MAX_DEPTH} levels deep" in text
    marker = uuid.uuid4().hex
    fine = nested(MAX_DEPTH).replace(b"From: a@x.test\r\n", f"From: {PRO}\r\nX-Marker: {marker}\r\n".encode(), 1)
    send(site, pki, fine)  # at the bound: accepted
    with imap(site, pki) as m:
        assert uid_of(m, marker)


def test_search_address_fields_match_the_whole_field(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    raw = (
        f'From: "User From" <{PRO}>\r\nTo: group: g1@d1.org, "Gé Deux" <g2@d2.org>;\r\nCc: undisclosed:;\r\n'
        f"Subject: s\r\nX-Marker: {marker}\r\n\r\nx\r\n"
    ).encode()
    send(site, pki, raw, options=("SMTPUTF8",))
    with imap(site, pki) as m:
        uid = uid_of(m, marker)
        for key, needle in (
            ("FROM", PRO),
            ("FROM", PRO.upper()),
            ("FROM", "user from"),
            ("FROM", '"User From" <dr'),
            ("TO", "g2@D2.org"),
            ("TO", "group:"),
            ("TO", "Deux"),
            ("CC", "undisclosed"),
        ):
            m.literal = needle.encode()  # type: ignore[attr-defined]
            typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", key)
            assert typ == "OK" and uid in data[0].split(), (key, needle)
        typ, data = m.uid("SEARCH", "FROM", "nobody@else.test")
        assert uid not in data[0].split()
        typ, data = m.uid("SEARCH", "BCC", "x")
        assert uid not in data[0].split()  # no Bcc field: nothing to match
        envelope = fetched(m, uid, "(ENVELOPE)")
        assert b'((NIL NIL "group" NIL) (NIL NIL "g1" "d1.org")' in envelope
        assert b'"d2.org") (NIL NIL NIL NIL))' in envelope
        assert b'((NIL NIL "undisclosed" NIL) (NIL NIL NIL NIL))' in envelope


def test_quoted_boundary_and_subtype_case_in_bodystructure(site: ServerThread, pki: support.TestPKI) -> None:
    marker = uuid.uuid4().hex
    raw = (
        f"From: {PRO}\r\nTo: {PRO2}\r\nSubject: parts\r\nX-Marker: {marker}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="foo bar"\r\n\r\n'
        "--foo bar\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\npremier\r\n"
        '--foo bar\r\nContent-Type: image/x-MYOWN; Param="Valeur Écrite"\r\n\r\nsecond\r\n'
        "--foo bar--\r\n"
    ).encode()
    send(site, pki, raw, options=("SMTPUTF8",))
    with imap(site, pki) as m:
        uid = uid_of(m, marker)
        bs = fetched(m, uid, "(BODYSTRUCTURE)")
        assert b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 7 0' in bs
        # imaplib joins the literal ({14} octets, UTF-8) to the line it ends
        assert b'("image" "x-MYOWN" ("Param" {14}' + "Valeur Écrite".encode() + b") NIL NIL" in bs
        assert b'"mixed" ("boundary" "foo bar")' in bs
        assert b"BODY[1] {7}premier " in fetched(m, uid, "(BODY.PEEK[1])")
        assert b"BODY[2] {6}second " in fetched(m, uid, "(BODY.PEEK[2])")


def test_append_parses_once_and_is_bounded(
    site: ServerThread, pki: support.TestPKI, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = uuid.uuid4().hex
    raw = crlf(with_attachments(PRO2, PRO2, "Brouillon", [("cr.pdf", "application/pdf", PDF)], X_Marker=marker))
    with imap(site, pki) as m:
        parses: list[int] = []
        real_parse = MM.parse_tree

        def counting_parse(data: bytes, **kw: bool) -> MM.Entity:
            parses.append(len(data))
            return real_parse(data, **kw)

        monkeypatch.setattr(MM, "parse_tree", counting_parse)
        typ, _ = m.append("Drafts", "", None, raw)
        monkeypatch.undo()
        assert typ == "OK" and parses == [len(raw)]
        typ, data = m.append("Drafts", "", None, nested(5000))
        assert typ == "NO" and b"levels deep" in data[0]
