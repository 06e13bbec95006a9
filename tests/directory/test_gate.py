"""Every rule of the policy table, decided by the Gate on a real database with real accounts and messages.

(The same cells over real SMTP connections are the e2e suite's; here each rule is exercised
where it is decided, on SQLite and on PostgreSQL.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from directory.accounts import AccountService
from directory.annuaire import DirectoryImporter
from directory.trust import TrustSpace
from mailserver.admission import Admission as Gate
from mailserver.delivery import deliver
from mailserver.message import parse_message
from mailserver.store.models import Account, AccountStatus, OperatorStatus
from policies import Party
from tests import support
from tests.directory.conftest import (
    OTHER_DN,
    OTHER_OPERATOR,
    REMOTE_PATIENTS,
    REMOTE_PATIENTS_DN,
    SUSPENDED_DN,
    SUSPENDED_OPERATOR,
    World,
)
from tests.directory.messages import make_message, with_attachments, xdm_zip

DATA = Path(__file__).parent.parent / "data"
REMOTE_PRO = f"dr.who@{OTHER_OPERATOR}"
REMOTE_PATIENT = f"295109912611193@{REMOTE_PATIENTS}"
OUTSIDE = "someone@gmail.com"


async def party(w: World, who: str) -> Party:
    accounts = {
        "pro": w.pro,
        "org": w.org,
        "app": w.app,
        "patient": w.patient,
        "pharmacist": w.pharmacist,
    }
    if who in accounts:
        return Gate.party_of(accounts[who])
    address = {"remote-pro": REMOTE_PRO, "remote-patient": REMOTE_PATIENT, "outside": OUTSIDE}[who]
    return (await w.gate.resolve(address)).party


def address(w: World, who: str) -> str:
    return {
        "pro": w.pro.address,
        "org": w.org.address,
        "app": w.app.address,
        "patient": w.patient.address,
        "other-patient": w.other_patient.address,
        "pharmacist": w.pharmacist.address,
        "remote-pro": REMOTE_PRO,
        "remote-patient": REMOTE_PATIENT,
        "outside": OUTSIDE,
        "unknown": f"nobody@{support.PRO_DOMAIN}",
        "suspended-operator": f"dr@{SUSPENDED_OPERATOR}",
    }[who]


async def rcpt(w: World, sender: str | Party, to: str) -> str:
    s = sender if isinstance(sender, Party) else await party(w, sender)
    decision, _ = await w.gate.check_recipient(s, address(w, to))
    return f"{decision.reply.code} {decision.reply.enhanced}"


OK = "250 2.1.5"
NOT_A_REPLY = "550 5.7.1"
REFUSED = "550 5.7.1"
UNKNOWN = "550 5.1.1"
OP_SUSPENDED = "451 4.7.1"

# the table of docs/DESIGN.md, one cell per line
TABLE = [
    # professional / organisation
    *[(s, r, OK) for s in ("pro", "org") for r in ("pro", "org", "app", "patient", "remote-pro", "remote-patient")],
    *[(s, "outside", REFUSED) for s in ("pro", "org")],
    # application
    *[("app", r, OK) for r in ("pro", "org", "app", "patient", "remote-pro", "remote-patient")],
    ("app", "outside", REFUSED),
    # patient, with no grant
    ("patient", "pro", NOT_A_REPLY),
    ("patient", "org", NOT_A_REPLY),
    ("patient", "remote-pro", NOT_A_REPLY),
    ("patient", "app", REFUSED),
    ("patient", "other-patient", REFUSED),
    ("patient", "remote-patient", REFUSED),
    ("patient", "outside", REFUSED),
    # another operator's professionals and patients (arriving on the MX port)
    *[("remote-pro", r, OK) for r in ("pro", "org", "app", "patient")],
    ("remote-patient", "pro", NOT_A_REPLY),
    ("remote-patient", "app", REFUSED),
    ("remote-patient", "patient", REFUSED),
    # outside the trust space
    *[("outside", r, REFUSED) for r in ("pro", "org", "app", "patient", "unknown")],
    # whoever writes: an unknown local mailbox, a suspended operator
    ("pro", "unknown", UNKNOWN),
    ("patient", "unknown", UNKNOWN),
    ("pro", "suspended-operator", OP_SUSPENDED),
]


async def test_the_policy_table(world: World) -> None:
    got = [(s, r, await rcpt(world, s, r)) for s, r, _ in TABLE]
    assert got == TABLE


async def test_refusals_say_why(world: World) -> None:
    d, _ = await world.gate.check_recipient(await party(world, "patient"), world.pro.address)
    assert str(d.reply) == (
        "550 5.7.1 A patient may only reply to a professional who wrote to them first, and not after [FIN]"
    )
    d, _ = await world.gate.check_recipient(await party(world, "pro"), OUTSIDE)
    assert "not in the MSSanté trust space" in d.reply.text
    d, _ = await world.gate.check_recipient(await party(world, "pro"), "not an address")
    assert str(d.reply).startswith("501 5.1.3")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (AccountStatus.OPPOSED, "550 5.2.1 The recipient has opposed"),
        (AccountStatus.SUSPENDED, "450 4.2.1"),
        (AccountStatus.DISABLED, "550 5.2.1 The recipient's mailbox is disabled"),
    ],
)
async def test_recipient_status(world: World, status: AccountStatus, expected: str) -> None:
    svc = AccountService(world.ctx)
    await svc.set_status(world.patient.address, status, actor="t")
    d, _ = await world.gate.check_recipient(await party(world, "pro"), world.patient.address)
    assert str(d.reply).startswith(expected)
    await svc.set_status(world.patient.address, AccountStatus.ACTIVE, actor="t")
    assert await rcpt(world, "pro", "patient") == OK


async def test_closed_and_disabled_professionals(world: World) -> None:
    svc = AccountService(world.ctx)
    await svc.close(world.patient.address, actor="t")
    d, _ = await world.gate.check_recipient(await party(world, "pro"), world.patient.address)
    assert str(d.reply).startswith("550 5.2.1 The recipient's mailbox is closed")
    await svc.set_status(world.org.address, AccountStatus.DISABLED, actor="t")
    assert await rcpt(world, "remote-pro", "org") == "550 5.2.1"


# --- conversation grants ---------------------------------------------------------------------------------------


async def deliver_to(
    w: World, sender: Party, recipients: list[Account], raw: bytes, relayed: tuple[str, ...] = ()
) -> None:
    """What SMTP DATA does: deliver, record grants in the same unit of work, commit."""
    async with w.ctx.uow() as uow:
        if recipients:
            await deliver(uow, w.ctx.keyring, raw, recipients, actor=sender.address)
        await w.gate.after_delivery(uow, sender, recipients, parse_message(raw), relayed=relayed)
        await uow.commit()


async def test_a_patient_may_reply_only_after_the_professional_wrote(world: World) -> None:
    pro, patient = await party(world, "pro"), await party(world, "patient")
    assert await rcpt(world, patient, "pro") == NOT_A_REPLY  # the first message from a patient is refused
    raw = make_message(world.pro.address, world.patient.address, "Vos résultats", "Tout est normal.")
    await deliver_to(world, pro, [world.patient], raw)
    assert await rcpt(world, patient, "pro") == OK  # now a reply is accepted
    assert await rcpt(world, patient, "org") == NOT_A_REPLY  # only to that professional
    assert await rcpt(world, await party(world, "remote-patient"), "pro") == NOT_A_REPLY  # only that patient
    assert await world.gate.grants_of(world.patient.address) == [world.pro.address]
    # the other patient got nothing
    assert await rcpt(world, Gate.party_of(world.other_patient), "pro") == NOT_A_REPLY
    # a second message refreshes the grant, it does not duplicate it
    await deliver_to(world, pro, [world.patient], make_message(world.pro.address, world.patient.address, "2", "x"))
    assert await world.gate.grants_of(world.patient.address) == [world.pro.address]


@pytest.mark.parametrize(
    ("subject", "headers"),
    [("[FIN]", {}), ("Fin du suivi", {"X_MSS_MES": "FIN"})],
)
async def test_fin_withdraws_the_grant(world: World, subject: str, headers: dict[str, str]) -> None:
    pro, patient = await party(world, "pro"), await party(world, "patient")
    await deliver_to(world, pro, [world.patient], make_message(pro.address, patient.address, "Suivi", "..."))
    assert await rcpt(world, patient, "pro") == OK
    await deliver_to(
        world, pro, [world.patient], make_message(pro.address, patient.address, subject, "Au revoir", **headers)
    )
    assert await rcpt(world, patient, "pro") == NOT_A_REPLY
    # the professional writes again: the patient may reply again
    await deliver_to(world, pro, [world.patient], make_message(pro.address, patient.address, "Reprise", "..."))
    assert await rcpt(world, patient, "pro") == OK


async def test_almost_fin_does_not_end_anything(world: World) -> None:
    pro, patient = await party(world, "pro"), await party(world, "patient")
    await deliver_to(world, pro, [world.patient], make_message(pro.address, patient.address, "Suivi", "..."))
    await deliver_to(world, pro, [world.patient], make_message(pro.address, patient.address, "Re: [FIN]", "..."))
    assert await rcpt(world, patient, "pro") == OK


async def test_reply_to_grants_that_address_instead(world: World) -> None:
    pro, patient = await party(world, "pro"), await party(world, "patient")
    raw = make_message(pro.address, patient.address, "RDV", "Répondez au secrétariat", Reply_To=world.org.address)
    await deliver_to(world, pro, [world.patient], raw)
    assert await rcpt(world, patient, "org") == OK
    assert await rcpt(world, patient, "pro") == NOT_A_REPLY
    # a Reply-To outside the trust space grants nothing there: the sender is the contact
    raw = make_message(world.pharmacist.address, patient.address, "Ordonnance", "...", Reply_To=OUTSIDE)
    await deliver_to(world, Gate.party_of(world.pharmacist), [world.patient], raw)
    assert await rcpt(world, patient, "outside") == REFUSED
    assert set(await world.gate.grants_of(patient.address)) == {world.org.address, world.pharmacist.address}
    # [FIN] from the professional ends the conversation it opened through its Reply-To
    fin = make_message(pro.address, patient.address, "[FIN]", "...", Reply_To=world.org.address)
    await deliver_to(world, pro, [world.patient], fin)
    assert await rcpt(world, patient, "org") == NOT_A_REPLY


async def test_an_application_grants_only_through_its_reply_to(world: World) -> None:
    app, patient = await party(world, "app"), await party(world, "patient")
    await deliver_to(world, app, [world.patient], make_message(app.address, patient.address, "Résultats", "..."))
    assert await world.gate.grants_of(patient.address) == []
    assert await rcpt(world, patient, "app") == REFUSED
    raw = make_message(app.address, patient.address, "Résultats", "...", Reply_To=world.pro.address)
    await deliver_to(world, app, [world.patient], raw)
    assert await rcpt(world, patient, "pro") == OK


async def test_patients_grant_nothing(world: World) -> None:
    patient = await party(world, "patient")
    raw = make_message(patient.address, world.pro.address, "x", "y", Reply_To=world.org.address)
    await deliver_to(world, patient, [world.other_patient], raw)
    assert await world.gate.grants_of(world.other_patient.address) == []


async def test_grants_for_another_operators_patients(world: World) -> None:
    """A professional's message relayed to a Mon Espace Santé patient lets that patient reply through the MX."""
    pro, remote_patient = await party(world, "pro"), await party(world, "remote-patient")
    assert await rcpt(world, remote_patient, "pro") == NOT_A_REPLY
    raw = make_message(pro.address, REMOTE_PATIENT, "Compte rendu", "...")
    await deliver_to(world, pro, [], raw, relayed=(REMOTE_PATIENT, REMOTE_PRO))
    assert await rcpt(world, remote_patient, "pro") == OK
    await deliver_to(world, pro, [], make_message(pro.address, REMOTE_PATIENT, "[FIN]", "."), relayed=(REMOTE_PATIENT,))
    assert await rcpt(world, remote_patient, "pro") == NOT_A_REPLY


