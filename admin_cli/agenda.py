"""``masante-admin agenda``: a patient's agenda (the ``Agenda`` mailbox, ``mailserver.agenda``).

- ``remind INS --date YYYY-MM-DD --summary TEXT``: an all-day event with no
  organiser (a vaccination, a check-up) stored in the patient's ``Agenda``
  through the one delivery path; its reminder comes 24 hours before. Bounded
  by the patient's quota (``mailserver.quota``): a full mailbox fails clearly.
- ``export INS``: every event of the patient's ``Agenda`` as one iCalendar file
  on standard output (written by ``icalendar``); audited (ids and a count only).
"""

from __future__ import annotations

import datetime as dt
import sys

import click

from admin_cli.common import actor, console, fail, run
from directory.patients import PatientService
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.errors import OverQuota
from mailserver.mailboxes import AGENDA
from mailserver.text import escape


@click.group()
def agenda() -> None:
    """Patients' agendas: reminder events, export as iCalendar."""


@agenda.command("remind")
@click.argument("ins")
@click.option("--date", "day", required=True, help="The day of the event, YYYY-MM-DD.")
@click.option("--summary", required=True, help="What it is (e.g. 'Rappel vaccin DTP').")
def remind(ins: str, day: str, summary: str) -> None:
    """Put a reminder event (no organiser) into the Agenda of patient INS; a reminder comes the day before."""
    try:
        when = dt.date.fromisoformat(day)
    except ValueError:
        fail(f"--date {escape(day)} is not a date of the form YYYY-MM-DD")
    text = " ".join(summary.split())
    if not text:
        fail("--summary is empty: say what the event is")
    if len(text) > 200:
        fail("--summary is at most 200 characters")

    from mailserver import agenda as A  # icalendar, only for the agenda commands

    async def go(ctx: Context) -> tuple[str, int]:
        account = await PatientService(ctx).get(ins)
        now = ctx.clock()
        cal = A.reminder_event(when, text, hostname=ctx.config.server.hostname, now=now)
        raw = A.event_message(cal, to=account.address, sender=None, hostname=ctx.config.server.hostname, now=now)
        async with ctx.uow() as uow:
            try:
                result = await deliver(
                    uow,
                    ctx.keyring,
                    raw,
                    [account],
                    mailbox=AGENDA,
                    actor=actor(),
                    source="admin",
                    limits=ctx.config.limits,
                )
            except OverQuota as exc:
                fail(f"nothing stored for {escape(account.address)}: its quota is full ({escape(str(exc))})")
            await uow.commit()
        return account.address, result.delivered[0].uid

    address, uid = run(go)
    console.print(f"reminder event of {when.isoformat()} stored in the Agenda of {address} (UID {uid})")


@agenda.command("export")
@click.argument("ins")
def export(ins: str) -> None:
    """Write every event of the Agenda of patient INS as one iCalendar (.ics) file on standard output."""

    from mailserver import agenda as A

    async def go(ctx: Context) -> bytes:
        account = await PatientService(ctx).get(ins)
        async with ctx.uow(readonly=True) as uow:
            calendars = await A.calendars_of(uow, ctx.keyring, account)
        out = A.export_calendar(calendars)
        count = len(out.walk("VEVENT"))
        async with ctx.uow() as uow:
            uow.audit(actor(), "agenda.export", account.owner_id, "ok", f"{count} event(s)")
            await uow.commit()
        return bytes(out.to_ical())

    data = run(go)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
