"""CONDSTORE and QRESYNC (RFC 7162) through real sockets and TLS with imaplib, on SQLite and PostgreSQL.

Two sessions of one account: what one changes, the other learns with its
mod-sequences; a session that comes back with ``SELECT (QRESYNC ...)`` learns
what vanished and what changed while it was away, and nothing more.
"""

from __future__ import annotations

import imaplib
import re
import ssl

import pytest

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, imaps, message, raw_command


def deliver(srv: ServerThread, user: Account, n: int) -> list[int]:
    return [srv.deliver(user, message("a@b.test", user.address, f"msg {i}", "x")) for i in range(n)]


def code(lines: list[bytes], name: str) -> int:
    for line in lines:
        found = re.search(rb"\[" + name.encode() + rb" (\d+)\]", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"no {name} in {lines}")


def modseqs(lines: list[bytes]) -> dict[int, int]:
    """UID -> MODSEQ of the FETCH responses."""
    out = {}
    for line in lines:
        found = re.match(rb"\* \d+ FETCH \(.*UID (\d+).*MODSEQ \((\d+)\)", line)
        if found:
            out[int(found.group(1))] = int(found.group(2))
    return out


def test_capabilities_advertised(m: imaplib.IMAP4_SSL) -> None:
    caps = raw_command(m, "CAPABILITY")[0].split()
    assert b"CONDSTORE" in caps and b"QRESYNC" in caps


