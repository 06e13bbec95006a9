"""The patient's own events (IMAP APPEND into Agenda) and ``masante-admin agenda remind`` / ``export``."""

from __future__ import annotations

import datetime as dt
import email.utils
import imaplib
import subprocess
import uuid

import icalendar

from mailserver.agenda import LOCAL
from mailserver.clock import FakeClock
from tests import support
from tests.agenda.harness import calendar, fetch_all, imap, imip, people, send, settle_reminders
from tests.harness.server import ServerThread
from tests.smtp.conftest import site_fixture

#: messages a patient may hold here (a quota the other tests stay far below)
PATIENT_MESSAGES = 12
# on disk: masante-admin runs against the live server's store
site_server = site_fixture(config_on_disk=True, limits={"quota_messages_patient": PATIENT_MESSAGES})


def admin(site: ServerThread, *args: str, process: bool = False) -> subprocess.CompletedProcess[bytes]:
    """In this process (``support.run_admin``), or with ``process`` by the real console script."""
    return support.run_admin(*args, config=site.config.path, text=False, process=process)


def _clock(site: ServerThread) -> FakeClock:
    assert isinstance(site.clock, FakeClock)
    return site.clock


def _append(site: ServerThread, pki: support.TestPKI, patient: object, raw: bytes) -> None:
    m = imap(site, pki, patient)  # type: ignore[arg-type]
    try:
        typ, data = m.append('"Agenda"', None, imaplib.Time2Internaldate(dt.datetime.now(dt.UTC)), raw)
        assert typ == "OK", data
    finally:
        m.logout()


def test_appended_own_event_replaces_its_uid_and_export_holds_every_event(
    site: ServerThread, pki: support.TestPKI
) -> None:
    pro, patient = people(site)
    start = (_clock(site)() + dt.timedelta(days=20)).replace(microsecond=0)
    invited_uid = f"{uuid.uuid4()}@cabinet.test"
    ics = calendar("REQUEST", invited_uid, start=start, summary="Kiné", organizer=pro.address, attendee=patient.address)
    send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, "Kiné", ics, "REQUEST"))

    own_uid = f"{uuid.uuid4()}@patient.test"
    for summary in ("Pharmacie", "Pharmacie (avant midi)"):
        own = calendar(
            "PUBLISH", own_uid, start=start + dt.timedelta(days=1), summary=summary, organizer=None, attendee=None
        )
        _append(site, pki, patient, imip(patient.address, patient.address, summary, own, "PUBLISH"))
    agenda = fetch_all(site, pki, patient, "Agenda")
    subjects = sorted(m["Subject"] for m in agenda)
    assert len(subjects) == 2  # one message per UID: the second APPEND replaced the first
    assert subjects[0].startswith("Kiné (") and subjects[1] == "Pharmacie (avant midi)"

    ins = patient.address.split("@")[0]
    day = (start + dt.timedelta(days=2)).date()
    r = admin(site, "agenda", "remind", ins, "--date", day.isoformat(), "--summary", "Rappel vaccin DTP")
    assert r.returncode == 0, r.stderr
    assert len(fetch_all(site, pki, patient, "Agenda")) == 3

    r = admin(site, "agenda", "export", ins)
    assert r.returncode == 0, r.stderr
    exported = icalendar.Calendar.from_ical(r.stdout)
    events = {str(e["UID"]): e for e in exported.walk("VEVENT")}
    assert len(events) == 3 and invited_uid in events and own_uid in events
    assert str(events[own_uid]["SUMMARY"]) == "Pharmacie (avant midi)"
    assert any(str(e["SUMMARY"]) == "Rappel vaccin DTP" and "ORGANIZER" not in e for e in events.values())
    assert "METHOD" not in exported
    assert site.audit("agenda.export")


def test_remind_event_brings_a_reminder_the_day_before(site: ServerThread, pki: support.TestPKI) -> None:
    _pro, patient = people(site)
    ins = patient.address.split("@")[0]
    day = (_clock(site)() + dt.timedelta(days=40)).date()
    r = admin(site, "agenda", "remind", ins, "--date", day.isoformat(), "--summary", "Bilan dentaire")
    assert r.returncode == 0, r.stderr
    event = fetch_all(site, pki, patient, "Agenda")
    assert len(event) == 1 and "Bilan dentaire" in event[0]["Subject"]

    due = dt.datetime.combine(day, dt.time(), LOCAL).astimezone(dt.UTC) - dt.timedelta(hours=24)
    _clock(site).advance_to(due - dt.timedelta(minutes=5))
    settle_reminders(site)
    assert not [m for m in fetch_all(site, pki, patient, "INBOX") if "Bilan dentaire" in m["Subject"]]
    _clock(site).advance(600)
    settle_reminders(site)
    reminders = [m for m in fetch_all(site, pki, patient, "INBOX") if "Bilan dentaire" in m["Subject"]]
    assert len(reminders) == 1 and reminders[0]["Subject"].startswith("Rappel")
    assert email.utils.parseaddr(reminders[0]["To"])[1] == patient.address


def test_remind_and_export_say_what_is_wrong(site: ServerThread) -> None:
    r = admin(site, "agenda", "remind", "279035121518989", "--date", "10/12/2026", "--summary", "x", process=True)
    assert r.returncode != 0 and b"YYYY-MM-DD" in r.stderr and b"Traceback" not in r.stderr
    r = admin(site, "agenda", "export", "166013344455508")
    assert r.returncode != 0 and b"no patient mailbox" in r.stderr and b"Traceback" not in r.stderr


def test_remind_into_a_full_mailbox_fails_clearly_and_stores_nothing(site: ServerThread, pki: support.TestPKI) -> None:
    _pro, patient = people(site)
    for n in range(PATIENT_MESSAGES):
        site.deliver(patient, support.make_message("a@b.test", patient.address, f"earlier {n}", "hello\n"))
    ins = patient.address.split("@")[0]
    day = (_clock(site)() + dt.timedelta(days=5)).date()
    r = admin(site, "agenda", "remind", ins, "--date", day.isoformat(), "--summary", "Rappel vaccin DTP")
    assert r.returncode != 0
    said = r.stderr.decode() + r.stdout.decode()
    assert "its quota is full" in said and f"of {PATIENT_MESSAGES} messages" in said, said
    assert fetch_all(site, pki, patient, "Agenda") == []
