"""The patient's agenda: iTIP (RFC 5546) over iMIP (RFC 6047), filed into the ``Agenda`` mailbox.

Every calendar is read and written with the ``icalendar`` library, never by
hand. ``delivery.deliver`` calls ``file`` for each copy it adds, in its unit of
work (both or neither); the submission door calls ``on_submission`` for the
sender's own copy. What happens:

- ``METHOD:REQUEST`` delivered to a patient's INBOX: one *event message* in the
  patient's ``Agenda`` (the invitation's From, the event in its Subject and
  text, the calendar attached as ``text/calendar; method=REQUEST``). A later
  REQUEST with the same UID and a higher SEQUENCE replaces it (the old message
  expunged in the same unit of work); a lower or equal SEQUENCE is ignored.
- ``METHOD:CANCEL`` (SEQUENCE not lower): the event message is replaced by one
  whose calendar carries ``STATUS:CANCELLED``; its pending reminder is dropped.
  A CANCEL of an event the agenda does not hold files nothing (the mail stays in INBOX).
- ``METHOD:REPLY`` delivered to an account whose ``Agenda`` holds the UID (the
  organiser's copy, below): the ATTENDEE whose address is the reply's ``From``
  gets the reply's PARTSTAT on that copy (replaced, as above). An ATTENDEE that
  is not the sender is never changed by someone else's reply (RFC 6047 §3.4).
- **The organiser's copy**: when a local account sends a REQUEST through
  submission as its ORGANIZER, the same event message is kept in the sender's
  own ``Agenda`` (created on first use for a professional, who has none by
  default); the organiser's CANCEL marks it cancelled. That copy, not the
  sender's ``Sent`` (which the client writes and the server never rewrites),
  is what replies update. The attendee's own REPLY through submission updates
  their PARTSTAT on their own copy too.
- A message stored straight into ``Agenda`` (IMAP APPEND, ``masante-admin
  agenda remind``) is indexed as it is: the patient's own event. Same UID
  again: the older message is expunged (one message per UID).
- A calendar that does not parse files nothing: the message is still delivered
  where it was going (an invitation you cannot read is still mail); the log
  says ``agenda.unreadable`` with ids only.

Invariants:
- ``Agenda`` holds one message per iCalendar UID (``agenda_events`` maps UID →
  IMAP UID; ``store/models/agenda.py``).
- No event content in logs, audit or the index row: ids, SEQUENCE, STATUS, times.
- Reminders: the row's ``remind_at`` is the earliest VALARM trigger of the
  event, or 24 hours before its start without one; ``mailserver.reminders``
  sends it. A floating time (no TZID, no Z) is read as Europe/Paris, a date as
  its midnight in Europe/Paris.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from zoneinfo import ZoneInfo

import icalendar

from crypto.envelope import Keyring
from mailserver.bodies import account_key, read_body, seal_blob
from mailserver.mailboxes import AGENDA, create_mailbox
from mailserver.message import ParsedMessage, parse_message, stored
from mailserver.store.models import Account, AccountKind, AgendaEvent, Mailbox
from mailserver.store.models.base import utcnow
from mailserver.store.repositories.mail import INBOX, MailboxRow
from mailserver.store.uow import UnitOfWork

log = logging.getLogger("masante.agenda")

PRODID = "-//masante-mail//Agenda//FR"
#: how long before the start a reminder comes when the event has no VALARM
DEFAULT_LEAD = dt.timedelta(hours=24)
#: how times without a zone are read, and how the texts show them
LOCAL = ZoneInfo("Europe/Paris")
#: the largest calendar part read (bytes)
MAX_CALENDAR = 1024 * 1024


class Unreadable(ValueError):
    """A calendar part that is not a usable iCalendar object; the reason is a sentence without content."""


@dataclass(frozen=True, slots=True)
class Invitation:
    """A parsed iTIP object: the calendar, its METHOD, and its (first) event."""

    calendar: icalendar.Calendar
    method: str  # upper-case; "" when the calendar has none (an event stored as it is)
    event: icalendar.Component

    @property
    def uid(self) -> str:
        return str(self.event["UID"])

    @property
    def sequence(self) -> int:
        return sequence_of(self.event)


# --- reading --------------------------------------------------------------------------------------------


def sequence_of(event: icalendar.Component) -> int:
    try:
        return int(event.get("SEQUENCE", 0))
    except (TypeError, ValueError):
        return 0


def parse_calendar(data: bytes) -> Invitation:
    """The iTIP object in ``data``, or ``Unreadable``: it parses, it has a VEVENT with a UID and a DTSTART."""
    if len(data) > MAX_CALENDAR:
        raise Unreadable("the calendar is too large")
    try:
        cal = icalendar.Calendar.from_ical(data)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise Unreadable("the calendar does not parse") from exc
    if not isinstance(cal, icalendar.Calendar):
        raise Unreadable("the calendar is not a VCALENDAR")
    if any(getattr(c, "errors", None) for c in cal.walk()):
        raise Unreadable("the calendar holds properties that do not parse")
    events = cal.walk("VEVENT")
    if not events:
        raise Unreadable("the calendar holds no event")
    event = events[0]
    if not str(event.get("UID", "")).strip():
        raise Unreadable("the event has no UID")
    if start_of(event) is None:
        raise Unreadable("the event has no usable start (DTSTART)")
    return Invitation(cal, str(cal.get("METHOD", "")).strip().upper(), event)


def read_invitation(message: ParsedMessage) -> Invitation | None:
    """The first calendar part of ``message`` that reads (None: it has none); ``Unreadable`` when it has
    calendar parts and none reads."""
    parts = message.calendar_parts()
    if not parts:
        return None
    error: Unreadable | None = None
    for part in parts:
        try:
            return parse_calendar(part.decoded())
        except Unreadable as exc:
            error = exc
    assert error is not None  # noqa: S101 - parts is not empty
    raise error


def _aware(value: object) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo is not None else value.replace(tzinfo=LOCAL)).astimezone(dt.UTC)
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(), LOCAL).astimezone(dt.UTC)
    return None


def start_of(event: icalendar.Component) -> dt.datetime | None:
    """DTSTART as an aware UTC datetime (None: missing or unreadable)."""
    try:
        return _aware(event.decoded("DTSTART")) if "DTSTART" in event else None
    except (ValueError, TypeError, KeyError):
        return None


def end_of(event: icalendar.Component) -> dt.datetime | None:
    try:
        if "DTEND" in event:
            return _aware(event.decoded("DTEND"))
        start = start_of(event)
        if start is not None and "DURATION" in event:
            duration = event.decoded("DURATION")
            return start + duration if isinstance(duration, dt.timedelta) else None
    except (ValueError, TypeError, KeyError):
        return None
    return None


def remind_at(event: icalendar.Component) -> dt.datetime | None:
    """When the reminder of ``event`` is due: its earliest VALARM trigger, or 24 h before its start."""
    start = start_of(event)
    if start is None:
        return None
    triggers: list[dt.datetime] = []
    for alarm in event.walk("VALARM"):
        if "TRIGGER" not in alarm:
            continue
        try:
            value = alarm.decoded("TRIGGER")
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(value, dt.timedelta):
            related = str(alarm["TRIGGER"].params.get("RELATED", "START")).upper()
            base = end_of(event) if related == "END" else start
            if base is not None:
                triggers.append(base + value)
        else:
            when = _aware(value)
            if when is not None:
                triggers.append(when)
    return min(triggers) if triggers else start - DEFAULT_LEAD


def status_of(event: icalendar.Component) -> str:
    return str(event.get("STATUS", "CONFIRMED")).upper()[:16] or "CONFIRMED"


def address_of(value: object) -> str:
    """``mailto:a@b`` (an ORGANIZER or ATTENDEE) as a lower-case address."""
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    return text.strip().lower()


def _attendees(event: icalendar.Component) -> list[icalendar.vCalAddress]:
    value = event.get("ATTENDEE")
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


# --- writing --------------------------------------------------------------------------------------------


def when_text(start: dt.datetime | None, all_day: bool = False) -> str:
    if start is None:
        return "?"
    local = start.astimezone(LOCAL)
    return local.strftime("%d/%m/%Y") if all_day else local.strftime("%d/%m/%Y %H:%M")


def _is_all_day(event: icalendar.Component) -> bool:
    try:
        value = event.decoded("DTSTART")
    except (ValueError, TypeError, KeyError):
        return False
    return isinstance(value, dt.date) and not isinstance(value, dt.datetime)


def _one_line(value: object, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text[:limit]


def describe(event: icalendar.Component) -> tuple[str, str]:
    """The Subject and the text of an event message: what, when, where, who, in French and in clear."""
    summary = _one_line(event.get("SUMMARY", "")) or "Rendez-vous"
    start = start_of(event)
    when = when_text(start, _is_all_day(event))
    cancelled = status_of(event) == "CANCELLED"
    subject = f"{'Annulé : ' if cancelled else ''}{summary} ({when})"
    lines = [summary, "", f"Quand : {when} (heure de Paris)"]
    if "LOCATION" in event:
        lines.append(f"Où : {_one_line(event['LOCATION'])}")
    organizer = event.get("ORGANIZER")
    if organizer is not None:
        cn = organizer.params.get("CN")
        lines.append(f"Organisateur : {_one_line(cn) + ' ' if cn else ''}<{address_of(organizer)}>")
    for a in _attendees(event):
        lines.append(f"Participant : <{address_of(a)}> {str(a.params.get('PARTSTAT', 'NEEDS-ACTION')).upper()}")
    lines.append(f"Statut : {'annulé' if cancelled else status_of(event).lower()}")
    if "DESCRIPTION" in event:
        lines += ["", str(event["DESCRIPTION"])]
    return subject, "\r\n".join(lines) + "\r\n"


def event_message(
    calendar: icalendar.Calendar,
    *,
    to: str,
    sender: str | None,
    hostname: str,
    now: dt.datetime | None = None,
) -> bytes:
    """An iMIP message (RFC 6047 §2.4) for the first event of ``calendar``: a text part and the calendar.
    ``Unreadable`` when the calendar cannot be written back (nothing is stored then)."""
    try:
        return _event_message(calendar, to=to, sender=sender, hostname=hostname, now=now)
    except Unreadable:
        raise
    except Exception as exc:  # a value icalendar read but cannot write, a header the policy refuses
        raise Unreadable("the calendar cannot be written back") from exc


def _event_message(
    calendar: icalendar.Calendar,
    *,
    to: str,
    sender: str | None,
    hostname: str,
    now: dt.datetime | None,
) -> bytes:
    event = calendar.walk("VEVENT")[0]
    subject, text = describe(event)
    method = str(calendar.get("METHOD", "")).strip().upper()
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = sender or f"Agenda <agenda@{hostname}>"
    m["To"] = to
    m["Subject"] = subject
    m["Date"] = email.utils.format_datetime((now or utcnow()).astimezone(dt.UTC))
    m["Message-ID"] = f"<{uuid.uuid4().hex}@{hostname}>"
    m.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    params = {"method": method} if method else {}
    m.add_attachment(
        calendar.to_ical(),
        maintype="text",
        subtype="calendar",
        filename="invite.ics",
        params=params,
    )
    return m.as_bytes()


def reminder_message(event: icalendar.Component, *, to: str, hostname: str, now: dt.datetime) -> bytes:
    """The reminder delivered to INBOX before an event (``Unreadable`` when it cannot be written)."""
    try:
        return _reminder_message(event, to=to, hostname=hostname, now=now)
    except Exception as exc:
        raise Unreadable("the reminder cannot be written") from exc


def _reminder_message(event: icalendar.Component, *, to: str, hostname: str, now: dt.datetime) -> bytes:
    subject, text = describe(event)
    m = EmailMessage(policy=email.policy.SMTP)
    m["From"] = f"Agenda <agenda@{hostname}>"
    m["To"] = to
    m["Subject"] = f"Rappel : {subject}"
    m["Date"] = email.utils.format_datetime(now.astimezone(dt.UTC))
    m["Message-ID"] = f"<{uuid.uuid4().hex}@{hostname}>"
    m["Auto-Submitted"] = "auto-generated"  # RFC 3834
    m.set_content("Rappel de votre agenda.\r\n\r\n" + text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return m.as_bytes()


def new_calendar(method: str | None = None) -> icalendar.Calendar:
    cal = icalendar.Calendar()
    cal.add("PRODID", PRODID)
    cal.add("VERSION", "2.0")
    if method:
        cal.add("METHOD", method)
    return cal


def reminder_event(day: dt.date, summary: str, *, hostname: str, now: dt.datetime) -> icalendar.Calendar:
    """A calendar of one all-day event with no organiser (``masante-admin agenda remind``)."""
    cal = new_calendar()
    event = icalendar.Event()
    event.add("UID", f"{uuid.uuid4()}@{hostname}")
    event.add("DTSTAMP", now.astimezone(dt.UTC))
    event.add("DTSTART", day)
    event.add("SUMMARY", summary)
    event.add("STATUS", "CONFIRMED")
    cal.add_component(event)
    return cal


def export_calendar(calendars: Iterable[icalendar.Calendar]) -> icalendar.Calendar:
    """One calendar holding every event (and the time zones they name) of ``calendars``; no METHOD."""
    out = new_calendar()
    zones: set[str] = set()
    for cal in calendars:
        for tz in cal.walk("VTIMEZONE"):
            tzid = str(tz.get("TZID", ""))
            if tzid not in zones:
                zones.add(tzid)
                out.add_component(tz)
        for event in cal.walk("VEVENT"):
            out.add_component(event)
    return out


# --- filing ---------------------------------------------------------------------------------------------


async def _store(uow: UnitOfWork, keyring: Keyring, account: Account, mailbox: Mailbox, raw: bytes) -> int:
    """Add ``raw`` (a message this module built) to ``mailbox``; its IMAP UID."""
    parsed = parse_message(raw, strict=False)
    blob = seal_blob(account_key(keyring, account), account.id, parsed.raw, parsed.imap_meta())
    await uow.blobs.add(blob)
    uid, modseq = await uow.mailboxes.allocate(mailbox.id)
    await uow.messages.add(
        mailbox_id=mailbox.id,
        uid=uid,
        modseq=modseq,
        flags="",
        internal_date=utcnow(),
        size=len(parsed.raw),
        blob_id=blob.id,
    )
    uow.touch(mailbox.id)
    return uid


async def _expunge(uow: UnitOfWork, mailbox: Mailbox | MailboxRow, uid: int) -> None:
    modseq = await uow.mailboxes.bump_modseq(mailbox.id)
    blob_ids = await uow.messages.expunge(mailbox.id, [uid], modseq)
    await uow.blobs.delete_orphans(blob_ids)
    uow.touch(mailbox.id)


async def _index(
    uow: UnitOfWork,
    account: Account,
    mailbox: Mailbox | MailboxRow,
    row: AgendaEvent | None,
    inv: Invitation,
    message_uid: int,
    *,
    remind: bool = True,
) -> AgendaEvent:
    """Point the index at ``message_uid`` for ``inv``'s UID (the older message, if any, expunged)."""
    if row is not None and row.message_uid != message_uid:
        await _expunge(uow, mailbox, row.message_uid)
    due = remind_at(inv.event) if remind and status_of(inv.event) != "CANCELLED" else None
    if row is None:
        row = await uow.agenda.add(
            AgendaEvent(
                account_id=account.id,
                mailbox_id=mailbox.id,
                event_uid=inv.uid[:512],
                sequence=inv.sequence,
                status=status_of(inv.event),
                message_uid=message_uid,
                starts_at=start_of(inv.event),
                remind_at=due,
                reminded_at=None,
                updated_at=utcnow(),
            )
        )
        return row
    if due != row.remind_at:
        row.reminded_at = None  # a new time: a new reminder
    row.sequence = inv.sequence
    row.status = status_of(inv.event)
    row.message_uid = message_uid
    row.starts_at = start_of(inv.event)
    row.remind_at = due
    row.updated_at = utcnow()
    await uow.agenda.flush()
    return row