async def test_grants_are_audited_with_ids_only(world: World) -> None:
    pro = await party(world, "pro")
    await deliver_to(world, pro, [world.patient], make_message(pro.address, world.patient.address, "S", "corps secret"))
    async with world.ctx.uow(readonly=True) as uow:
        entries = [e for e in await uow.audit_log.tail(20) if e.action.startswith("grant.")]
    assert [(e.action, e.object_id) for e in entries] == [("grant.add", world.patient.owner_id)]
    assert "corps secret" not in str(entries[0].detail) and support.PATIENT_INS not in str(entries[0].detail)


# --- professions a patient may write to first -------------------------------------------------------------------


async def test_a_patient_may_write_first_to_a_pharmacist(world: World) -> None:
    patient = await party(world, "patient")
    assert await rcpt(world, patient, "pharmacist") == OK
    # another operator's pharmacist, known from the published directory
    await DirectoryImporter(world.ctx).import_file(DATA / "Extraction_Correspondance_MSSante_synthetic.txt", actor="t")
    await TrustSpace(world.ctx).add("pharmacie-centrale.mssante.fr", actor="t")
    d, resolved = await world.gate.check_recipient(patient, "louis.bernard@pharmacie-centrale.mssante.fr")
    assert d.allowed and resolved is not None and resolved.party.profession_code == "21"
    # a published application mailbox of another operator is software
    await TrustSpace(world.ctx).add("biolab.mssante.fr", actor="t")
    d, _ = await world.gate.check_recipient(patient, "labo.resultats@biolab.mssante.fr")
    assert str(d.reply).startswith("550 5.7.1 Patients cannot write to software mailboxes")


