"""Issue 11's protocol bugs of the IMAP session, through real sockets and TLS with imaplib, on both databases.

- A keyword no session has seen is announced in FLAGS and PERMANENTFLAGS before
  any FETCH carries it, in the session that set it and in the others (RFC 3501 §7.2.6).
- The BAD counter counts bad commands in a row: a good command resets it.
- ``1:*`` on an empty mailbox matches nothing: FETCH, STORE, COPY, MOVE and SEARCH answer OK.
- A mailbox name that is not modified UTF-7 is no mailbox: NO, not BAD.
- CREATE and RENAME refuse ``../x``, ``~``, ``#user/...`` with NO [CANNOT].
- LSUB with ``%`` lists an unsubscribed superior of a subscribed name as ``\\Noselect``.
"""

from __future__ import annotations

import socket
import ssl

from mailserver.store.models import Account
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, imaps, message, raw_command


def index_of(lines: list[bytes], start: bytes, holding: bytes = b"") -> int:
    found = [i for i, x in enumerate(lines) if x.startswith(start) and holding in x]
    assert found, (start, holding, lines)
    return found[0]


def test_a_new_keyword_is_announced_before_any_fetch_carries_it(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    for i in range(2):
        srv.deliver(user, message("a@b.test", user.address, f"m{i}", "x"))
    a, b, ro = imaps(srv, tls_client, user), imaps(srv, tls_client, user), imaps(srv, tls_client, user)
    a.select("INBOX")
    b.select("INBOX")
    ro.select("INBOX", readonly=True)

    lines = raw_command(a, "STORE 1 +FLAGS ($Triage)")
    fetch = index_of(lines, b"* 1 FETCH", b"$Triage")
    assert index_of(lines, b"* FLAGS (", b"$Triage") < fetch
    assert index_of(lines, b"* OK [PERMANENTFLAGS (", b"$Triage \\*)") < fetch
    assert lines[-1].endswith(b"OK STORE completed")
    assert not any(x.startswith(b"* FLAGS") for x in raw_command(a, "FETCH 1:* (FLAGS)"))  # said once

    for other in (b, ro):  # the other sessions learn it from the news before a tagged response
        lines = raw_command(other, "NOOP")
        fetch = index_of(lines, b"* 1 FETCH", b"$Triage")
        assert index_of(lines, b"* FLAGS (", b"$Triage") < fetch
        assert index_of(lines, b"* OK [PERMANENTFLAGS (") < fetch
    assert b"$Triage" in raw_command(b, "FETCH 1 (FLAGS)")[0]

    # a silent STORE says nothing; the FETCH that shows the keyword later announces it first
    raw_command(a, "STORE 2 +FLAGS.SILENT (urgent)")
    lines = raw_command(a, "FETCH 2 (FLAGS)")
    assert index_of(lines, b"* FLAGS (", b"urgent") < index_of(lines, b"* 2 FETCH", b"urgent")
    for m in (a, b, ro):
        m.logout()


def test_the_bad_counter_counts_bad_commands_in_a_row(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    listeners = srv.listeners()
    saved = [lst.cfg.bad_command_limit for lst in listeners]
    for lst in listeners:
        lst.cfg.bad_command_limit = 3
    try:
        sock = socket.create_connection((HOST, srv.port("imaps")), timeout=TIMEOUT)
        with tls_client.wrap_socket(sock, server_hostname="localhost") as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"* OK")
            s.sendall(b"a1 FROB\r\na2 NOOP x\r\na3 NOOP\r\na4 FROB\r\na5 FETCH 1 FLAGS\r\na6 NOOP\r\na7 LOGOUT\r\n")
            out = b""
            while line := f.readline():
                out += line
        assert out.count(b" BAD ") == 4
        assert b"a6 OK NOOP completed" in out and b"a7 OK LOGOUT completed" in out
        assert b"Too many invalid commands" not in out
    finally:
        for lst, limit in zip(listeners, saved, strict=True):
            lst.cfg.bad_command_limit = limit


def test_one_to_star_on_an_empty_mailbox_matches_nothing(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    m = imaps(srv, tls_client, user)
    m.create("Empty")
    m.create("Elsewhere")
    m.select("Empty")
    for command, done in [
        ("FETCH 1:* (FLAGS)", b"OK FETCH completed"),
        ("STORE 1:* +FLAGS (\\Seen)", b"OK STORE completed"),
        ("COPY 1:* Elsewhere", b"OK COPY completed"),
        ("MOVE 1:* Elsewhere", b"OK MOVE completed"),
        ("UID FETCH 1:* (FLAGS)", b"OK FETCH completed"),
        ("UID COPY 1:* Elsewhere", b"OK COPY completed"),
    ]:
        lines = raw_command(m, command)
        assert lines == [lines[-1]] and lines[-1].endswith(done), (command, lines)
    assert raw_command(m, "SEARCH 1:*")[0] == b"* SEARCH"
    assert raw_command(m, "SEARCH 1:*")[-1].endswith(b"OK SEARCH completed")
    assert raw_command(m, "FETCH 1 (FLAGS)")[-1].endswith(
        b"BAD FETCH: No message with sequence number 1 (the mailbox has 0)"
    )
    m.select("Elsewhere")
    assert m.select("Elsewhere")[1] == [b"0"]  # nothing was copied
    m.logout()


def test_a_name_that_is_not_modified_utf7_is_no_mailbox(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    m = imaps(srv, tls_client, user)
    assert raw_command(m, "SELECT &Jjo")[-1].endswith(b"NO [NONEXISTENT] Mailbox name is not valid modified UTF-7")
    assert b" NO [NONEXISTENT] " in raw_command(m, "EXAMINE &AOk")[-1]
    assert b" NO [NONEXISTENT] " in raw_command(m, "STATUS &Jjo (MESSAGES)")[-1]
    assert b" NO [CANNOT] " in raw_command(m, "CREATE &Jjo")[-1]
    # a failed SELECT leaves no mailbox selected
    m.select("INBOX")
    assert b" NO [NONEXISTENT] " in raw_command(m, "SELECT &Jjo")[-1]
    assert raw_command(m, "FETCH 1 (FLAGS)")[-1].endswith(b"BAD FETCH: Must select a mailbox first")
    m.logout()


def test_names_outside_the_personal_hierarchy_cannot_be_created(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    m = imaps(srv, tls_client, user)
    for name in ("../x", "~", "~/mail", "#user/bob", "a/../b", "./here"):
        lines = raw_command(m, f'CREATE "{name}"')
        assert b" NO [CANNOT] " in lines[-1], (name, lines)
    m.create("Projets")
    assert b" NO [CANNOT] " in raw_command(m, 'RENAME Projets "../Projets"')[-1]
    listed = b"".join(raw_command(m, 'LIST "" *'))
    for bad in (b"..", b"~", b"#user", b"./here"):
        assert bad not in listed
    assert b'"Projets"' in listed or b" Projets" in listed
    m.logout()


def test_lsub_with_percent_lists_unsubscribed_superiors_as_noselect(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    m = imaps(srv, tls_client, user)
    m.create("a/b/c")  # a and a/b are created on the way
    m.create("lonely")
    for name in ("a", "a/b", "lonely"):
        assert m.unsubscribe(name)[0] == "OK"
    assert raw_command(m, 'LSUB "" "a/%"')[:-1] == [b'* LSUB (\\Noselect) "/" "a/b"']
    top = raw_command(m, 'LSUB "" %')[:-1]
    assert b'* LSUB (\\Noselect) "/" "a"' in top
    assert not any(b"a/b" in x or b"lonely" in x for x in top)
    assert raw_command(m, 'LSUB "" "a/*"')[:-1] == [b'* LSUB () "/" "a/b/c"']
    assert raw_command(m, 'LSUB "" lonely')[:-1] == []
    assert raw_command(m, 'LSUB "" "zz%"')[:-1] == []
    m.logout()