async def _agenda_of(uow: UnitOfWork, account: Account, *, create: bool = False, lock: bool = True) -> Mailbox | None:
    mb = await uow.mailboxes.get(account.id, AGENDA)
    if mb is None and create:
        mb = await create_mailbox(uow, account.id, AGENDA)
    if mb is not None and lock:
        # held until the commit: two deliveries of one UID read and replace its row one after the other
        await uow.mailboxes.lock(mb.id)
    return mb


async def _stored_invitation(
    uow: UnitOfWork, keyring: Keyring, account: Account, mailbox: Mailbox, uid: int
) -> Invitation | None:
    """The calendar of the event message ``uid`` of ``mailbox`` (None: gone or unreadable)."""
    rows = await uow.messages.by_uids(mailbox.id, [uid])
    if not rows:
        return None
    try:
        return read_invitation(stored(await read_body(uow, keyring, account, rows[0])))
    except Unreadable:
        return None


def _audit(
    uow: UnitOfWork, actor: str, action: str, account: Account, mailbox: Mailbox | MailboxRow, detail: str
) -> None:
    uow.audit(actor, action, f"account:{account.id}/mailbox:{mailbox.id}", "ok", detail)


async def file(
    uow: UnitOfWork,
    keyring: Keyring,
    message: ParsedMessage,
    account: Account,
    mailbox: Mailbox | MailboxRow,
    uid: int,
    *,
    actor: str = "system",
) -> None:
    """What the agenda does with a copy ``deliver`` just added (``uid`` in ``mailbox``), in its unit of work."""
    if not message.calendar_parts():
        return
    try:
        inv = read_invitation(message)
    except Unreadable as exc:
        log.info(
            "agenda.unreadable",
            extra={"fields": {"account": account.id, "mailbox": mailbox.id, "uid": uid, "reason": str(exc)}},
        )
        return
    if inv is None:
        return
    try:
        await _file(uow, keyring, message, account, mailbox, uid, inv, actor=actor)
    except Unreadable as exc:  # raised before anything is written: the copy stays plain mail
        log.info(
            "agenda.unreadable",
            extra={"fields": {"account": account.id, "mailbox": mailbox.id, "uid": uid, "reason": str(exc)}},
        )