async def test_the_first_contact_professions_are_configuration(world: World) -> None:
    world.ctx.config.policy.patient_first_professions = ["10"]
    patient = await party(world, "patient")
    assert await rcpt(world, patient, "pro") == OK
    assert await rcpt(world, patient, "pharmacist") == NOT_A_REPLY


# --- the MX sender ---------------------------------------------------------------------------------------------


MX_CASES = [
    (f"dr@{OTHER_OPERATOR}", OTHER_DN, "250 2.1.0"),
    (f"dr@{OTHER_OPERATOR.upper()}", OTHER_DN.replace(",", ", ").lower(), "250 2.1.0"),  # canonical DNs
    (f"dr@{OTHER_OPERATOR}", None, "550 5.7.1 A client certificate"),
    (f"dr@{OTHER_OPERATOR}", REMOTE_PATIENTS_DN, "550 5.7.1 Your client certificate is not listed"),
    (f"dr@{OTHER_OPERATOR}", "CN=mx.clinique.mssante.fr,O=AUTRE,C=FR", "550 5.7.1 Your client"),
    (OUTSIDE, OTHER_DN, "550 5.7.1 Sender domain is not in the MSSanté trust space"),
    (f"dr@{SUSPENDED_OPERATOR}", SUSPENDED_DN, "451 4.7.1"),  # suspended: temporary
    (f"dr@{SUSPENDED_OPERATOR}", OTHER_DN, "550 5.7.1 Your client"),  # an impostor is not deferred
    ("", OTHER_DN, "250 2.1.0"),  # bounces from a listed MTA
    ("", "CN=unknown,C=FR", "550 5.7.1 Your client"),
    ("", SUSPENDED_DN, "451 4.7.1"),
    ("not an address", OTHER_DN, "501 5.1.3"),
]


