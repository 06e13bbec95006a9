"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, and UTF8=ACCEPT (RFC 6855), through real sockets and TLS with imaplib.

A server that offers both revisions keeps IMAP4rev1 behaviour until the client says ``ENABLE IMAP4rev2``
(RFC 9051 Appendix E and §6.3.1). From then on: no ``\\Recent`` and no ``RECENT`` response, SELECT answers
a ``LIST`` of the mailbox and no ``UNSEEN`` code, a SEARCH without RETURN is answered ``ESEARCH``, and
mailbox names travel in UTF-8 both ways (as after ``ENABLE UTF8=ACCEPT``), not in modified UTF-7.
``STATUS DELETED`` counts the messages marked ``\\Deleted``.
"""

from __future__ import annotations

import imaplib
import ssl

from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, imaps, message, raw_command

RESULTS = "Résultats"
RESULTS_MUTF7 = b"R&AOk-sultats"


def enable(m: imaplib.IMAP4_SSL, what: str) -> list[bytes]:
    lines = raw_command(m, f"ENABLE {what}")
    assert lines[-1].endswith(b"OK ENABLE completed"), lines
    return lines


def test_both_revisions_are_offered_and_rev1_stays_until_enabled(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    caps = raw_command(m, "CAPABILITY")[0].split()
    assert b"IMAP4rev1" in caps and b"IMAP4rev2" in caps
    for i in range(2):
        srv.deliver(user, message("lab@lab.test", user.address, f"r{i}", "x"))
    selected = raw_command(m, "SELECT INBOX")
    assert b"* 2 RECENT" in selected and not any(x.startswith(b"* LIST") for x in selected)
    assert raw_command(m, "SEARCH ALL")[0] == b"* SEARCH 1 2"


def test_after_enable_imap4rev2_recent_is_gone_and_search_answers_esearch(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    for i in range(3):
        srv.deliver(user, message("lab@lab.test", user.address, f"r{i}", "x"))
    assert enable(m, "IMAP4rev2")[0] == b"* ENABLED IMAP4rev2"
    assert enable(m, "IMAP4rev2")[0] == b"* ENABLED"  # already on: nothing newly enabled
    selected = raw_command(m, "SELECT INBOX")
    assert b'* LIST () "/" "INBOX"' in selected  # RFC 9051 §6.3.2
    assert not any(b"RECENT" in x or b"UNSEEN" in x for x in selected), selected
    assert b"* 3 EXISTS" in selected
    fetched = raw_command(m, "FETCH 1:* (FLAGS)")
    assert fetched[:3] == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())", b"* 3 FETCH (FLAGS ())"]

    tag_line = raw_command(m, "SEARCH ALL")
    assert tag_line[0].startswith(b'* ESEARCH (TAG "') and tag_line[0].endswith(b'") ALL 1:3'), tag_line
    uid_line = raw_command(m, "UID SEARCH SUBJECT r1")[0]
    assert b") UID ALL " in uid_line
    nothing = raw_command(m, "SEARCH SUBJECT absent")[0]
    assert nothing.startswith(b'* ESEARCH (TAG "') and nothing.endswith(b'")'), nothing  # no ALL when none

    srv.deliver(user, message("lab@lab.test", user.address, "late", "x"))
    news = raw_command(m, "NOOP")
    assert b"* 4 EXISTS" in news and not any(b"RECENT" in x for x in news), news
    assert b"\\Recent" not in b" ".join(raw_command(m, "FETCH 4 (FLAGS)"))


def test_status_deleted_counts_the_messages_marked_deleted(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    for i in range(4):
        srv.deliver(user, message("lab@lab.test", user.address, f"d{i}", "x"))
    m.select("INBOX")
    m.store("1,3", "+FLAGS", "(\\Deleted)")
    assert raw_command(m, "STATUS INBOX (MESSAGES DELETED)")[0] == b'* STATUS "INBOX" (MESSAGES 4 DELETED 2)'
    listed = raw_command(m, 'LIST "" "INBOX" RETURN (STATUS (DELETED))')
    assert b'* STATUS "INBOX" (DELETED 2)' in listed, listed


def test_utf8_names_after_enable_and_modified_utf7_before(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account, tls_client: ssl.SSLContext
) -> None:
    enable(m, "UTF8=ACCEPT")
    created = raw_command(m, f'CREATE "{RESULTS}"'.encode())
    assert created[-1].split()[1] == b"OK", created
    assert raw_command(m, b'CREATE "R&D"')[-1].split()[1] == b"OK"  # a plain & in UTF-8
    listed = b"\r\n".join(raw_command(m, 'LIST "" "*"'))
    assert RESULTS.encode() in listed and RESULTS_MUTF7 not in listed
    assert b'"/" "R&D"' in listed
    assert raw_command(m, f'SELECT "{RESULTS}"'.encode())[-1].split()[1] == b"OK"
    status = raw_command(m, f'STATUS "{RESULTS}" (MESSAGES)'.encode())
    assert RESULTS.encode() in b"".join(status) and b"(MESSAGES 0)" in status[-2], status

    rev1 = imaps(srv, tls_client, user)  # another client, never enabled: modified UTF-7 as before
    try:
        old = b"\r\n".join(raw_command(rev1, 'LIST "" "*"'))
        assert RESULTS_MUTF7 in old and RESULTS.encode() not in old
        assert b'"/" "R&-D"' in old
        assert raw_command(rev1, b'SELECT "R&AOk-sultats"')[-1].split()[1] == b"OK"
        # and a UTF-8 name from a client that did not enable it is no valid modified UTF-7: no such mailbox
        assert b" NO " in raw_command(rev1, b'SELECT "R&D"')[-1]
    finally:
        rev1.logout()


def test_imap4rev2_names_are_utf8_too(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    enable(m, "IMAP4rev2")
    assert raw_command(m, f'CREATE "{RESULTS}/Biologie"'.encode())[-1].split()[1] == b"OK"
    selected = raw_command(m, f'SELECT "{RESULTS}/Biologie"'.encode())
    joined = b"\r\n".join(selected)
    assert b'* LIST () "/" {' in joined and f"{RESULTS}/Biologie".encode() in joined, selected
    assert RESULTS_MUTF7 not in joined


def test_append_utf8_stores_a_message_with_utf8_header_fields(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    enable(m, "UTF8=ACCEPT")
    raw = f"From: {user.address}\r\nTo: {user.address}\r\nSubject: Résultats d'analyse\r\n\r\nbonjour\r\n".encode()
    lines = raw_command(m, b"APPEND INBOX UTF8 (~{%d+}\r\n" % len(raw) + raw + b")")
    assert lines[-1].split()[1] == b"OK" and b"APPENDUID" in lines[-1], lines
    m.select("INBOX")
    typ, data = m.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and "Subject: Résultats d'analyse".encode() in data[0][1]
    assert b" BAD " in raw_command(m, b"APPEND INBOX UTF8 ({%d+}\r\n" % len(raw) + raw + b")")[-1]  # literal8 only