async def _file(
    uow: UnitOfWork,
    keyring: Keyring,
    message: ParsedMessage,
    account: Account,
    mailbox: Mailbox | MailboxRow,
    uid: int,
    inv: Invitation,
    *,
    actor: str,
) -> None:
    if mailbox.name == AGENDA:  # APPEND, the CLI: the account's own event, as it is
        row = await uow.agenda.get(mailbox.id, inv.uid[:512])
        await _index(uow, account, mailbox, row, inv, uid)
        _audit(uow, actor, "agenda.store", account, mailbox, f"uid:{uid}; sequence {inv.sequence}")
        return
    if mailbox.name != INBOX:
        return
    if inv.method == "REQUEST" and account.kind is AccountKind.PATIENT:
        await _request(uow, keyring, message, account, inv, actor=actor)
    elif inv.method == "CANCEL":
        await _cancel(uow, keyring, message, account, inv, actor=actor)
    elif inv.method == "REPLY":
        sender = _from_address(message)
        if sender is not None:
            await _reply(uow, keyring, account, inv, sender, actor=actor)


def _domain(account: Account) -> str:
    return account.address.rpartition("@")[2]


def _from_address(message: ParsedMessage) -> str | None:
    found = message.addresses("from")
    return found[0].lower() if len(found) == 1 else None