async def test_mx_sender(world: World) -> None:
    for mail_from, peer_dn, expected in MX_CASES:
        d = await world.gate.check_mx_sender(mail_from, peer_dn)
        assert str(d.reply).startswith(expected), (mail_from, peer_dn)


async def test_submission_sender(world: World) -> None:
    assert str((await world.gate.check_submission_sender(world.pro, world.pro.address.upper())).reply).startswith(
        "250 2.1.0"
    )
    d = await world.gate.check_submission_sender(world.pro, world.org.address)
    assert str(d.reply).startswith("553 5.7.1")
    suspended = await AccountService(world.ctx).set_status(world.pro.address, AccountStatus.SUSPENDED, actor="t")
    d = await world.gate.check_submission_sender(suspended, suspended.address)
    assert str(d.reply).startswith("550 5.7.1 The sender's mailbox is not active")


# --- the trust space changes under a running gate ----------------------------------------------------------------


async def test_trust_space_changes_apply_at_once(world: World) -> None:
    gate, trust = world.gate, TrustSpace(world.ctx)  # one gate, created before the changes
    pro = await party(world, "pro")
    assert (await gate.check_recipient(pro, REMOTE_PRO))[0].allowed
    await trust.set_status(OTHER_OPERATOR, OperatorStatus.SUSPENDED, actor="t")
    assert str((await gate.check_recipient(pro, REMOTE_PRO))[0].reply).startswith("451 4.7.1")
    assert str((await gate.check_mx_sender(REMOTE_PRO, OTHER_DN)).reply).startswith("451 4.7.1")
    await trust.set_status(OTHER_OPERATOR, OperatorStatus.ACTIVE, actor="t")
    assert (await gate.check_mx_sender(REMOTE_PRO, OTHER_DN)).allowed
    await trust.remove(OTHER_OPERATOR, actor="t")
    assert str((await gate.check_recipient(pro, REMOTE_PRO))[0].reply).startswith("550 5.7.1 Recipient domain")
    assert not (await gate.check_mx_sender(REMOTE_PRO, OTHER_DN)).allowed
    await trust.add(OTHER_OPERATOR, actor="t", dns=["CN=new-mx.clinique.mssante.fr,C=FR"])
    assert (await gate.check_recipient(pro, REMOTE_PRO))[0].allowed
    assert not (await gate.check_mx_sender(REMOTE_PRO, OTHER_DN)).allowed  # the old certificate is gone
    assert (await gate.check_mx_sender(REMOTE_PRO, "CN=new-mx.clinique.mssante.fr, C=FR")).allowed
    # a whitelist import replaces it all in one go
    await trust.import_whitelist(DATA / "listeblanchemssante-synthetic.xml", actor="t")
    assert (await gate.check_recipient(pro, "dr@etab00001.mssante.fr"))[0].allowed
    await trust.rollback(actor="t")
    assert not (await gate.check_recipient(pro, "dr@etab00001.mssante.fr"))[0].allowed


