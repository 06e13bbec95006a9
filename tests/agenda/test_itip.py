"""The agenda end to end: invitations, updates, cancellations and replies through SMTP submission, seen over IMAP.

The organiser is a professional of the site writing from their client (submission); the patient reads
their ``Agenda`` with imaplib. Both databases (the ``dbs`` fixture of the site).
"""

from __future__ import annotations

import datetime as dt
import uuid

from mailserver.clock import FakeClock
from tests import support
from tests.agenda.harness import calendar, calendar_of, fetch_all, imip, people, send
from tests.harness.server import ServerThread
from tests.smtp.conftest import site_fixture

site_server = site_fixture()


def _start(site: ServerThread, days: int = 10) -> dt.datetime:
    assert isinstance(site.clock, FakeClock)
    return (site.clock() + dt.timedelta(days=days)).replace(microsecond=0)


def test_invitation_update_cancel_leave_one_cancelled_event(site: ServerThread, pki: support.TestPKI) -> None:
    pro, patient = people(site)
    uid = f"{uuid.uuid4()}@cabinet.test"
    start = _start(site)

    def request(seq: int, summary: str, when: dt.datetime) -> None:
        ics = calendar(
            "REQUEST", uid, sequence=seq, start=when, summary=summary, organizer=pro.address, attendee=patient.address
        )
        send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, summary, ics, "REQUEST"))

    request(0, "Consultation cardiologie", start)
    events = fetch_all(site, pki, patient, "Agenda")
    assert len(events) == 1
    assert "Consultation cardiologie" in events[0]["Subject"]
    assert "Consultation cardiologie" in events[0].get_body(("plain",)).get_content()
    assert calendar_of(events[0]).walk("VEVENT")[0]["UID"] == uid

    request(1, "Consultation cardiologie (déplacée)", start + dt.timedelta(hours=2))
    events = fetch_all(site, pki, patient, "Agenda")
    assert len(events) == 1 and "déplacée" in events[0]["Subject"]

    request(1, "Same sequence: ignored", start)
    request(0, "Lower sequence: ignored", start)
    events = fetch_all(site, pki, patient, "Agenda")
    assert len(events) == 1 and "déplacée" in events[0]["Subject"]

    ics = calendar("CANCEL", uid, sequence=2, start=start, organizer=pro.address, attendee=patient.address)
    send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, "Annulation", ics, "CANCEL"))
    events = fetch_all(site, pki, patient, "Agenda")
    assert len(events) == 1
    event = calendar_of(events[0]).walk("VEVENT")[0]
    assert event["STATUS"] == "CANCELLED" and event["UID"] == uid
    assert "déplacée" in str(event["SUMMARY"])  # the event kept, marked cancelled

    organiser_copy = fetch_all(site, pki, pro, "Agenda")  # kept by submission in the organiser's own Agenda
    assert len(organiser_copy) == 1
    assert calendar_of(organiser_copy[0]).walk("VEVENT")[0]["STATUS"] == "CANCELLED"

    # every message is also mail: five invitations and a cancellation in INBOX
    assert len(fetch_all(site, pki, patient, "INBOX")) == 5


def test_patient_accepts_and_the_organiser_copy_shows_it(site: ServerThread, pki: support.TestPKI) -> None:
    pro, patient = people(site)
    uid = f"{uuid.uuid4()}@cabinet.test"
    start = _start(site)
    ics = calendar("REQUEST", uid, start=start, summary="Bilan annuel", organizer=pro.address, attendee=patient.address)
    invitation = imip(pro.address, patient.address, "Bilan annuel", ics, "REQUEST")
    send(site, pki, pro.address, patient.address, invitation)
    organiser_copy = fetch_all(site, pki, pro, "Agenda")
    assert len(organiser_copy) == 1
    attendee = calendar_of(organiser_copy[0]).walk("VEVENT")[0]["ATTENDEE"]
    assert attendee.params["PARTSTAT"] == "NEEDS-ACTION"

    invited = fetch_all(site, pki, patient, "INBOX")[0]
    reply = calendar("REPLY", uid, start=start, organizer=pro.address, attendee=patient.address, partstat="ACCEPTED")
    raw = imip(
        patient.address, pro.address, "Accepté : Bilan annuel", reply, "REPLY", In_Reply_To=invited["Message-ID"]
    )
    send(site, pki, patient.address, pro.address, raw)

    received = fetch_all(site, pki, pro, "INBOX")
    assert len(received) == 1
    answer = calendar_of(received[0])
    assert answer["METHOD"] == "REPLY"
    assert answer.walk("VEVENT")[0]["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED"
    organiser_copy = fetch_all(site, pki, pro, "Agenda")
    assert len(organiser_copy) == 1
    assert calendar_of(organiser_copy[0]).walk("VEVENT")[0]["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED"
    own = fetch_all(site, pki, patient, "Agenda")
    assert len(own) == 1
    assert calendar_of(own[0]).walk("VEVENT")[0]["ATTENDEE"].params["PARTSTAT"] == "ACCEPTED"


def test_a_reply_does_not_change_another_attendee(site: ServerThread, pki: support.TestPKI) -> None:
    """A REPLY speaks for its sender only: an ATTENDEE that is not the From is left as it is (RFC 6047 §3.4)."""
    pro = site.make_pro()
    other = site.make_pro("other")
    uid = f"{uuid.uuid4()}@cabinet.test"
    start = _start(site)
    ics = calendar("REQUEST", uid, start=start, organizer=pro.address, attendee=other.address)
    send(site, pki, pro.address, other.address, imip(pro.address, other.address, "Réunion", ics, "REQUEST"))
    forged = calendar("REPLY", uid, start=start, organizer=pro.address, attendee=other.address, partstat="DECLINED")
    send(site, pki, other.address, pro.address, imip(other.address, pro.address, "Re: Réunion", forged, "REPLY"))
    # the attendee declined; now a third party claims to accept for them
    third = site.make_pro("third")
    spoof = calendar("REPLY", uid, start=start, organizer=pro.address, attendee=other.address, partstat="ACCEPTED")
    send(site, pki, third.address, pro.address, imip(third.address, pro.address, "Re: Réunion", spoof, "REPLY"))
    copy = fetch_all(site, pki, pro, "Agenda")
    assert len(copy) == 1
    assert calendar_of(copy[0]).walk("VEVENT")[0]["ATTENDEE"].params["PARTSTAT"] == "DECLINED"


def test_a_calendar_that_does_not_parse_is_still_mail(site: ServerThread, pki: support.TestPKI) -> None:
    """Unreadable or unusable calendars: delivered to INBOX as plain mail, nothing filed; the next good one is."""
    pro, patient = people(site)
    broken = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:x\r\nthis is not a content line\r\n"
    no_start = (
        b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nUID:y\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    for subject, ics in (("Invitation illisible", broken), ("Invitation sans date", no_start)):
        send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, subject, ics, "REQUEST"))
    good = calendar(
        "REQUEST",
        f"{uuid.uuid4()}@cabinet.test",
        start=_start(site),
        summary="Lisible",
        organizer=pro.address,
        attendee=patient.address,
    )
    send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, "Lisible", good, "REQUEST"))
    inbox = fetch_all(site, pki, patient, "INBOX")
    assert [m["Subject"] for m in inbox] == ["Invitation illisible", "Invitation sans date", "Lisible"]
    agenda = fetch_all(site, pki, patient, "Agenda")
    assert len(agenda) == 1 and agenda[0]["Subject"].startswith("Lisible (")