async def _request(
    uow: UnitOfWork,
    keyring: Keyring,
    message: ParsedMessage,
    account: Account,
    inv: Invitation,
    *,
    actor: str,
) -> None:
    mb = await _agenda_of(uow, account)
    if mb is None:
        return
    row = await uow.agenda.get(mb.id, inv.uid[:512])
    if row is not None and inv.sequence <= row.sequence:
        _audit(uow, actor, "agenda.ignored", account, mb, f"sequence {inv.sequence} <= {row.sequence}")
        return
    raw = event_message(inv.calendar, to=account.address, sender=_from_address(message), hostname=_domain(account))
    new_uid = await _store(uow, keyring, account, mb, raw)
    await _index(uow, account, mb, row, inv, new_uid)
    _audit(uow, actor, "agenda.request", account, mb, f"uid:{new_uid}; sequence {inv.sequence}")


async def _cancel(
    uow: UnitOfWork,
    keyring: Keyring,
    message: ParsedMessage,
    account: Account,
    inv: Invitation,
    *,
    actor: str,
) -> None:
    mb = await _agenda_of(uow, account)
    if mb is None:
        return
    row = await uow.agenda.get(mb.id, inv.uid[:512])
    if row is None:
        return  # nothing to cancel: the mail stays in INBOX
    if inv.sequence < row.sequence:
        _audit(uow, actor, "agenda.ignored", account, mb, f"cancel sequence {inv.sequence} < {row.sequence}")
        return
    held = await _stored_invitation(uow, keyring, account, mb, row.message_uid)
    calendar = held.calendar if held is not None else inv.calendar
    event = calendar.walk("VEVENT")[0]
    event.pop("STATUS", None)
    event.add("STATUS", "CANCELLED")
    event.pop("SEQUENCE", None)
    event.add("SEQUENCE", max(inv.sequence, row.sequence))
    calendar.pop("METHOD", None)
    calendar.add("METHOD", "CANCEL")
    raw = event_message(calendar, to=account.address, sender=_from_address(message), hostname=_domain(account))
    new_uid = await _store(uow, keyring, account, mb, raw)
    await _index(uow, account, mb, row, Invitation(calendar, "CANCEL", event), new_uid)
    _audit(uow, actor, "agenda.cancel", account, mb, f"uid:{new_uid}; sequence {inv.sequence}")


