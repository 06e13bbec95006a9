"""Every IMAP command through real sockets and TLS with Python's imaplib, on SQLite and PostgreSQL.

One server per database for the module; each test has accounts of its own.
Error paths are checked for their status (BAD for syntax, NO for semantics),
their response code and a text a person understands.
"""

from __future__ import annotations

import base64
import imaplib
import re
import ssl
import time
from email.message import EmailMessage

import pytest

from mailserver.store.models import Account
from tests import support
from tests.imap.conftest import HOST, TIMEOUT, ServerThread, imaps, message, raw_command


def multipart(sender: str, rcpt: str, subject: str = "Compte-rendu") -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = f"Dr House <{sender}>", rcpt, subject
    msg["Date"] = "Mon, 23 Nov 2026 09:30:00 +0100"
    msg["Message-ID"] = "<cr-1@hopital.test>"
    msg.set_content("Bonjour,\nvoici le compte-rendu.\n")
    msg.add_alternative("<p>Bonjour, voici le <b>compte-rendu</b>.</p>\n", subtype="html")
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="cr.pdf")
    return msg.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def untagged(lines: list[bytes], word: bytes) -> list[bytes]:
    return [x for x in lines if x.startswith(b"* ") and word in x]


# --- connection, TLS, authentication -----------------------------------------------------------------------


