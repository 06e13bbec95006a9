"""UIDVALIDITY follows the injected clock, not the machine's: a test moves time, the value moves with it.

RFC 3501 §2.3.1.1: a new mailbox's UIDVALIDITY only grows; it is the clock's second when that is larger than
any the account had (``mailboxes.next_uidvalidity``). On both databases.
"""

from __future__ import annotations

import datetime as dt

from mailserver import mailboxes as mbx
from mailserver.clock import FakeClock
from tests import support

#: far from the machine's clock, so a value read from ``time.time()`` cannot pass for it
START = dt.datetime(2040, 1, 1, tzinfo=dt.UTC)


async def test_uidvalidity_is_the_injected_clock_and_follows_it(config: support.Config) -> None:
    clock = FakeClock(START)
    ctx = support.Context.open(config, clock=clock)
    try:
        await support.add_domains(ctx)
        patient = await support.make_patient(ctx)
        async with ctx.uow() as uow:
            first = await mbx.create_mailbox(uow, patient.id, "Suivi")
            await uow.commit()
        assert int(START.timestamp()) < first.uidvalidity <= int(START.timestamp()) + 60
        later = clock.advance(86_400)
        async with ctx.uow() as uow:
            second = await mbx.create_mailbox(uow, patient.id, "Suivi-2")
            await uow.commit()
        assert second.uidvalidity == int(later.timestamp())
    finally:
        await ctx.close()