async def _reply(
    uow: UnitOfWork,
    keyring: Keyring,
    account: Account,
    inv: Invitation,
    attendee: str,
    *,
    actor: str,
) -> bool:
    """Set ``attendee``'s PARTSTAT from the REPLY ``inv`` on ``account``'s copy of the event; did it change?"""
    mb = await _agenda_of(uow, account)
    if mb is None:
        return False
    row = await uow.agenda.get(mb.id, inv.uid[:512])
    if row is None:
        return False
    answers = [a for a in _attendees(inv.event) if address_of(a) == attendee]
    if not answers:
        return False
    partstat = str(answers[0].params.get("PARTSTAT", "")).upper()
    if partstat not in {"ACCEPTED", "DECLINED", "TENTATIVE", "DELEGATED", "NEEDS-ACTION"}:
        return False
    held = await _stored_invitation(uow, keyring, account, mb, row.message_uid)
    if held is None:
        return False
    changed = False
    for a in _attendees(held.event):
        if address_of(a) == attendee:
            a.params["PARTSTAT"] = partstat
            a.params.pop("RSVP", None)
            changed = True
    if not changed:
        return False
    raw = event_message(held.calendar, to=account.address, sender=None, hostname=_domain(account))
    new_uid = await _store(uow, keyring, account, mb, raw)
    await _index(uow, account, mb, row, held, new_uid)
    _audit(uow, actor, "agenda.reply", account, mb, f"uid:{new_uid}; partstat {partstat}")
    return True


