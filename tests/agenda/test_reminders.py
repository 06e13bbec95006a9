"""Reminders: delivered to INBOX at the VALARM trigger (or 24 h before), once, on the server's clock (never a sleep)."""

from __future__ import annotations

import datetime as dt
import uuid

from mailserver.clock import FakeClock
from tests import support
from tests.agenda.harness import calendar, fetch_all, imip, people, send, settle_reminders
from tests.harness.server import ServerThread
from tests.smtp.conftest import site_fixture

site_server = site_fixture()


def _clock(site: ServerThread) -> FakeClock:
    assert isinstance(site.clock, FakeClock)
    return site.clock


def _reminders(site: ServerThread, pki: support.TestPKI, patient: object) -> list[str]:
    return [m["Subject"] for m in fetch_all(site, pki, patient, "INBOX") if m["Subject"].startswith("Rappel")]  # type: ignore[arg-type]


def _invite(
    site: ServerThread, pki: support.TestPKI, alarm: dt.timedelta | None, summary: str
) -> tuple[object, dt.datetime]:
    pro, patient = people(site)
    start = (_clock(site)() + dt.timedelta(days=3)).replace(microsecond=0)
    ics = calendar(
        "REQUEST",
        f"{uuid.uuid4()}@cabinet.test",
        start=start,
        summary=summary,
        organizer=pro.address,
        attendee=patient.address,
        alarm=alarm,
    )
    send(site, pki, pro.address, patient.address, imip(pro.address, patient.address, summary, ics, "REQUEST"))
    return patient, start


def test_a_reminder_comes_at_the_valarm_trigger_once(site: ServerThread, pki: support.TestPKI) -> None:
    patient, start = _invite(site, pki, dt.timedelta(hours=-2), "Échographie")
    due = start - dt.timedelta(hours=2)
    _clock(site).advance_to(due - dt.timedelta(minutes=1))
    settle_reminders(site)
    assert _reminders(site, pki, patient) == []

    _clock(site).advance(120)
    settle_reminders(site)
    reminders = _reminders(site, pki, patient)
    assert len(reminders) == 1 and "Échographie" in reminders[0]

    _clock(site).advance(3600)
    settle_reminders(site)
    assert len(_reminders(site, pki, patient)) == 1


def test_without_valarm_the_reminder_comes_24_hours_before(site: ServerThread, pki: support.TestPKI) -> None:
    patient, start = _invite(site, pki, None, "Prise de sang")
    _clock(site).advance_to(start - dt.timedelta(hours=24, minutes=1))
    settle_reminders(site)
    assert _reminders(site, pki, patient) == []
    _clock(site).advance(120)
    settle_reminders(site)
    assert len(_reminders(site, pki, patient)) == 1
    assert site.audit("agenda.reminder")
