"""RFC 5465 NOTIFY through real sockets: two sessions, one told of the other's changes without asking.

- A delivery or an APPEND into a mailbox that is not selected reaches a NOTIFY
  session as an untagged STATUS, between commands and during IDLE.
- In the selected mailbox: EXISTS then a FETCH of MessageNew's attributes, flag
  FETCH with UID, EXPUNGE; SELECTED-DELAYED holds EXPUNGE back.
- MailboxName and SubscriptionChange: LIST on CREATE, RENAME (OLDNAME),
  SUBSCRIBE and DELETE (\\NonExistent), none for the session's own.
- An unsupported event is NO [BADEVENT (...)], a malformed set BAD; NOTIFY NONE
  stops everything.

Reads are bounded by the socket's timeout (``within``), never by sleeps.
"""

from __future__ import annotations

import imaplib
import ssl
from collections.abc import Iterator

import pytest

from mailserver import mailboxes
from mailserver.context import Context
from mailserver.imap.notify import MAX_BACKLOG, MAX_WATCHED
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, logged_in, message, raw_command

#: seconds a pushed response may take to arrive
WAIT = 15


@pytest.fixture
def other(srv: ServerThread, tls_client: ssl.SSLContext, user: Account) -> Iterator[imaplib.IMAP4_SSL]:
    """A second session of the same account: the one that makes the changes."""
    yield from logged_in(srv, tls_client, user)


def pushed_until(m: imaplib.IMAP4, needle: bytes, within: float = WAIT) -> list[bytes]:
    """The lines the server writes unasked, up to the first holding ``needle``; fails after ``within`` seconds."""
    m.sock.settimeout(within)
    seen: list[bytes] = []
    try:
        while True:
            line = m.readline()
            assert line, f"connection closed; got {seen}"
            seen.append(line.rstrip(b"\r\n"))
            if needle in line:
                return seen
    except TimeoutError:
        pytest.fail(f"no {needle!r} within {within}s; got {seen}")
    finally:
        m.sock.settimeout(30)


def notify(m: imaplib.IMAP4, spec: str) -> list[bytes]:
    out = raw_command(m, "NOTIFY " + spec)
    return out


def test_capability_advertises_notify(m: imaplib.IMAP4_SSL) -> None:
    assert "NOTIFY" in m.capabilities


def test_delivery_and_append_elsewhere_are_told_as_status(
    srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account
) -> None:
    assert other.create("Archive")[0] == "OK"
    out = notify(m, "SET STATUS (personal (MessageNew MessageExpunge FlagChange))")
    assert out[-1].endswith(b"OK NOTIFY completed")
    assert b'* STATUS "Archive" (MESSAGES 0 UIDNEXT 1 UIDVALIDITY' in b"\n".join(out)
    assert any(x.startswith(b'* STATUS "INBOX" (MESSAGES 0') for x in out)
    # RFC 5465 §3.1: with FlagChange, the STATUS responses of NOTIFY SET carry HIGHESTMODSEQ
    assert all(b" HIGHESTMODSEQ " in x for x in out if x.startswith(b"* STATUS"))
    srv.deliver(user, message("a@b.test", user.address, "first", "x"))
    got = pushed_until(m, b'* STATUS "INBOX"')
    assert b"(MESSAGES 1 UIDNEXT 2 UIDVALIDITY" in got[-1] and b"UNSEEN 1)" in got[-1]
    other.append("Archive", "(\\Seen)", None, message("a@b.test", user.address, "kept", "y"))
    got = pushed_until(m, b'* STATUS "Archive"')
    assert b"(MESSAGES 1 UIDNEXT 2 UIDVALIDITY" in got[-1] and b"UNSEEN 0)" in got[-1]
    # its own APPEND is not told back (RFC 5465 §5); a pending one would come before the second NOOP's answer
    assert m.append("Archive", "", None, message("a@b.test", user.address, "mine", "z"))[0] == "OK"
    assert "STATUS" not in m.untagged_responses
    for _ in range(2):
        out = raw_command(m, "NOOP")
        assert out == [out[-1]] and out[-1].endswith(b"OK NOOP completed")
    # FlagChange: the number of unseen messages moved
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Seen)")
    got = pushed_until(m, b'* STATUS "INBOX"')
    assert b"(MESSAGES 1 UIDNEXT 2" in got[-1] and b"UNSEEN 0)" in got[-1]
    # once CONDSTORE is on, every STATUS told carries HIGHESTMODSEQ
    assert raw_command(m, "ENABLE CONDSTORE")[-1].endswith(b"OK ENABLE completed")
    other.store("1", "+FLAGS", "(\\Flagged)")
    other.store("1", "-FLAGS", "(\\Seen)")
    got = pushed_until(m, b"UNSEEN 1 HIGHESTMODSEQ ")
    assert all(x.startswith(b'* STATUS "INBOX" (MESSAGES 1 UIDNEXT 2') and b" HIGHESTMODSEQ " in x for x in got)