async def on_submission(uow: UnitOfWork, keyring: Keyring, message: ParsedMessage, sender: Account) -> None:
    """The sender's own copy of what they sent through submission: the organiser's REQUEST kept in their
    ``Agenda`` (one per UID, replaced by a higher SEQUENCE), an attendee's REPLY applied to their copy."""
    if not message.calendar_parts():
        return
    try:
        inv = read_invitation(message)
    except Unreadable:
        return  # the recipients' copies are plain mail; the sender's Sent is the client's
    if inv is None:
        return
    try:
        await _own_copy(uow, keyring, message, sender, inv)
    except Unreadable:
        return


async def _own_copy(
    uow: UnitOfWork, keyring: Keyring, message: ParsedMessage, sender: Account, inv: Invitation
) -> None:
    me = sender.address.lower()
    if inv.method == "REQUEST" and address_of(inv.event.get("ORGANIZER", "")) == me:
        mb = await _agenda_of(uow, sender, create=True)
        assert mb is not None  # noqa: S101 - created above
        row = await uow.agenda.get(mb.id, inv.uid[:512])
        if row is not None and inv.sequence <= row.sequence:
            return
        raw = event_message(inv.calendar, to=sender.address, sender=_from_address(message), hostname=_domain(sender))
        new_uid = await _store(uow, keyring, sender, mb, raw)
        await _index(uow, sender, mb, row, inv, new_uid, remind=False)
        _audit(uow, sender.address, "agenda.organiser", sender, mb, f"uid:{new_uid}; sequence {inv.sequence}")
    elif inv.method == "CANCEL" and address_of(inv.event.get("ORGANIZER", "")) == me:
        await _cancel(uow, keyring, message, sender, inv, actor=sender.address)
    elif inv.method == "REPLY":
        await _reply(uow, keyring, sender, inv, me, actor=sender.address)


# --- reading back ---------------------------------------------------------------------------------------


async def calendars_of(uow: UnitOfWork, keyring: Keyring, account: Account) -> list[icalendar.Calendar]:
    """The calendar of every event message in ``account``'s ``Agenda`` that reads, in UID order."""
    mb = await _agenda_of(uow, account, lock=False)
    if mb is None:
        return []
    out = []
    for m in await uow.messages.list(mb.id):
        try:
            inv = read_invitation(stored(await read_body(uow, keyring, account, m)))
        except Unreadable:
            continue
        if inv is not None:
            out.append(inv.calendar)
    return out


async def event_of(uow: UnitOfWork, keyring: Keyring, account: Account, row: AgendaEvent) -> icalendar.Component | None:
    """The event the index row ``row`` points at (None: the message was deleted or does not read)."""
    mb = await uow.mailboxes.get_by_id(row.mailbox_id)
    if mb is None:
        return None
    inv = await _stored_invitation(uow, keyring, account, mb, row.message_uid)
    return inv.event if inv is not None else None
