"""Pending reminders live in the database: a new server (a new Context and scheduler) on it sends them, once."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest

from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.store.models import Account
from tests import support
from tests.agenda.harness import calendar, imip, new_ins, send, settle_reminders
from tests.harness.server import Databases, ServerThread, start_server
from tests.smtp.conftest import SMTP_DEFAULTS
from tests.smtp.harness import inbox

T0 = dt.datetime(2027, 3, 1, 8, 0, tzinfo=dt.UTC)


def _server(tmp: Path, url: str, pki: support.TestPKI, at: dt.datetime) -> ServerThread:
    return start_server(tmp, url, pki, sections=dict(SMTP_DEFAULTS), clock=FakeClock(at))


async def _people(ctx: Context, ins: str) -> tuple[Account, Account]:
    await support.add_domains(ctx)
    return await support.make_pro(ctx), await support.make_patient(ctx, ins)


def _reminders(server: ServerThread, address: str) -> list[bytes]:
    return [m for m in inbox(server, address) if b"Subject: Rappel" in m]


def test_a_pending_reminder_survives_a_restart_and_is_sent_once(
    dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("restart")
    url = dbs.new()
    start = T0 + dt.timedelta(days=2)

    first = _server(tmp, url, pki, T0)
    try:
        pro, patient = first.call(_people, new_ins())
        ics = calendar(
            "REQUEST",
            f"{uuid.uuid4()}@cabinet.test",
            start=start,
            summary="Vaccin",
            organizer=pro.address,
            attendee=patient.address,
        )
        send(first, pki, pro.address, patient.address, imip(pro.address, patient.address, "Vaccin", ics, "REQUEST"))
        settle_reminders(first)
        assert _reminders(first, patient.address) == []  # due at start - 24 h, a day from now
    finally:
        first.stop()

    second = _server(tmp, url, pki, start - dt.timedelta(hours=23))
    try:
        settle_reminders(second)
        assert len(_reminders(second, patient.address)) == 1
    finally:
        second.stop()

    third = _server(tmp, url, pki, start - dt.timedelta(hours=22))
    try:
        settle_reminders(third)
        assert len(_reminders(third, patient.address)) == 1
    finally:
        third.stop()