# --- content ---------------------------------------------------------------------------------------------------


async def test_size_per_recipient(world: World) -> None:
    world.ctx.config.limits.patient_message_size = 3000
    world.ctx.config.policy.domain_size_limits = [f"{OTHER_OPERATOR}=4KB"]
    gate = Gate(world.ctx)
    pro = await party(world, "pro")
    parties = [await party(world, "patient"), (await gate.resolve(REMOTE_PRO)).party, await party(world, "org")]
    raw = make_message(pro.address, world.patient.address, "Gros", "x" * 3500)
    got = {a: str(d.reply) for a, d in (await gate.check_content(pro, parties, parse_message(raw))).items()}
    assert got == {
        world.patient.address: "552 5.3.4 Message too big: a patient's mailbox accepts at most 3000 bytes",
        REMOTE_PRO: "250 2.1.5 Recipient OK",
        world.org.address: "250 2.1.5 Recipient OK",
    }
    bigger = make_message(pro.address, world.patient.address, "Plus gros", "x" * 5000)
    got = {a: str(d.reply) for a, d in (await gate.check_content(pro, parties, parse_message(bigger))).items()}
    assert got[REMOTE_PRO] == f"552 5.3.4 Message too big: the domain {OTHER_OPERATOR} accepts at most 4 KB"
    assert gate.size_limit((await gate.resolve(REMOTE_PATIENT)).party) == 3000  # every patient
    assert gate.size_limit(await party(world, "org")) == world.ctx.config.limits.max_message_size


def test_bad_size_limits_are_configuration_errors(world: World) -> None:
    from mailserver.config import ConfigError

    world.ctx.config.policy.domain_size_limits = ["labo.fr:10MB"]
    with pytest.raises(ConfigError, match="domain=size"):
        Gate(world.ctx)