def test_status_without_the_status_indicator_and_during_idle(
    srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account
) -> None:
    out = notify(m, "SET (selected (MessageNew MessageExpunge)) (inboxes (MessageNew MessageExpunge))")
    assert out == [out[-1]] and out[-1].endswith(b"OK NOTIFY completed")  # no STATUS asked for
    assert m.select("Drafts")[0] == "OK"
    tag = m._new_tag()  # type: ignore[attr-defined]
    m.send(tag + b" IDLE\r\n")
    assert pushed_until(m, b"+ idling")
    other.append("INBOX", "", None, message("a@b.test", user.address, "while idle", "z"))
    got = pushed_until(m, b'* STATUS "INBOX"')
    assert b"(MESSAGES 1 UIDNEXT 2" in got[-1]
    m.send(b"DONE\r\n")
    assert pushed_until(m, tag + b" OK")[-1] == tag + b" OK IDLE terminated"


def test_selected_new_message_flags_and_expunge(
    srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account
) -> None:
    srv.deliver(user, message("a@b.test", user.address, "first", "x"))
    assert m.select("INBOX")[0] == "OK"
    spec = "SET (selected (MessageNew (UID BODY.PEEK[HEADER.FIELDS (Subject)]) MessageExpunge FlagChange))"
    assert notify(m, spec)[-1].endswith(b"OK NOTIFY completed")
    srv.deliver(user, message("a@b.test", user.address, "good morning", "y"))
    got = pushed_until(m, b"Subject: good morning")
    assert b"* 2 EXISTS" in got
    fetch = next(x for x in got if b"FETCH" in x)
    assert fetch.startswith(b"* 2 FETCH (UID 2 BODY[HEADER.FIELDS (Subject)] {")
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Flagged)")
    got = pushed_until(m, b"* 1 FETCH")
    assert b"UID 1 FLAGS (" in got[-1] and b"\\Flagged" in got[-1]
    other.store("1", "+FLAGS", "(\\Deleted)")
    pushed_until(m, b"\\Deleted")
    other.expunge()
    assert pushed_until(m, b"EXPUNGE")[-1] == b"* 1 EXPUNGE"
    # the message moved up: UID 2 is now message 1
    out = raw_command(m, "UID FETCH 2 (UID)")
    assert out[0] == b"* 1 FETCH (UID 2)"


def test_selected_delayed_holds_expunge_back_until_a_command(
    srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account
) -> None:
    srv.deliver(user, message("a@b.test", user.address, "first", "x"))
    assert m.select("INBOX")[0] == "OK"
    assert notify(m, "SET (selected-delayed (MessageNew (UID) MessageExpunge))")[-1].endswith(b"OK NOTIFY completed")
    other.select("INBOX")
    other.store("1", "+FLAGS", "(\\Deleted)")
    other.expunge()
    srv.deliver(user, message("a@b.test", user.address, "second", "y"))
    got = pushed_until(m, b"EXISTS")  # the new message is told at once; the expunge is not
    assert b"* 2 EXISTS" in got and not any(b"EXPUNGE" in x for x in got)
    assert b"* 1 EXPUNGE" in raw_command(m, "NOOP")


def test_mailbox_name_and_subscription_change(m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL) -> None:
    assert notify(m, "SET (personal (MailboxName SubscriptionChange))")[-1].endswith(b"OK NOTIFY completed")
    other.create("Projects")  # subscribed by its creation
    assert pushed_until(m, b"Projects")[-1] == b'* LIST (\\Subscribed) "/" "Projects"'
    other.rename("Projects", "Done")
    assert pushed_until(m, b"Done")[-1] == b'* LIST (\\Subscribed) "/" "Done" ("OLDNAME" ("Projects"))'
    other.unsubscribe("Done")
    assert pushed_until(m, b"Done")[-1] == b'* LIST () "/" "Done"'
    other.delete("Done")
    assert pushed_until(m, b"Done")[-1] == b'* LIST (\\NonExistent) "/" "Done"'
    # the session's own changes are not told back (RFC 5465 §5)
    out = raw_command(m, "CREATE Mine")
    assert out == [out[-1]] and out[-1].endswith(b"CREATE completed")
    out = raw_command(m, "NOOP")
    assert not any(b"LIST" in x for x in out)


def test_unsupported_and_malformed_events(m: imaplib.IMAP4_SSL) -> None:
    out = notify(m, "SET (personal (MessageNew MessageExpunge AnnotationChange))")
    assert out[-1].endswith(
        b"NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] "
        b"Event ANNOTATIONCHANGE is not supported"
    )
    assert b" BAD " in notify(m, "SET (personal (MessageNew))")[-1]  # RFC 5465 §5: with MessageExpunge
    assert b" BAD " in notify(m, "SET (inboxes (FlagChange))")[-1]
    assert b" BAD " in notify(m, "SET (selected (MailboxName))")[-1]  # §6.1: message events only
    assert b" BAD " in notify(m, "SET (personal (MessageNew (UID) MessageExpunge))")[-1]  # fetch-att: selected
    assert b" BAD " in notify(m, "SET (selected NONE) (selected-delayed NONE)")[-1]
    assert b" BAD " in notify(m, "SET (everywhere (MessageNew MessageExpunge))")[-1]