def test_imaps_greeting_capabilities_login_logout(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    c = imaps(srv, tls_client)
    for cap in ("IMAP4REV1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE", "UIDPLUS", "MOVE"):
        assert cap in c.capabilities
    assert {"UNSELECT", "SPECIAL-USE", "CHILDREN", "AUTH=PLAIN"} <= set(c.capabilities)
    assert "STARTTLS" not in c.capabilities and "LOGINDISABLED" not in c.capabilities
    typ, data = c.login(user.address, support.PASSWORD)
    assert typ == "OK" and b"[CAPABILITY IMAP4rev1" in data[0]
    assert c.noop()[0] == "OK"
    typ, data = c.logout()
    assert typ == "BYE"


def test_plain_port_refuses_login_until_starttls(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> None:
    c = imaplib.IMAP4(HOST, srv.port("imap"), timeout=TIMEOUT)
    assert {"STARTTLS", "LOGINDISABLED"} <= set(c.capabilities)
    assert "AUTH=PLAIN" not in c.capabilities
    lines = raw_command(c, f"LOGIN {user.address} secret")
    assert re.match(rb"\S+ NO \[PRIVACYREQUIRED\] Log in only over TLS", lines[-1]), lines
    lines = raw_command(c, "AUTHENTICATE PLAIN " + base64.b64encode(b"\0a\0b").decode())
    assert b" NO [PRIVACYREQUIRED]" in lines[-1]
    assert b"Log in first" in raw_command(c, "SELECT INBOX")[-1]
    c.starttls(ssl_context=tls_client)
    assert "AUTH=PLAIN" in c.capabilities and "LOGINDISABLED" not in c.capabilities
    # RFC 9051 §6.2.1 / RFC 3501 §6.2.1: STARTTLS once TLS is on is a protocol error; the session goes on in TLS
    again = raw_command(c, "STARTTLS")
    assert re.fullmatch(rb"\S+ BAD STARTTLS: TLS is already active", again[-1]), again
    assert c.login(user.address, support.PASSWORD)[0] == "OK"
    c.logout()


def test_starttls_twice_is_bad(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    c = imaplib.IMAP4(HOST, srv.port("imap"), timeout=TIMEOUT)
    c.starttls(ssl_context=tls_client)
    assert b"BAD STARTTLS: TLS is already active" in raw_command(c, "STARTTLS")[-1]
    c.logout()


def test_starttls_on_the_implicit_tls_port_is_bad(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    c = imaps(srv, tls_client)  # port 993: TLS from the first byte (RFC 8314 §3.2)
    assert "STARTTLS" not in c.capabilities
    assert re.fullmatch(rb"\S+ BAD STARTTLS: TLS is already active", raw_command(c, "STARTTLS")[-1])
    assert raw_command(c, "NOOP")[-1].endswith(b"OK NOOP completed")
    c.logout()


def test_authenticate_plain_with_and_without_initial_response(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    token = base64.b64encode(f"\0{user.address}\0{support.PASSWORD}".encode()).decode()
    c = imaps(srv, tls_client)
    assert raw_command(c, f"AUTHENTICATE PLAIN {token}")[-1].split(b" ", 2)[1] == b"OK"
    c.logout()
    c = imaps(srv, tls_client)  # without SASL-IR: the server asks with "+ "
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0{user.address}\0{support.PASSWORD}".encode())
    assert typ == "OK"
    c.logout()


def test_authentication_failures_say_so_and_are_audited(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account
) -> None:
    c = imaps(srv, tls_client)
    with pytest.raises(imaplib.IMAP4.error, match=r"AUTHENTICATIONFAILED.*Invalid user name or password"):
        c.login(user.address, "wrong password")
    other = base64.b64encode(f"someone@else\0{user.address}\0{support.PASSWORD}".encode()).decode()
    assert b"NO [AUTHORIZATIONFAILED]" in raw_command(c, f"AUTHENTICATE PLAIN {other}")[-1]
    assert b"BAD" in raw_command(c, "AUTHENTICATE PLAIN ####")[-1]
    assert b"NO [CANNOT] Unsupported mechanism" in raw_command(c, "AUTHENTICATE CRAM-MD5")[-1]
    c.logout()
    entries = [e for e in srv.audit("login") if e.object_id == user.owner_id]
    assert [e.outcome for e in entries] == ["fail"]
    assert "wrong password" not in (entries[0].detail or "")
    c = imaps(srv, tls_client, user)
    entries = [e for e in srv.audit("login") if e.object_id == user.owner_id]
    assert [e.outcome for e in entries] == ["fail", "ok"]
    c.logout()


def test_id_namespace_enable_capability(m: imaplib.IMAP4_SSL) -> None:
    assert raw_command(m, 'ID ("name" "pytest" "version" "1")')[0] == b'* ID ("name" "masante-mail" "version" "0.1.0")'
    assert raw_command(m, "ID NIL")[-1].endswith(b"OK ID completed")
    assert raw_command(m, "NAMESPACE")[0] == b'* NAMESPACE (("" "/")) NIL NIL'
    assert raw_command(m, "ENABLE X-UNKNOWN")[0] == b"* ENABLED"  # nothing enabled: only what is advertised
    assert raw_command(m, "ENABLE CONDSTORE X-UNKNOWN")[0] == b"* ENABLED CONDSTORE"
    assert raw_command(m, "ENABLE CONDSTORE")[0] == b"* ENABLED"  # already on
    caps = raw_command(m, "CAPABILITY")[0]
    assert caps.startswith(b"* CAPABILITY IMAP4rev1") and b"AUTH=PLAIN" not in caps


# --- mailboxes -----------------------------------------------------------------------------------------------


def test_list_shows_special_use_and_children(m: imaplib.IMAP4_SSL) -> None:
    typ, data = m.list()
    assert typ == "OK"
    assert data[0] == b'(\\HasNoChildren) "/" "INBOX"'
    assert b'(\\HasNoChildren \\Sent) "/" "Sent"' in data
    assert b'(\\HasNoChildren \\Trash) "/" "Trash"' in data
    assert m.create("Projets/2026")[0] == "OK"  # the parent is created too
    typ, data = m.list('""', "%")
    assert b'(\\HasChildren) "/" "Projets"' in data and not any(b"2026" in d for d in data)
    typ, data = m.list("Projets/", "*")
    assert data == [b'(\\HasNoChildren) "/" "Projets/2026"']
    lines = raw_command(m, 'LIST (SPECIAL-USE) "" "*"')
    assert sorted(x.split()[-1] for x in lines[:-1]) == [b'"Drafts"', b'"Junk"', b'"Sent"', b'"Trash"']
    lines = raw_command(m, 'LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED)')
    assert b'* LIST (\\HasNoChildren \\Drafts \\Subscribed) "/" "Drafts"' in lines
    assert raw_command(m, 'LIST "" ""')[0] == b'* LIST (\\Noselect) "/" ""'
    assert m.list('""', "inbox")[1] == [b'(\\HasNoChildren) "/" "INBOX"']  # INBOX is case-insensitive


def test_patients_have_vault_and_agenda(srv: ServerThread, tls_client: ssl.SSLContext) -> None:
    patient = srv.make_patient(support.PATIENT_INS)
    c = imaps(srv, tls_client, patient)
    names = [d.split(b'"/" ')[1].strip(b'"').decode() for d in c.list()[1]]
    assert {"INBOX", "Sent", "Drafts", "Trash", "Junk", "Documents", "Agenda"} <= set(names)
    assert {"Documents/Comptes-rendus", "Documents/Resultats", "Documents/Ordonnances"} <= set(names)
    assert b'(\\HasChildren) "/" "Documents"' in c.list()[1]
    typ, data = c.delete("Documents/Resultats")
    assert typ == "NO" and b"[CANNOT]" in data[0]
    assert c.rename("Agenda", "Calendrier")[0] == "NO"
    c.logout()


def test_create_delete_rename_subscribe(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    assert m.create("Dossiers")[0] == "OK"
    typ, data = m.create("Dossiers")
    assert typ == "NO" and data[0] == b"[ALREADYEXISTS] Mailbox 'Dossiers' already exists"
    assert m.create("Dossiers/Patients/")[0] == "OK"  # a trailing delimiter is dropped
    typ, data = m.delete("Dossiers")
    assert typ == "NO" and b"[HASCHILDREN]" in data[0]
    typ, data = m.delete("INBOX")
    assert typ == "NO" and b"[CANNOT] INBOX cannot be deleted" in data[0]
    typ, data = m.delete("Sent")
    assert typ == "NO" and b"special mailbox" in data[0]
    typ, data = m.delete("Nowhere")
    assert typ == "NO" and b"[NONEXISTENT]" in data[0]
    typ, data = m.create('"bad*name"')
    assert typ == "NO" and b"cannot hold" in data[0]
    assert m.rename("Dossiers", "Archives/Dossiers")[0] == "OK"
    names = {d.split(b'"/" ')[1].strip(b'"') for d in m.list()[1]}
    assert {b"Archives", b"Archives/Dossiers", b"Archives/Dossiers/Patients"} <= names
    assert b"Dossiers" not in names
    typ, data = m.rename("Archives", "Archives/Dossiers/Inside")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0] or b"CANNOT" in data[0]
    typ, data = m.rename("Archives", "Sent")
    assert typ == "NO" and b"[ALREADYEXISTS]" in data[0]
    assert m.delete("Archives/Dossiers/Patients")[0] == "OK"
    assert m.unsubscribe("Archives")[0] == "OK"
    typ, data = m.lsub('""', "Archives*")
    assert data == [b'() "/" "Archives/Dossiers"']
    assert m.subscribe("Nowhere")[0] == "NO"
    assert m.create("R&AOk-sultats")[0] == "OK"  # modified UTF-7 in, the same out
    assert b'"R&AOk-sultats"' in b" ".join(m.list()[1])
    boxes = {b.name for b in srv.call(lambda: _mailboxes(srv, user))}
    assert "Résultats" in boxes


async def _mailboxes(srv: ServerThread, user: Account) -> list:  # type: ignore[type-arg]
    async with srv.ctx.uow(readonly=True) as uow:
        return list(await uow.mailboxes.list(user.id))


def test_rename_inbox_moves_its_messages(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    for i in range(3):
        srv.deliver(user, message("a@b.test", user.address, f"old {i}", "x"))
    assert m.rename("INBOX", "Old-Inbox")[0] == "OK"
    assert m.select("INBOX")[1] == [b"0"]
    assert m.select("Old-Inbox")[1] == [b"3"]
    typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert [p[1].strip() for p in data if isinstance(p, tuple)] == [
        b"Subject: old 0",
        b"Subject: old 1",
        b"Subject: old 2",
    ]


def test_select_examine_and_status(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    srv.deliver(user, message("a@b.test", user.address, "one", "x"), flags=("\\Seen",))
    srv.deliver(user, message("a@b.test", user.address, "two", "y"))
    m.send(b"s1 SELECT INBOX\r\n")
    lines = []
    while not (line := m.readline()).startswith(b"s1 "):
        lines.append(line.strip())
    assert line.strip() == b"s1 OK [READ-WRITE] SELECT completed"
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in lines
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted" in lines
    assert b"* 2 EXISTS" in lines and b"* 2 RECENT" in lines
    assert b"* OK [UNSEEN 2] Message 2 is the first unseen" in lines
    assert any(x.startswith(b"* OK [UIDVALIDITY ") for x in lines)
    assert b"* OK [UIDNEXT 3] Predicted next UID" in lines
    # \Recent went to this session: a second one does not see them as recent
    lines = raw_command(m, "EXAMINE INBOX")
    assert b"* 0 RECENT" in lines and lines[-1].endswith(b"OK [READ-ONLY] EXAMINE completed")
    assert b"NO [READ-ONLY] The mailbox is selected read-only" in raw_command(m, "STORE 1 +FLAGS (\\Flagged)")[-1]
    typ, data = m.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE)")
    size = len(message("a@b.test", user.address, "one", "x")) + len(message("a@b.test", user.address, "two", "y"))
    assert re.fullmatch(
        rb'"INBOX" \(MESSAGES 2 RECENT 0 UIDNEXT 3 UIDVALIDITY \d+ UNSEEN 1 SIZE %d\)' % size, data[0]
    ), data
    typ, data = m.select("Nowhere")
    assert typ == "NO" and b"[NONEXISTENT] Mailbox 'Nowhere' does not exist" in data[0]
    assert m.state == "AUTH"  # a failed SELECT leaves no mailbox selected


def test_another_accounts_mailbox_cannot_be_reached(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    other = srv.make_pro("other")
    srv.deliver(other, message("a@b.test", other.address, "private", "secret text"))
    for name in (f"user/{other.address}/INBOX", f"{other.address}/INBOX", "../INBOX"):
        typ, data = m.select(f'"{name}"')
        assert typ == "NO" and b"[NONEXISTENT]" in data[0]
        assert m.status(f'"{name}"', "(MESSAGES)")[0] == "NO"
        assert m.append(f'"{name}"', None, None, b"Subject: x\r\n\r\nx\r\n")[0] == "NO"
    m.select("INBOX")
    assert m.search(None, "ALL")[1] == [b""]
    typ, data = m.uid("FETCH", "1:*", "(BODY[])")
    assert typ == "OK" and data == [None]


# --- messages ------------------------------------------------------------------------------------------------


def test_append_with_flags_date_literal_plus_and_uidplus(m: imaplib.IMAP4_SSL, user: Account) -> None:
    date = imaplib.Time2Internaldate(time.mktime((2026, 1, 5, 14, 3, 7, 0, 0, -1)))
    typ, data = m.append(
        "Drafts", "(\\Draft \\Seen $Todo)", date, message(user.address, user.address, "brouillon", "x")
    )
    assert typ == "OK"
    match = re.match(rb"\[APPENDUID (\d+) 1\] APPEND completed", data[0])
    assert match
    m.select("Drafts")
    typ, data = m.fetch("1", "(FLAGS INTERNALDATE)")
    assert b"FLAGS (\\Draft \\Recent \\Seen $Todo)" in data[0] and b"05-Jan-2026" in data[0]
    body = b"Subject: plus\r\n\r\nsent as LITERAL+\r\n"
    lines = raw_command(m, b"APPEND Drafts {%d+}\r\n" % len(body) + body)
    assert re.match(rb"\S+ OK \[APPENDUID \d+ 2\]", lines[-1]), lines
    assert b"* 2 EXISTS" in lines  # the selected mailbox grew: said before the tagged OK
    typ, data = m.append("Nowhere", None, None, b"Subject: x\r\n\r\nx\r\n")
    assert typ == "NO" and b"[TRYCREATE]" in data[0]
    with pytest.raises(imaplib.IMAP4.error, match=r"BAD.*\\\\Recent cannot be set by a client"):
        m.append("Drafts", "(\\Recent)", None, b"Subject: x\r\n\r\nx\r\n")


def test_fetch_items_sections_and_seen(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    raw = multipart("house@hopital.test", user.address)
    srv.deliver(user, raw)
    m.select("INBOX")
    typ, data = m.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    assert typ == "OK"
    line = data[0]
    assert b"UID 1 " in line and b"FLAGS (\\Recent)" in line and b"RFC822.SIZE %d" % len(raw) in line
    assert (
        b'ENVELOPE ("Mon, 23 Nov 2026 09:30:00 +0100" "Compte-rendu" (("Dr House" NIL "house" "hopital.test"))' in line
    )
    assert b'"<cr-1@hopital.test>")' in line
    typ, data = m.fetch("1", "(BODYSTRUCTURE)")
    bs = data[0]
    assert b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit"' in bs
    assert b'"alternative"' in bs and b'"mixed"' in bs
    assert b'"application" "pdf" NIL NIL NIL "base64"' in bs and b'("attachment" ("filename" "cr.pdf"))' in bs
    typ, data = m.fetch("1", "(BODY)")
    assert b"BODY ((" in data[0] and b"attachment" not in data[0]  # BODY has no extension data

    def part(spec: str) -> bytes:
        typ, data = m.fetch("1", f"({spec})")
        assert typ == "OK", data
        return b"".join(p[1] for p in data if isinstance(p, tuple))

    assert part("BODY.PEEK[1.1]").startswith(b"Bonjour,\r\nvoici le compte-rendu.")
    assert b"<b>compte-rendu</b>" in part("BODY.PEEK[1.2]")
    assert part("BODY.PEEK[1.2.MIME]").startswith(b"Content-Type: text/html")
    assert base64.b64decode(part("BODY.PEEK[2]")) == b"%PDF-1.4 fake"
    assert part("BODY.PEEK[HEADER.FIELDS (Subject From)]") == (
        b"From: Dr House <house@hopital.test>\r\nSubject: Compte-rendu\r\n\r\n"
    )
    not_fields = part("BODY.PEEK[HEADER.FIELDS.NOT (Subject)]")
    assert b"Subject:" not in not_fields and b"Message-ID: <cr-1@hopital.test>" in not_fields
    header, text = raw.split(b"\r\n\r\n", 1)
    assert part("BODY.PEEK[HEADER]") == header + b"\r\n\r\n"
    assert part("BODY.PEEK[TEXT]") == text
    assert part("BODY.PEEK[]<0.10>") == raw[:10]
    typ, data = m.fetch("1", "(BODY.PEEK[]<5.20>)")
    assert data[0][0].endswith(b"BODY[]<5> {20}")
    assert part("BODY.PEEK[]<100000.5>") == b""
    assert part("BODY.PEEK[9]") == b""  # no such part: empty, not an error
    assert part("RFC822.HEADER") == header + b"\r\n\r\n"
    assert m.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]  # PEEK and RFC822.HEADER leave \Seen alone
    typ, data = m.fetch("1", "(BODY[TEXT])")
    assert data[-1] == b" FLAGS (\\Recent \\Seen))"  # the implied \Seen change is reported
    assert part("RFC822") == raw
    entries = [e for e in srv.audit("imap.fetch") if e.actor == user.address]
    assert entries and all(e.detail == "uids 1" for e in entries)
    assert all(b"Compte-rendu" not in (e.detail or "").encode() for e in entries)


def test_fetch_errors(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    m.select("INBOX")
    # RFC 9051: 1:* matches nothing in an empty mailbox (issue 11); "*" alone names no message there
    assert raw_command(m, "FETCH 1:* (FLAGS)")[-1].endswith(b"OK FETCH completed")
    assert raw_command(m, "FETCH * (FLAGS)")[-1].endswith(b"BAD FETCH: The mailbox is empty: there is no message for *")
    assert raw_command(m, "UID FETCH 1:* (FLAGS)")[-1].endswith(b"OK FETCH completed")  # UIDs may match nothing
    srv.deliver(user, message("a@b.test", user.address, "x", "y"))
    lines = raw_command(m, "FETCH 5 (FLAGS)")
    assert b"* 1 EXISTS" in lines[0]
    assert b"BAD FETCH: No message with sequence number 5 (the mailbox has 0)" in lines[-1]
    assert raw_command(m, "FETCH 1 (FLAGS)")[0] == b"* 1 FETCH (FLAGS (\\Recent))"  # now it knows of one
    assert b"BAD Unknown fetch attribute BOGUS" in raw_command(m, "FETCH 1 (BOGUS)")[-1]


def test_store_flags_and_keywords(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    for i in range(3):
        srv.deliver(user, message("a@b.test", user.address, f"s{i}", "x"))
    m.select("INBOX")
    typ, data = m.store("1:2", "+FLAGS", "(\\Flagged $Urgent)")
    assert data == [b"1 (FLAGS (\\Flagged \\Recent $Urgent))", b"2 (FLAGS (\\Flagged \\Recent $Urgent))"]
    typ, data = m.store("2", "-FLAGS", "($Urgent)")
    assert data == [b"2 (FLAGS (\\Flagged \\Recent))"]
    typ, data = m.store("3", "FLAGS", "(\\Answered \\Seen)")
    assert data == [b"3 (FLAGS (\\Answered \\Recent \\Seen))"]
    typ, data = m.store("1:*", "+FLAGS.SILENT", "(\\Draft)")
    assert typ == "OK" and data == [None]
    typ, data = m.uid("STORE", "2", "-FLAGS", "(\\Draft)")
    assert data == [b"2 (UID 2 FLAGS (\\Flagged \\Recent))"]
    typ, data = m.fetch("1:3", "(FLAGS)")
    assert data[0] == b"1 (FLAGS (\\Draft \\Flagged \\Recent $Urgent))"
    lines = raw_command(m, "FLAGS")
    assert b"BAD" in lines[-1]
    assert b"BAD" in raw_command(m, "STORE 1 +FLAGS (\\Recent)")[-1]
    assert b"BAD" in raw_command(m, "STORE 1 FLAGZ (\\Seen)")[-1]
    lines = raw_command(m, "SELECT INBOX")
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Urgent)" in lines


def test_search_keys(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    srv.deliver(user, message("Alice <alice@lab.test>", user.address, "Résultats sanguins", "Hémoglobine normale\n"))
    srv.deliver(
        user,
        message("bob@lab.test", user.address, "=?utf-8?q?Ordonnance_renouvel=C3=A9e?=", "x\n", Cc="carol@lab.test"),
        flags=("\\Seen", "\\Answered"),
    )
    srv.deliver(user, multipart("house@hopital.test", user.address, "Compte-rendu"), flags=("\\Flagged", "$Lab"))
    m.select("INBOX")

    def s(*criteria: str, uid: bool = False) -> list[int]:
        if not criteria[-1].isascii():  # imaplib sends 8-bit text only as a literal, the last argument
            m.literal = criteria[-1].strip('"').encode()  # type: ignore[attr-defined]
            criteria = criteria[:-1]
        if uid:
            typ, data = m.uid("SEARCH", *criteria)
        else:
            typ, data = m.search("UTF-8", *criteria)
        assert typ == "OK", data
        return [int(x) for x in data[0].split()]

    assert s("ALL") == [1, 2, 3]
    assert s("FROM", "alice") == [1]
    assert s("FROM", '"ALICE@LAB"') == [1]
    assert s("SUBJECT", '"renouvelée"') == [2]  # encoded words are decoded before matching
    assert s("SUBJECT", '"résultats"') == [1]  # and the match ignores case
    assert s("CC", "carol") == [2]
    assert s("TO", user.address.split("@")[0]) == [1, 2, 3]
    assert s("BCC", "x") == []
    assert s("BODY", '"hémoglobine"') == [1]
    assert s("BODY", "compte-rendu") == [3]  # decoded text parts of a multipart
    assert s("TEXT", "alice") == [1]  # TEXT covers the header too
    assert s("HEADER", "Message-ID", "cr-1") == [3]
    assert s("SEEN") == [2] and s("UNSEEN") == [1, 3]
    assert s("ANSWERED") == [2] and s("UNANSWERED") == [1, 3]
    assert s("FLAGGED") == [3] and s("UNFLAGGED") == [1, 2]
    assert s("DELETED") == [] and s("UNDELETED") == [1, 2, 3]
    assert s("DRAFT") == [] and s("UNDRAFT") == [1, 2, 3]
    assert s("KEYWORD", "$Lab") == [3] and s("UNKEYWORD", "$Lab") == [1, 2]
    assert s("RECENT") == [1, 2, 3] and s("NEW") == [1, 3] and s("OLD") == []
    assert s("LARGER", "1000") == [3] and s("SMALLER", "1000") == [1, 2]
    today = time.strftime("%d-%b-%Y", time.gmtime())
    assert s("ON", today) == [1, 2, 3] and s("BEFORE", today) == [] and s("SINCE", today) == [1, 2, 3]
    assert s("SENTON", "23-Nov-2026") == [1, 2, 3] and s("SENTBEFORE", "1-Jan-2026") == []
    assert s("SENTSINCE", "24-Nov-2026") == []
    assert s("2:3") == [2, 3] and s("*") == [3]
    assert s("UID", "1,3") == [1, 3]
    assert s("NOT", "SEEN", "NOT", "FLAGGED") == [1]
    assert s("OR", "SEEN", "FLAGGED") == [2, 3]
    assert s("(OR SEEN FLAGGED) FROM bob") == [2]
    assert s("FLAGGED", uid=True) == [3]
    typ, data = m.search("ISO-8859-1", "ALL")
    assert typ == "NO" and b"[BADCHARSET (UTF-8 US-ASCII)]" in data[0]
    assert b"BAD Unknown search key FOO" in raw_command(m, "SEARCH FOO")[-1]


def test_copy_move_and_uidplus(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    for i in range(4):
        srv.deliver(user, message("a@b.test", user.address, f"c{i}", "x"))
    m.select("INBOX")
    m.store("1", "+FLAGS", "(\\Flagged)")
    lines = raw_command(m, "COPY 1:2 Trash")
    assert re.match(rb"\S+ OK \[COPYUID \d+ 1:2 1:2\] COPY completed", lines[-1]), lines
    lines = raw_command(m, "UID MOVE 3:4 Trash")
    assert re.match(rb"\* OK \[COPYUID \d+ 3:4 3:4\]", lines[0]), lines
    assert lines[1:3] == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"]
    assert lines[-1].endswith(b"OK MOVE completed")
    lines = raw_command(m, "MOVE 1 Nowhere")
    assert b"NO [TRYCREATE]" in lines[-1]
    assert m.select("Trash")[1] == [b"4"]
    typ, data = m.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert b"\\Flagged" in data[0][0] and data[0][1].strip() == b"Subject: c0"
    blobs = srv.call(lambda: _blob_count(srv, user))
    assert blobs == 4  # copies share their blobs
    m.store("1:*", "+FLAGS", "(\\Deleted)")
    m.expunge()
    m.select("INBOX")
    m.store("1:*", "+FLAGS", "(\\Deleted)")
    m.expunge()
    assert srv.call(lambda: _blob_count(srv, user)) == 0  # the last reference gone, the blob goes


async def _blob_count(srv: ServerThread, user: Account) -> int:
    from sqlalchemy import func, select

    from mailserver.store.models import Blob

    async with srv.ctx.uow(readonly=True) as uow:
        return int((await uow.session.execute(select(func.count()).where(Blob.account_id == user.id))).scalar_one())


def test_expunge_uid_expunge_close_unselect(m: imaplib.IMAP4_SSL, srv: ServerThread, user: Account) -> None:
    for i in range(6):
        srv.deliver(user, message("a@b.test", user.address, f"e{i}", "x"))
    m.select("INBOX")
    m.store("2,4", "+FLAGS", "(\\Deleted)")
    typ, data = m.expunge()
    assert data == [b"4", b"2"]
    m.store("1:4", "+FLAGS", "(\\Deleted)")  # UIDs 1 3 5 6
    lines = raw_command(m, "UID EXPUNGE 5:6")
    assert lines[:-1] == [b"* 4 EXPUNGE", b"* 3 EXPUNGE"]
    assert m.unselect()[0] == "OK" if hasattr(m, "unselect") else raw_command(m, "UNSELECT")[-1].endswith(b"OK")
    assert m.select("INBOX")[1] == [b"2"]
    assert m.close()[0] == "OK"  # CLOSE expunges silently
    assert m.select("INBOX", readonly=True)[1] == [b"0"]
    assert b"NO [READ-ONLY]" in raw_command(m, "EXPUNGE")[-1]
    assert m.check()[0] == "OK"


def test_state_errors_are_bad_with_a_reason(m: imaplib.IMAP4_SSL) -> None:
    assert raw_command(m, "FETCH 1 FLAGS")[-1].endswith(b"BAD FETCH: Must select a mailbox first")
    assert raw_command(m, "UID STORE 1 +FLAGS \\Seen")[-1].endswith(b"BAD UID STORE: Must select a mailbox first")
    assert raw_command(m, "LOGIN a b")[-1].endswith(b"BAD LOGIN: Already authenticated")
    assert raw_command(m, "FROB")[-1].endswith(b"BAD Unknown command FROB")
    assert raw_command(m, 'SELECT "unterminated')[-1].endswith(b"BAD Unterminated quoted string")
