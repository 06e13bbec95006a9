"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4) through real sockets and TLS with imaplib, on both databases.

PARTIAL answers a slice of a SEARCH or SORT result; UPDATE keeps a search up to date with unsolicited
``ESEARCH ... ADDTO / REMOVEFROM`` as other sessions append and expunge (after a command, in IDLE);
CANCELUPDATE stops that; past ``context.UPDATE_LIMIT`` a search is answered ``NO [NOUPDATE]``.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator

import pytest

from mailserver.imap import context
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.parser import ImapParseError, parse
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, imaps, raw_command


def mail(sender: str, size: int = 10) -> bytes:
    return f"From: {sender}\r\nTo: c@d.test\r\nSubject: s\r\n\r\n{'x' * size}\r\n".encode()


@pytest.fixture
def other(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> Iterator[imaplib.IMAP4_SSL]:
    """A second session of the same account, which appends and expunges while ``m`` watches."""
    client = imaps(srv, tls_client, user)
    client.select("INBOX")
    yield client
    try:
        client.logout()
    except (imaplib.IMAP4.error, OSError):
        pass


def tagged(lines: list[bytes]) -> tuple[bytes, bytes]:
    """(tag, status line) of a raw command's answer."""
    return lines[-1].split()[0], lines[-1]


def esearch_of(lines: list[bytes], tag: bytes) -> list[bytes]:
    """What follows ``* ESEARCH (TAG "tag")`` in each untagged ESEARCH of ``lines`` for that tag."""
    prefix = b'* ESEARCH (TAG "' + tag + b'")'
    return [x[len(prefix) :].strip() for x in lines if x.startswith(prefix)]


def uids_of(m: imaplib.IMAP4_SSL) -> list[int]:
    return [int(x) for x in m.uid("SEARCH", "ALL")[1][0].split()]


def append(other: imaplib.IMAP4_SSL, sender: str, size: int = 10) -> int:
    typ, data = other.append("INBOX", None, None, mail(sender, size))
    assert typ == "OK", data
    return int(data[0].split(b"APPENDUID ")[1].split(b" ")[1].rstrip(b"]"))


def expunge(other: imaplib.IMAP4_SSL, uid: int) -> None:
    assert other.uid("STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
    assert other.expunge()[0] == "OK"


def test_capabilities(m: imaplib.IMAP4_SSL) -> None:
    listed = raw_command(m, "CAPABILITY")[0].split()
    assert b"CONTEXT=SEARCH" in listed and b"CONTEXT=SORT" in listed


def test_partial_search(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    for _ in range(5):
        srv.deliver(user, mail("a@b.test"))
    m.select("INBOX")
    u = uids_of(m)
    lines = raw_command(m, "UID SEARCH RETURN (PARTIAL 2:3) ALL")
    tag, _ = tagged(lines)
    assert esearch_of(lines, tag) == [f"UID PARTIAL (2:3 {u[1]}:{u[2]})".encode()]
    lines = raw_command(m, "SEARCH RETURN (COUNT PARTIAL 4:10) ALL")
    assert esearch_of(lines, tagged(lines)[0]) == [b"COUNT 5 PARTIAL (4:10 4:5)"]
    # high:low is read as low:high (RFC 9394 §3.1); beyond the result: NIL
    lines = raw_command(m, "SEARCH RETURN (PARTIAL 3:1) ALL")
    assert esearch_of(lines, tagged(lines)[0]) == [b"PARTIAL (1:3 1:3)"]
    lines = raw_command(m, "SEARCH RETURN (PARTIAL 7:9 CONTEXT) ALL")
    assert esearch_of(lines, tagged(lines)[0]) == [b"PARTIAL (7:9 NIL)"]


def test_partial_sort(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    for size in (40, 10, 30, 20):
        srv.deliver(user, mail("a@b.test", size))
    m.select("INBOX")
    # by size the order is 2 4 3 1
    lines = raw_command(m, "SORT RETURN (PARTIAL 2:3) (SIZE) UTF-8 ALL")
    tag, status = tagged(lines)
    assert status.endswith(b"OK SORT completed") and esearch_of(lines, tag) == [b"PARTIAL (2:3 4,3)"]
    lines = raw_command(m, "SORT RETURN (MIN PARTIAL 3:8) (SIZE) UTF-8 ALL")
    assert esearch_of(lines, tagged(lines)[0]) == [b"MIN 2 PARTIAL (3:8 3,1)"]


@pytest.mark.parametrize(
    ("command", "text"),
    [
        ("SEARCH RETURN (PARTIAL 0:5) ALL", b"positions in a result run from 1"),
        ("SEARCH RETURN (PARTIAL 1-5) ALL", b"PARTIAL takes a range of result positions low:high"),
        ("SEARCH RETURN (PARTIAL) ALL", b"Expected a space"),
        ("SEARCH RETURN (PARTIAL 1:5 ALL) ALL", b"cannot ask for both PARTIAL and ALL"),
        ("SORT RETURN (PARTIAL 1:2 PARTIAL 3:4) (SIZE) UTF-8 ALL", b"PARTIAL once at most"),
    ],
)
def test_bad_partial(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account, command: str, text: bytes) -> None:
    srv.deliver(user, mail("a@b.test"))
    m.select("INBOX")
    status = raw_command(m, command)[-1]
    assert b" BAD " in status and text in status, status


def test_update_search(srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account) -> None:
    for sender in ("alice@b.test", "bob@b.test", "alice@b.test"):
        srv.deliver(user, mail(sender))
    m.select("INBOX")
    u = uids_of(m)
    lines = raw_command(m, 'UID SEARCH RETURN (UPDATE) FROM "alice"')
    tag, status = tagged(lines)
    assert b"OK" in status and esearch_of(lines, tag) == [f"UID ALL {u[0]},{u[2]}".encode()]
    # another session appends: one from alice is added, one from bob is not
    new = append(other, "alice@b.test")
    append(other, "bob@b.test")
    lines = raw_command(m, "NOOP")
    assert b"* 5 EXISTS" in lines and esearch_of(lines, tag) == [f"UID ADDTO (0 {new})".encode()]
    assert esearch_of(raw_command(m, "NOOP"), tag) == []  # said once
    # another session expunges the first message from alice
    expunge(other, u[0])
    lines = raw_command(m, "NOOP")
    assert b"* 1 EXPUNGE" in lines and esearch_of(lines, tag) == [f"UID REMOVEFROM (0 {u[0]})".encode()]
    # CANCELUPDATE: no more news of that search; a tag no longer kept is BAD
    assert raw_command(m, f'CANCELUPDATE "{tag.decode()}"')[-1].endswith(b"OK CANCELUPDATE completed")
    append(other, "alice@b.test")
    lines = raw_command(m, "NOOP")
    assert b"* 5 EXISTS" in lines and esearch_of(lines, tag) == []
    refused = raw_command(m, f'CANCELUPDATE "{tag.decode()}"')[-1]
    assert b" BAD " in refused and b"is kept up to date" in refused


def test_update_on_own_store_and_count(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    for _ in range(3):
        srv.deliver(user, mail("a@b.test"))
    m.select("INBOX")
    u = uids_of(m)
    lines = raw_command(m, "UID SEARCH RETURN (UPDATE COUNT ALL) FLAGGED")
    tag, _ = tagged(lines)
    assert esearch_of(lines, tag) == [b"UID COUNT 0"]
    lines = raw_command(m, f"UID STORE {u[1]} +FLAGS (\\Flagged)")
    assert esearch_of(lines, tag) == [f"UID ADDTO (0 {u[1]}) COUNT 1".encode()]
    lines = raw_command(m, f"UID STORE {u[1]} -FLAGS.SILENT (\\Flagged)")
    assert esearch_of(lines, tag) == [f"UID REMOVEFROM (0 {u[1]}) COUNT 0".encode()]


def test_update_sort(srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account) -> None:
    for size in (40, 10, 30):
        srv.deliver(user, mail("a@b.test", size))
    m.select("INBOX")
    u = uids_of(m)
    lines = raw_command(m, "UID SORT RETURN (UPDATE) (REVERSE SIZE) UTF-8 ALL")
    tag, _ = tagged(lines)
    assert esearch_of(lines, tag) == [f"UID ALL {u[0]},{u[2]},{u[1]}".encode()]
    # a message of size 20 comes third in the order: 40 30 20 10
    new = append(other, "a@b.test", 20)
    lines = raw_command(m, "NOOP")
    assert esearch_of(lines, tag) == [f"UID ADDTO (3 {new})".encode()]
    # the largest goes: removed from the first place
    expunge(other, u[0])
    lines = raw_command(m, "NOOP")
    assert esearch_of(lines, tag) == [f"UID REMOVEFROM (1 {u[0]})".encode()]


def test_update_in_idle(srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, mail("a@b.test"))
    m.select("INBOX")
    lines = raw_command(m, "UID SEARCH RETURN (UPDATE) ALL")
    tag, _ = tagged(lines)
    idle_tag = m._new_tag()  # type: ignore[attr-defined]
    m.send(idle_tag + b" IDLE\r\n")
    assert m.readline().startswith(b"+")
    new = append(other, "a@b.test")
    seen: list[bytes] = []
    while not esearch_of(seen, tag):
        line = m.readline()
        assert line, seen
        seen.append(line.rstrip(b"\r\n"))
    assert esearch_of(seen, tag) == [f"UID ADDTO (0 {new})".encode()]
    m.send(b"DONE\r\n")
    while not (line := m.readline()).startswith(idle_tag + b" "):
        assert line
    assert line.startswith(idle_tag + b" OK")


def test_noupdate_past_the_limit(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, mail("a@b.test"))
    m.select("INBOX")
    for _ in range(context.UPDATE_LIMIT):
        lines = raw_command(m, "SEARCH RETURN (UPDATE) ALL")
        assert not any(b"NOUPDATE" in x for x in lines) and lines[-1].endswith(b"OK SEARCH completed")
    lines = raw_command(m, "SORT RETURN (UPDATE) (SIZE) UTF-8 ALL")
    tag, status = tagged(lines)
    assert status.endswith(b"OK SORT completed")
    assert esearch_of(lines, tag) == [b"ALL 1"]
    assert any(x.startswith(b'* NO [NOUPDATE "' + tag + b'"]') for x in lines), lines
    # another SELECT drops every kept search: room again
    m.select("INBOX")
    assert not any(b"NOUPDATE" in x for x in raw_command(m, "SEARCH RETURN (UPDATE) ALL"))


def test_parse_and_wire() -> None:
    (s,) = parse(b"a UID SEARCH RETURN (COUNT PARTIAL 5:9 UPDATE) ALL\r\n")
    assert isinstance(s, c.Search) and s.partial == (5, 9) and s.returns == ("COUNT", "PARTIAL", "UPDATE")
    assert parse(c.to_wire(s)) == [s]
    (t,) = parse(b"b SORT RETURN (PARTIAL 1:2) (SIZE) UTF-8 ALL\r\n")
    assert isinstance(t, c.Sort) and t.partial == (1, 2) and parse(c.to_wire(t)) == [t]
    (u,) = parse(b'c CANCELUPDATE "a" "x\\"y"\r\n')
    assert isinstance(u, c.CancelUpdate) and u.tags == ("a", 'x"y') and parse(c.to_wire(u)) == [u]
    for bad in (b"d CANCELUPDATE\r\n", b"d CANCELUPDATE a\r\n", b"d SEARCH RETURN (PARTIAL 1:2:3) ALL\r\n"):
        with pytest.raises(ImapParseError):
            parse(bad)
    with pytest.raises(ValueError, match="PARTIAL"):
        c.Search("e", returns=("PARTIAL",))