def test_condstore_fetch_store_search_status(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    uids = deliver(srv, user, 3)
    sel = raw_command(m, "SELECT INBOX (CONDSTORE)")
    assert sel[-1].endswith(b"OK [READ-WRITE] SELECT completed"), sel
    high = code(sel, "HIGHESTMODSEQ")
    start = modseqs(raw_command(m, "FETCH 1:* (UID MODSEQ)"))
    assert set(start) == set(uids) and max(start.values()) <= high

    # a flag change reports its new mod-sequence (CONDSTORE is on: every FETCH of flags carries MODSEQ)
    out = raw_command(m, "STORE 2 +FLAGS (\\Flagged)")
    fetched = [x for x in out if b" FETCH (" in x]
    assert len(fetched) == 1 and b"MODSEQ (" in fetched[0], out
    after = int(re.search(rb"MODSEQ \((\d+)\)", fetched[0]).group(1))  # type: ignore[union-attr]
    assert after > high

    changed = raw_command(m, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {high})")
    assert modseqs(changed) == {uids[1]: after}, changed
    assert not [x for x in raw_command(m, f"FETCH 1:* (FLAGS) (CHANGEDSINCE {after})") if b" FETCH (" in x]

    # UNCHANGEDSINCE: message 2 changed after `high`, so it is left alone and named in MODIFIED
    out = raw_command(m, f"STORE 1:3 (UNCHANGEDSINCE {high}) +FLAGS (\\Seen)")
    assert re.search(rb"OK \[MODIFIED 2\]", out[-1]), out
    assert {int(x.split()[1]) for x in out if b" FETCH (" in x} == {1, 3}
    flags = raw_command(m, "FETCH 2 (FLAGS)")
    assert b"\\Seen" not in flags[0] and b"\\Flagged" in flags[0]

    # SEARCH MODSEQ: the messages changed at or after it, and the highest mod-sequence among them
    found = raw_command(m, f"SEARCH MODSEQ {after + 1}")
    top = max(modseqs(raw_command(m, "FETCH 1:3 (UID MODSEQ)")).values())
    assert found[0] == f"* SEARCH 1 3 (MODSEQ {top})".encode(), found
    assert raw_command(m, f'UID SEARCH MODSEQ "/flags/\\\\draft" all {top + 1}')[0] == b"* SEARCH"

    status = raw_command(m, "STATUS INBOX (MESSAGES HIGHESTMODSEQ)")
    assert status[0] == f'* STATUS "INBOX" (MESSAGES 3 HIGHESTMODSEQ {top})'.encode(), status


def test_another_session_change_carries_modseq(
    srv: ServerThread, tls_client: ssl.SSLContext, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    deliver(srv, user, 2)
    assert raw_command(m, "ENABLE CONDSTORE")[0] == b"* ENABLED CONDSTORE"
    high = code(raw_command(m, "SELECT INBOX"), "HIGHESTMODSEQ")
    other = imaps(srv, tls_client, user)
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Answered)")
    other.logout()
    news = raw_command(m, "NOOP")
    fetched = [x for x in news if b" FETCH (" in x]
    assert len(fetched) == 1 and b"\\Answered" in fetched[0], news
    assert int(re.search(rb"MODSEQ \((\d+)\)", fetched[0]).group(1)) > high  # type: ignore[union-attr]


def test_qresync_select_vanished_and_expunge(
    srv: ServerThread, tls_client: ssl.SSLContext, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    uids = deliver(srv, user, 4)
    bad = raw_command(m, "SELECT INBOX (QRESYNC (1 1))")
    assert re.search(rb"BAD .*ENABLE QRESYNC", bad[-1]), bad
    assert raw_command(m, "ENABLE QRESYNC")[0] == b"* ENABLED QRESYNC"  # CONDSTORE is on too (MODSEQ below)
    sel = raw_command(m, "SELECT INBOX")
    uidvalidity, high = code(sel, "UIDVALIDITY"), code(sel, "HIGHESTMODSEQ")
    raw_command(m, "UNSELECT")

    # meanwhile, another client flags message 1 and expunges message 3
    other = imaps(srv, tls_client, user)
    other.select("INBOX")
    other.store("1", "+FLAGS", "($Done)")
    other.store("3", "+FLAGS", "(\\Deleted)")
    other.expunge()
    other.logout()

    back = raw_command(m, f"SELECT INBOX (QRESYNC ({uidvalidity} {high}))")
    assert back[-1].endswith(b"OK [READ-WRITE] SELECT completed"), back
    assert f"* VANISHED (EARLIER) {uids[2]}".encode() in back, back
    assert set(modseqs(back)) == {uids[0]}, back
    # the new keyword is announced before the FETCH that carries it
    first_fetch = next(i for i, x in enumerate(back) if b" FETCH (" in x)
    assert any(x.startswith(b"* FLAGS (") and b"$Done" in x for x in back[:first_fetch])

    # known UIDs narrow what is said; another UIDVALIDITY says nothing more than a plain SELECT
    narrow = raw_command(m, f"EXAMINE INBOX (QRESYNC ({uidvalidity} {high} {uids[0]}:{uids[1]}))")
    assert not [x for x in narrow if b"VANISHED" in x] and set(modseqs(narrow)) == {uids[0]}, narrow
    stale = raw_command(m, f"EXAMINE INBOX (QRESYNC ({uidvalidity + 1} {high}))")
    assert not [x for x in stale if b"VANISHED" in x or b" FETCH (" in x], stale

    raw_command(m, "SELECT INBOX")
    gone = raw_command(m, f"UID FETCH 1:* (FLAGS) (CHANGEDSINCE {high} VANISHED)")
    assert gone[0] == f"* VANISHED (EARLIER) {uids[2]}".encode(), gone
    # with QRESYNC on, an expunge is told as VANISHED with UIDs, not EXPUNGE with numbers
    raw_command(m, f"UID STORE {uids[1]},{uids[3]} +FLAGS.SILENT (\\Deleted)")
    out = raw_command(m, f"UID EXPUNGE {uids[1]}")
    assert out[0] == f"* VANISHED {uids[1]}".encode() and not [
        x for x in out if x.startswith(b"* ") and x.endswith(b"EXPUNGE")
    ], out
    out = raw_command(m, "EXPUNGE")
    assert out[0] == f"* VANISHED {uids[3]}".encode(), out
    # the tagged OK says the mailbox's HIGHESTMODSEQ, which a later SELECT confirms
    told = code(out, "HIGHESTMODSEQ")
    assert told > high and code(raw_command(m, "EXAMINE INBOX"), "HIGHESTMODSEQ") == told


def test_vanished_modifier_needs_qresync(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    deliver(srv, user, 1)
    raw_command(m, "SELECT INBOX")
    out = raw_command(m, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
    assert re.search(rb"BAD .*ENABLE QRESYNC", out[-1]), out
    # without CONDSTORE on, EXPUNGE stays EXPUNGE and a plain FETCH carries no MODSEQ
    assert b"MODSEQ" not in raw_command(m, "FETCH 1 (FLAGS)")[0]


def test_parse_condstore_syntax() -> None:
    (sel,) = parse(b"a SELECT INBOX (QRESYNC (67890007 20050715194045000 41,43:211,214:541 (1:3 4:7)))\r\n")
    assert isinstance(sel, c.Select) and sel.qresync is not None
    assert sel.qresync.modseq == 20050715194045000 and sel.qresync.seq_match is not None
    (f,) = parse(b"b UID FETCH 300:500 (FLAGS) (CHANGEDSINCE 12345 VANISHED)\r\n")
    assert isinstance(f, c.Fetch) and f.changed_since == 12345 and f.vanished and c.FetchAttr("MODSEQ") in f.items
    (s,) = parse(b"c STORE 1:* (UNCHANGEDSINCE 5) +FLAGS.SILENT (\\Seen)\r\n")
    assert isinstance(s, c.Store) and s.unchanged_since == 5 and s.silent
    for cmd in (sel, f, s):
        assert parse(c.to_wire(cmd)) == [cmd]
    with pytest.raises(ImapParseError):
        parse(b"d FETCH 1 (FLAGS) (CHANGEDSINCE 1 VANISHED)\r\n")  # VANISHED only with UID FETCH