def test_notify_none_stops_notifications(
    srv: ServerThread, m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL, user: Account
) -> None:
    assert notify(m, "SET (personal (MessageNew MessageExpunge MailboxName))")[-1].endswith(b"OK NOTIFY completed")
    srv.deliver(user, message("a@b.test", user.address, "first", "x"))
    pushed_until(m, b'* STATUS "INBOX"')
    assert notify(m, "NONE")[-1].endswith(b"OK NOTIFY completed")
    srv.deliver(user, message("a@b.test", user.address, "second", "y"))
    other.create("Quiet")
    # a pending notification would be written before the second NOOP's answer
    for _ in range(2):
        out = raw_command(m, "NOOP")
        assert out == [out[-1]] and out[-1].endswith(b"OK NOOP completed")


def test_selected_mailbox_deleted_by_another_session(m: imaplib.IMAP4_SSL, other: imaplib.IMAP4_SSL) -> None:
    assert other.create("Work")[0] == "OK"
    assert m.select("Work")[0] == "OK"
    spec = "SET (selected (MessageNew MessageExpunge FlagChange)) (personal (MailboxName))"
    assert notify(m, spec)[-1].endswith(b"OK NOTIFY completed")
    other.delete("Work")
    got = pushed_until(m, b"BYE")
    assert got[-1] == b"* BYE The selected mailbox was deleted by another session"
    m.shutdown()


def test_too_many_watched_mailboxes_is_notificationoverflow(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    async def create_many(ctx: Context) -> None:
        async with ctx.uow() as uow:
            await mailboxes.create_mailbox(uow, user.id, "Lots")
            for i in range(MAX_WATCHED):
                await uow.mailboxes.create(user.id, f"Lots/{i}", uidvalidity=i + 1)
            await uow.commit()

    srv.call(create_many)
    out = notify(m, "SET (personal (MessageNew MessageExpunge))")
    assert out[-1].endswith(f"NO [NOTIFICATIONOVERFLOW] NOTIFY watches at most {MAX_WATCHED} mailboxes".encode())
    assert notify(m, "SET (mailboxes Lots/1 (MessageNew MessageExpunge))")[-1].endswith(b"OK NOTIFY completed")


def test_a_client_that_does_not_read_is_told_notificationoverflow(
    srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account
) -> None:
    assert m.select("INBOX")[0] == "OK"
    assert notify(m, "SET (selected (MessageNew (BODY.PEEK[]) MessageExpunge))")[-1].endswith(b"OK NOTIFY completed")
    body = message("a@b.test", user.address, "big", ("y" * 76 + "\r\n") * (MAX_BACKLOG // 78 // 2))
    # the client reads nothing while the server's buffers fill: MessageNew sends each message whole
    for _ in range(64):
        srv.deliver(user, body)
    m.sock.settimeout(WAIT)
    seen = 0
    while True:
        line = m.readline()
        assert line, "connection closed"
        seen += len(line)
        if line.startswith(b"* OK [NOTIFICATIONOVERFLOW]"):
            break
    assert seen > MAX_BACKLOG
    # NOTIFY is off: nothing more is pushed; the session still answers commands
    srv.deliver(user, message("a@b.test", user.address, "after", "z"))
    out = raw_command(m, "NOOP")
    assert out[-1].endswith(b"OK NOOP completed") and not any(b"FETCH" in x for x in out)


def test_selected_news_carries_the_kept_search_updates(srv: ServerThread, m: imaplib.IMAP4_SSL, user: Account) -> None:
    srv.deliver(user, message("alice@b.test", user.address, "first", "x"))
    assert m.select("INBOX")[0] == "OK"
    lines = raw_command(m, 'UID SEARCH RETURN (UPDATE) FROM "alice"')
    tag = lines[-1].split()[0]
    assert notify(m, "SET (selected (MessageNew (UID) MessageExpunge))")[-1].endswith(b"OK NOTIFY completed")
    uid = srv.deliver(user, message("alice@b.test", user.address, "second", "y"))
    got = pushed_until(m, b"FETCH")
    # RFC 5465 §5.2: EXISTS, then ESEARCH ADDTO (RFC 5267), then the FETCH of MessageNew's attributes
    assert got == [
        b"* 2 EXISTS",
        b"* 2 RECENT",
        b'* ESEARCH (TAG "' + tag + b'") UID ADDTO (0 ' + str(uid).encode() + b")",
        b"* 2 FETCH (UID " + str(uid).encode() + b")",
    ]