async def test_content_per_recipient(world: World) -> None:
    pro = await party(world, "pro")
    patient, other, org = await party(world, "patient"), Gate.party_of(world.other_patient), await party(world, "org")
    xdm = with_attachments(
        pro.address, patient.address, "CR", [("IHE_XDM.ZIP", "application/zip", xdm_zip(support.PATIENT_INS))]
    )
    got = {
        a: str(d.reply)[:9]
        for a, d in (await world.gate.check_content(pro, [patient, other, org], parse_message(xdm))).items()
    }
    assert got == {patient.address: "250 2.1.5", other.address: "550 5.7.1", org.address: "250 2.1.5"}
    exe = with_attachments(pro.address, patient.address, "x", [("x.exe", "application/octet-stream", b"MZ")])
    got = {a: d.reason for a, d in (await world.gate.check_content(pro, [patient, org], parse_message(exe))).items()}
    assert got == {patient.address: "executable-attachment", org.address: "executable-attachment"}


async def test_a_patient_with_a_grant_may_answer_but_not_write_anew(world: World) -> None:
    """The grant opens RCPT; at DATA the patient's message must answer one (In-Reply-To, References, Re:)."""
    pro, patient = await party(world, "pro"), await party(world, "patient")
    await deliver_to(world, pro, [world.patient], make_message(pro.address, patient.address, "Bilan", "..."))
    assert await rcpt(world, patient, "pro") == OK
    new = make_message(patient.address, pro.address, "Autre question", "...")
    (decision,) = (await world.gate.check_content(patient, [pro], parse_message(new))).values()
    assert decision.reason == "patient-new-message" and str(decision.reply).startswith("550 5.7.1")
    for answer in (
        make_message(patient.address, pro.address, "Re: Bilan", "merci"),
        make_message(patient.address, pro.address, "Merci", "...", In_Reply_To="<bilan@hopital.test>"),
    ):
        (decision,) = (await world.gate.check_content(patient, [pro], parse_message(answer))).values()
        assert decision.allowed
    pharmacist = await party(world, "pharmacist")
    (decision,) = (await world.gate.check_content(patient, [pharmacist], parse_message(new))).values()
    assert decision.allowed  # patients may write first to a pharmacist


async def test_rate_limits_per_sender(world: World) -> None:
    world.ctx.config.policy.rate_patient_per_hour = 2
    patient = await party(world, "patient")
    codes = [await rcpt(world, patient, "pharmacist") for _ in range(3)]
    assert codes == [OK, OK, "450 4.7.1"]
    assert await rcpt(world, "pro", "pharmacist") == OK  # other senders are not affected
    # refusals by the table do not use up the allowance, and the state is shared by every gate of the database
    world.ctx.config.policy.rate_professional_per_hour = 1
    assert await rcpt(world, "org", "outside") == REFUSED
    assert await rcpt(world, "org", "pro") == OK
    d, _ = await Gate(world.ctx).check_recipient(await party(world, "org"), world.pro.address)
    assert str(d.reply).startswith("450 4.7.1 Too many recipients from this sender: at most 1 per hour")


# --- IMAP APPEND -----------------------------------------------------------------------------------------------


async def test_append(world: World) -> None:
    g = world.gate
    own = make_message(world.patient.address, world.pro.address, "Brouillon", "...")
    assert (await g.check_append(world.patient, "Drafts", parse_message(own))).allowed
    forged = make_message(world.pro.address, world.patient.address, "Résultats normaux", "faux")
    d = await g.check_append(world.patient, "INBOX", parse_message(forged))
    assert str(d.reply).startswith("550 5.7.1 A patient can only store messages written from their own address")
    exe = with_attachments(world.patient.address, world.patient.address, "doc", [("a.exe", "application/pdf", b"MZ")])
    assert not (await g.check_append(world.patient, "Documents", parse_message(exe))).allowed
    pdf = with_attachments(world.patient.address, world.patient.address, "doc", [("a.pdf", "application/pdf", b"%PDF")])
    assert (await g.check_append(world.patient, "Documents/Autres", parse_message(pdf))).allowed
    assert (
        await g.check_append(world.pro, "INBOX", parse_message(forged))
    ).allowed  # professionals file what they like
    suspended = await AccountService(world.ctx).set_status(world.patient.address, AccountStatus.SUSPENDED, actor="t")
    assert not (await g.check_append(suspended, "Drafts", parse_message(own))).allowed
