"""Invitations as an organiser's software sends them (iMIP, RFC 6047), fresh patients, the scheduler, IMAP."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import imaplib
import random
import ssl
from email.message import EmailMessage

import icalendar

from directory.ins import ins_key
from mailserver.reminders import ReminderScheduler
from mailserver.store.models import Account
from tests import support
from tests.harness.messages import crlf
from tests.harness.server import ServerThread

TIMEOUT = 30


def new_ins() -> str:
    """A valid INS no other test uses."""
    first = (
        f"{random.choice('12')}{random.randint(0, 99):02d}{random.randint(1, 12):02d}{random.randint(0, 10**8 - 1):08d}"
    )
    return first + f"{ins_key(first):02d}"


def people(site: ServerThread) -> tuple[Account, Account]:
    """A fresh professional and a fresh patient on ``site``."""
    return site.make_pro(), site.make_patient(new_ins())


def calendar(
    method: str,
    uid: str,
    *,
    sequence: int = 0,
    start: dt.datetime,
    summary: str = "Consultation",
    organizer: str | None,
    attendee: str | None,
    partstat: str = "NEEDS-ACTION",
    status: str | None = None,
    alarm: dt.timedelta | None = None,
) -> bytes:
    cal = icalendar.Calendar()
    cal.add("PRODID", "-//test//agenda//FR")
    cal.add("VERSION", "2.0")
    cal.add("METHOD", method)
    ev = icalendar.Event()
    ev.add("UID", uid)
    ev.add("SEQUENCE", sequence)
    ev.add("DTSTAMP", dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC))
    ev.add("DTSTART", start)
    ev.add("DTEND", start + dt.timedelta(minutes=30))
    ev.add("SUMMARY", summary)
    if status:
        ev.add("STATUS", status)
    if organizer:
        ev.add("ORGANIZER", icalendar.vCalAddress(f"mailto:{organizer}"))
    if attendee:
        a = icalendar.vCalAddress(f"mailto:{attendee}")
        a.params["PARTSTAT"] = partstat
        ev.add("ATTENDEE", a)
    if alarm is not None:
        al = icalendar.Alarm()
        al.add("ACTION", "DISPLAY")
        al.add("DESCRIPTION", "Rappel")
        al.add("TRIGGER", alarm)
        ev.add_component(al)
    cal.add_component(ev)
    return bytes(cal.to_ical())


def imip(sender: str, rcpt: str, subject: str, ics: bytes, method: str, **headers: str) -> bytes:
    """An iMIP message: a text part and the calendar, ``text/calendar; method=...`` (RFC 6047 §2.4)."""
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = sender, rcpt, subject
    m["Date"] = "Mon, 23 Nov 2026 09:30:00 +0000"
    m["Message-ID"] = email.utils.make_msgid(domain="client.test")
    for k, v in headers.items():
        m[k.replace("_", "-")] = v
    m.set_content("Invitation.\n")
    m.add_attachment(ics, maintype="text", subtype="calendar", params={"method": method}, filename="invite.ics")
    return crlf(m.as_bytes())


def send(site: ServerThread, pki: support.TestPKI, user: str, rcpt: str, raw: bytes) -> None:
    from tests.smtp.harness import submission

    with submission(site, pki, user) as s:
        refused = s.sendmail(user, [rcpt], raw)
        assert refused == {}


def scheduler(site: ServerThread) -> ReminderScheduler:
    for s in site.server.services:
        if isinstance(s, ReminderScheduler):
            return s
    raise LookupError("no reminder scheduler in this server")


def settle_reminders(site: ServerThread) -> None:
    """Let the server's scheduler do what is due at its clock's present (no sleep: it is woken and waited for)."""
    sch = scheduler(site)
    site.call(lambda: sch.settle())


def imap(site: ServerThread, pki: support.TestPKI, account: Account) -> imaplib.IMAP4_SSL:
    tls = ssl.create_default_context(cafile=str(pki.ca_file))
    m = imaplib.IMAP4_SSL("127.0.0.1", site.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    m.login(account.address, support.PASSWORD)
    return m


def fetch_all(site: ServerThread, pki: support.TestPKI, account: Account, mailbox: str) -> list[email.message.Message]:
    """Every message of ``mailbox`` as the account's IMAP client sees it."""
    m = imap(site, pki, account)
    try:
        typ, _ = m.select(f'"{mailbox}"', readonly=True)
        assert typ == "OK", mailbox
        typ, data = m.uid("SEARCH", "ALL")
        assert typ == "OK"
        out = []
        for uid in data[0].split():
            typ, parts = m.uid("FETCH", uid, "(BODY.PEEK[])")
            assert typ == "OK"
            raw = next(p[1] for p in parts if isinstance(p, tuple))
            out.append(email.message_from_bytes(raw, policy=email.policy.default))
        return out
    finally:
        m.logout()


def calendar_of(msg: email.message.Message) -> icalendar.Calendar:
    for part in msg.walk():
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return icalendar.Calendar.from_ical(payload)
    raise AssertionError("no text/calendar part")
