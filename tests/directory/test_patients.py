"""Patients' mailboxes: issued from a valid INS, bulk opening, statuses and their refusals, closure and retention."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from crypto.envelope import KeyDestroyed
from directory.accounts import AccountService
from directory.errors import AccountExists, InvalidIdentifier, InvalidState, UnknownAccount
from directory.patients import PatientService
from mailserver.admission import Admission as Gate
from mailserver.bodies import read_body
from mailserver.clock import FakeClock
from mailserver.delivery import deliver
from mailserver.mailboxes import PATIENT_EXTRA, STANDARD
from mailserver.store.models import AccountKind, AccountStatus, DomainKind
from tests import support

INS = support.PATIENT_INS  # 279035121518989
CORSICAN = "253072A07300443"


def make_ins(n: int) -> str:
    first13 = f"1{n:012d}"
    return first13 + f"{97 - int(first13) % 97:02d}"


async def test_open_issues_the_address_and_special_mailboxes(ctx: support.Context) -> None:
    svc = PatientService(ctx)
    a = await svc.open(f" {INS} ", actor="t", display_name="Camille")
    assert (a.address, a.ins, a.kind, a.status) == (
        f"{INS}@patient.masante.fr",
        INS,
        AccountKind.PATIENT,
        AccountStatus.ACTIVE,
    )
    corsican = await svc.open(CORSICAN.lower(), actor="t")
    assert corsican.address == f"{CORSICAN.lower()}@patient.masante.fr" and corsican.ins == CORSICAN
    async with ctx.uow(readonly=True) as uow:
        boxes = {m.name for m in await uow.mailboxes.list(a.id)}
        domain = await uow.domains.get("patient.masante.fr")
    assert boxes == {n for n, _ in STANDARD} | set(PATIENT_EXTRA)
    assert domain is not None and domain.kind is DomainKind.PATIENT  # created on first use
    with pytest.raises(AccountExists, match=f"patient with INS {INS} already exists"):
        await svc.open(INS, actor="t")
    with pytest.raises(InvalidIdentifier, match="wrong key: 90 given, 89 expected"):
        await svc.open("279035121518990", actor="t")


async def test_the_patient_domain_is_configuration(ctx: support.Context) -> None:
    ctx.config.domains.patient = "usagers.sante.test"
    a = await PatientService(ctx).open(INS, actor="t")
    assert a.address == f"{INS}@usagers.sante.test"
    ctx.config.domains.patient = "hopital.test"
    await AccountService(ctx).add_domain("hopital.test", DomainKind.PROFESSIONAL, actor="t")
    with pytest.raises(InvalidState, match="is a professional domain"):
        await PatientService(ctx).open(support.OTHER_INS, actor="t")


async def test_bulk_opening(ctx: support.Context, tmp_path: Path) -> None:
    svc = PatientService(ctx)
    await svc.open(INS, actor="t")
    good = [make_ins(i) for i in range(1, 1201)]
    lines = ["# INS list", INS, "", *good[:600], "123", good[0], "279035121518990  # wrong key", *good[600:]]
    reports = []
    r = await svc.open_many(lines, actor="t", batch_size=500, progress=lambda rep: reports.append(rep.opened))
    assert (r.opened, r.existing, r.invalid) == (1200, 2, 2)
    assert [(b.line, b.reason.split(" must ")[0].split(" has ")[0]) for b in r.bad_lines] == [
        (604, "INS '123'"),
        (606, "INS '279035121518990'"),
    ]
    assert reports and reports[-1] == 1200
    again = await svc.open_many(good, actor="t")
    assert (again.opened, again.existing) == (0, 1200)
    last = await svc.get(good[-1])
    async with ctx.uow(readonly=True) as uow:
        boxes = await uow.mailboxes.list(last.id)
        entries = await uow.audit_log.tail(3)
    assert {m.name for m in boxes} == {n for n, _ in STANDARD} | set(PATIENT_EXTRA)
    assert len({m.uidvalidity for m in boxes}) == len(boxes)
    assert entries[-1].action == "account.create" and entries[-1].object_id == last.owner_id
    # a bulk-opened mailbox receives and reads like any other
    raw = support.make_message("dr@hopital.test", last.address, "Bienvenue", "Bonjour")
    async with ctx.uow() as uow:
        await deliver(uow, ctx.keyring, raw, [last])
        await uow.commit()
    async with ctx.uow(readonly=True) as uow:
        msgs = await uow.messages.list((await uow.mailboxes.get(last.id, "INBOX")).id)  # type: ignore[union-attr]
        assert await read_body(uow, ctx.keyring, last, msgs[0]) == raw


async def test_statuses_and_their_refusals(ctx: support.Context) -> None:
    await support.add_domains(ctx)
    pro = await AccountService(ctx).create(f"dr@{support.PRO_DOMAIN}", AccountKind.PER, actor="t")
    svc = PatientService(ctx)
    await svc.open(INS, actor="t")
    gate = Gate(ctx)

    async def reply() -> str:
        d, _ = await gate.check_recipient(Gate.party_of(pro), f"{INS}@patient.masante.fr")
        return str(d.reply)[:9]

    assert await reply() == "250 2.1.5"
    assert (await svc.set_status(INS, AccountStatus.OPPOSED, actor="t")).status is AccountStatus.OPPOSED
    assert await reply() == "550 5.2.1"
    await svc.set_status(INS, AccountStatus.SUSPENDED, actor="t")
    assert await reply() == "450 4.2.1"
    await svc.set_status(INS, AccountStatus.ACTIVE, actor="t")
    assert await reply() == "250 2.1.5"
    await svc.close(INS, actor="t")
    assert await reply() == "550 5.2.1"
    with pytest.raises(InvalidState, match="closed"):
        await svc.set_status(INS, AccountStatus.ACTIVE, actor="t")
    reopened = await svc.reopen(INS, actor="t")
    assert reopened.status is AccountStatus.ACTIVE and reopened.retention_until is None
    assert await reply() == "250 2.1.5"
    with pytest.raises(InvalidState, match="not closed"):
        await svc.reopen(INS, actor="t")
    with pytest.raises(UnknownAccount):
        await svc.get(support.OTHER_INS)
    with pytest.raises(InvalidIdentifier, match="INS 'dr' must have 15 characters"):
        await svc.get(f"dr@{support.PRO_DOMAIN}")


async def test_close_keeps_the_data_until_retention_runs(ctx: support.Context) -> None:
    svc = PatientService(ctx)
    a = await svc.open(INS, actor="t")
    raw = support.make_message("dr@hopital.test", a.address, "CR", "compte rendu")
    async with ctx.uow() as uow:
        await deliver(uow, ctx.keyring, raw, [a])
        await uow.grants.grant(a.address, "dr@hopital.test", granted_by="dr@hopital.test", at=ctx.clock())
        await uow.commit()
    closed = await svc.close(INS, actor="t")
    assert closed.retention_until is not None
    assert closed.retention_until - closed.closed_at == dt.timedelta(days=3650)  # type: ignore[operator]
    assert [x.address for x in await svc.kept()] == [a.address]
    assert await svc.run_retention(actor="t") == []  # not yet
    assert (await svc.get(INS)).wrapped_key is not None
    ctx.clock = FakeClock(closed.retention_until + dt.timedelta(seconds=1))  # the retention period is over
    assert await svc.run_retention(actor="t") == [a.address]
    shredded = await svc.get(INS)
    assert shredded.wrapped_key is None and await svc.kept() == []
    assert await Gate(ctx).grants_of(a.address) == []
    async with ctx.uow(readonly=True) as uow:
        msgs = await uow.messages.list((await uow.mailboxes.get(a.id, "INBOX")).id)  # type: ignore[union-attr]
        with pytest.raises(KeyDestroyed):
            await read_body(uow, ctx.keyring, shredded, msgs[0])
    with pytest.raises(InvalidState, match="erased"):
        await svc.reopen(INS, actor="t")


async def test_erase_destroys_the_key_at_once(ctx: support.Context) -> None:
    svc = PatientService(ctx)
    a = await svc.open(INS, actor="t")
    async with ctx.uow() as uow:
        await uow.grants.grant(a.address, "dr@hopital.test", granted_by="dr@hopital.test", at=ctx.clock())
        await uow.commit()
    gone = await svc.close(INS, actor="t", erase=True)
    assert gone.status is AccountStatus.CLOSED and gone.wrapped_key is None
    assert await Gate(ctx).grants_of(a.address) == []
    async with ctx.uow(readonly=True) as uow:
        actions = [e.action for e in await uow.audit_log.tail(5)]
    assert "account.key-destroyed" in actions and "grant.forget" in actions
