"""Who may write to whom, through real SMTP connections (DESIGN.md's table, row by row).

Every cell is a real submission (or MX) session with the exact reply, and every
refusal leaves the store and the queue as they were. Then the rules that need
several messages: the patient's reply-only right, [FIN] and X-MSS-MES: FIN, the
pharmacist a patient may write to first, a trust-space change made with
``masante-admin`` on the running server, and the MX's TLS cipher suites.
"""

from __future__ import annotations

import smtplib
import subprocess
from pathlib import Path

import pytest

from directory.accounts import AccountService
from directory.patients import PatientService
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.store.models import AccountKind, AccountStatus
from tests import support
from tests.smtp.conftest import OTHER, OTHER_DN, PATIENT, PRO, site_fixture
from tests.smtp.harness import ServerThread, copies, find, marker, message, require_tool, tls_client

ORG = f"secretariat@{support.PRO_DOMAIN}"
APP = f"labo@{support.PRO_DOMAIN}"
PHARMACIST = f"pharmacie@{support.PRO_DOMAIN}"
OTHER_PATIENT = f"{support.OTHER_INS}@{support.PATIENT_DOMAIN}"
NEW_PATIENT = f"269043301234531@{support.PATIENT_DOMAIN}"  # nobody ever writes to this one
OPPOSED = f"201017512345601@{support.PATIENT_DOMAIN}"
CLOSED = f"199129912345714@{support.PATIENT_DOMAIN}"
SUSPENDED = f"275059900011120@{support.PATIENT_DOMAIN}"
PRO2_FOR_REPLY = f"dr.wilson@{support.PRO_DOMAIN}"  # a professional nobody writes to in the table
REMOTE_PRO = f"dr.cuddy@{OTHER}"
MES = "patient.mssante.fr"  # Mon Espace Santé's patient domain: another operator's patients
MES_DN = "CN=smtps1.ens.test,O=CNAM Test,C=FR"
REMOTE_PATIENT = f"166013344455508@{MES}"
OUTSIDE = "someone@gmail.com"

OK = "250"
NOT_A_REPLY = "550 5.7.1 A patient may only reply"  # refused at RCPT: no conversation with that professional
NOT_AN_ANSWER = "550 5.7.1 A patient may only answer"  # refused at DATA: a grant, but a new message
OUTSIDE_TRUST = "550 5.7.1"


async def populate(ctx: Context, unreachable_port: int) -> None:
    svc = AccountService(ctx)
    await svc.create(ORG, AccountKind.ORG, actor="t", password=support.PASSWORD)
    await svc.create(APP, AccountKind.APP, actor="t", password=support.PASSWORD)
    await svc.create(PHARMACIST, AccountKind.PER, actor="t", password=support.PASSWORD, profession_code="21")
    patients = PatientService(ctx)
    for address in (OTHER_PATIENT, NEW_PATIENT, OPPOSED, CLOSED, SUSPENDED):
        await support.make_patient(ctx, address.split("@")[0])
    await patients.set_status(OPPOSED.split("@")[0], AccountStatus.OPPOSED, actor="t")
    await patients.set_status(SUSPENDED.split("@")[0], AccountStatus.SUSPENDED, actor="t")
    await patients.close(CLOSED.split("@")[0], actor="t")
    await TrustSpace(ctx).add(MES, actor="t", dns=[MES_DN], mta_host="127.0.0.1", mta_port=unreachable_port)


def people(server: ServerThread, request: pytest.FixtureRequest) -> None:
    server.call(populate, request.getfixturevalue("unreachable_port"))


site_server = site_fixture(people, config_on_disk=True)  # on disk: masante-admin runs against the live server


@pytest.fixture(scope="module")
def peer_certs(pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("policy-peers")
    return {dn: pki.issue_client(dn, d) for dn in (OTHER_DN, MES_DN)}


def reply(code: int, text: bytes) -> str:
    return f"{code} {text.decode()}"


def transaction(s: smtplib.SMTP, sender: str, rcpt: str, raw: bytes) -> str:
    """MAIL, RCPT, DATA: the first refusal, or the final reply."""
    code, text = s.mail(sender)
    if code != 250:
        return reply(code, text)
    code, text = s.rcpt(rcpt)
    if code != 250:
        s.rset()
        return reply(code, text)
    code, text = s.data(raw)  # smtplib returns the reply after the data, it does not raise
    return OK if code == 250 else reply(code, text)


def submit(site: ServerThread, pki: support.TestPKI, sender: str, rcpt: str, subject: str, **headers: str) -> str:
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30)
    try:
        s.starttls(context=tls_client(pki))
        s.login(sender, support.PASSWORD)
        return transaction(s, sender, rcpt, message(sender, rcpt, subject, **headers))
    finally:
        s.quit()


def via_mx(
    site: ServerThread,
    pki: support.TestPKI,
    cert: tuple[Path, Path],
    sender: str,
    rcpt: str,
    subject: str,
    **headers: str,
) -> str:
    s = smtplib.SMTP("127.0.0.1", site.port("mx"), timeout=30, local_hostname="mx.peer.test")
    try:
        s.starttls(context=tls_client(pki, *cert))
        s.ehlo()
        return transaction(s, sender, rcpt, message(sender, rcpt, subject, **headers))
    finally:
        s.quit()


# --- the table, cell by cell, through submission ------------------------------------------------------------------

CELLS = [
    # professional, organisation and application: anyone in the trust space, never outside
    *[(s, r, OK) for s in (PRO, ORG, APP) for r in (PRO, APP, PATIENT, REMOTE_PRO, REMOTE_PATIENT)],
    *[(s, OUTSIDE, OUTSIDE_TRUST) for s in (PRO, ORG, APP)],
    # a patient who was never written to: nobody
    (NEW_PATIENT, PRO, NOT_A_REPLY),
    (NEW_PATIENT, ORG, NOT_A_REPLY),
    (NEW_PATIENT, APP, "550 5.7.1 Patients cannot write to software"),
    (NEW_PATIENT, PATIENT, "550 5.7.1 Patients cannot write to other patients"),
    (NEW_PATIENT, REMOTE_PRO, NOT_A_REPLY),
    (NEW_PATIENT, REMOTE_PATIENT, "550 5.7.1 Patients cannot write to other patients"),
    (NEW_PATIENT, OUTSIDE, OUTSIDE_TRUST),
    # the recipient's state comes first
    (PRO, OPPOSED, "550 5.2.1"),
    (PRO, CLOSED, "550 5.2.1"),
    (PRO, SUSPENDED, "450 4.2.1"),
    (PRO, f"nobody@{support.PRO_DOMAIN}", "550 5.1.1"),
    (PRO, f"nobody@{support.PATIENT_DOMAIN}", "550 5.1.1"),
]


@pytest.mark.parametrize(("sender", "rcpt", "expected"), CELLS)
def test_submission_cell(site: ServerThread, pki: support.TestPKI, sender: str, rcpt: str, expected: str) -> None:
    tag = marker()
    got = submit(site, pki, sender, rcpt, f"cell {tag}")
    assert got.startswith(expected), got
    if expected == OK:
        assert copies(site, tag) == 1  # one copy: in the recipient's mailbox, or queued for its operator
    else:
        assert copies(site, tag) == 0, "a refused message must leave nothing behind"


# --- the table through the MX: other operators' professionals and patients ------------------------------------------


@pytest.mark.parametrize(
    ("sender", "dn", "rcpt", "expected"),
    [
        (REMOTE_PRO, OTHER_DN, PRO, OK),
        (REMOTE_PRO, OTHER_DN, APP, OK),
        (REMOTE_PRO, OTHER_DN, PATIENT, OK),
        (REMOTE_PATIENT, MES_DN, PRO2_FOR_REPLY, NOT_A_REPLY),
        (REMOTE_PATIENT, MES_DN, APP, "550 5.7.1"),
        (REMOTE_PATIENT, MES_DN, PATIENT, "550 5.7.1"),
        (REMOTE_PRO, OTHER_DN, OPPOSED, "550 5.2.1"),
        (REMOTE_PRO, OTHER_DN, SUSPENDED, "450 4.2.1"),
        (REMOTE_PRO, OTHER_DN, OUTSIDE, "550 5.7.1"),  # the MX relays nothing
        (REMOTE_PRO, MES_DN, PRO, "550 5.7.1"),  # a certificate not listed for the sender's domain
    ],
)
def test_mx_cell(
    site: ServerThread,
    pki: support.TestPKI,
    peer_certs: dict[str, tuple[Path, Path]],
    sender: str,
    dn: str,
    rcpt: str,
    expected: str,
) -> None:
    tag = marker()
    got = via_mx(site, pki, peer_certs[dn], sender, rcpt, f"mx cell {tag}")
    assert got.startswith(expected), got
    assert copies(site, tag) == (1 if expected == OK else 0)


# --- rules that take several messages ------------------------------------------------------------------------------


def test_a_patient_may_reply_only_after_the_professional_wrote_first(site: ServerThread, pki: support.TestPKI) -> None:
    patient = OTHER_PATIENT
    tag = marker()
    assert submit(site, pki, patient, PRO2_FOR_REPLY, f"bonjour {tag}").startswith(NOT_A_REPLY)
    assert submit(site, pki, PRO2_FOR_REPLY, patient, f"Vos résultats {tag}") == OK
    assert submit(site, pki, patient, PRO2_FOR_REPLY, f"Re: Vos résultats {tag}") == OK
    # the grant lets the patient answer, not write anew
    assert submit(site, pki, patient, PRO2_FOR_REPLY, f"Autre sujet {tag}").startswith(NOT_AN_ANSWER)
    assert len(find(site, PRO2_FOR_REPLY, tag)) == 1  # the answer arrived, the new message did not
    # the grant is for that professional only
    assert submit(site, pki, patient, ORG, f"Re: Vos résultats {tag}").startswith(NOT_A_REPLY)


@pytest.mark.parametrize("ending", [{"subject": "[FIN]"}, {"subject": "Fin du suivi", "X_MSS_MES": "FIN"}])
def test_fin_withdraws_the_right_to_reply(site: ServerThread, pki: support.TestPKI, ending: dict[str, str]) -> None:
    tag = marker()
    assert submit(site, pki, PRO, PATIENT, f"Suivi {tag}") == OK
    assert submit(site, pki, PATIENT, PRO, f"Re: Suivi {tag}") == OK
    headers = dict(ending)
    subject = headers.pop("subject")
    assert submit(site, pki, PRO, PATIENT, subject, **headers) == OK
    assert submit(site, pki, PATIENT, PRO, f"Re: Suivi {tag}").startswith(NOT_A_REPLY)
    assert submit(site, pki, PRO, PATIENT, f"Nouveau suivi {tag}") == OK  # writing again opens it again
    assert submit(site, pki, PATIENT, PRO, f"Re: Nouveau suivi {tag}") == OK


def test_reply_to_grants_the_address_it_names(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    assert submit(site, pki, OTHER_PATIENT, ORG, f"Re: CR {tag}").startswith(NOT_A_REPLY)
    assert submit(site, pki, APP, OTHER_PATIENT, f"CR {tag}", Reply_To=ORG) == OK
    assert submit(site, pki, OTHER_PATIENT, ORG, f"Re: CR {tag}") == OK  # the Reply-To is the contact
    assert submit(site, pki, OTHER_PATIENT, APP, f"Re: CR {tag}").startswith("550 5.7.1")  # never to software


def test_a_patient_may_write_first_to_a_pharmacist(site: ServerThread, pki: support.TestPKI) -> None:
    assert submit(site, pki, OTHER_PATIENT, PHARMACIST, f"Ordonnance {marker()}") == OK


def test_a_remote_patient_replies_through_the_mx_after_our_professional_wrote(
    site: ServerThread, pki: support.TestPKI, peer_certs: dict[str, tuple[Path, Path]]
) -> None:
    tag = marker()
    assert via_mx(site, pki, peer_certs[MES_DN], REMOTE_PATIENT, PRO2_FOR_REPLY, f"Re: x {tag}").startswith(NOT_A_REPLY)
    assert submit(site, pki, PRO2_FOR_REPLY, REMOTE_PATIENT, f"Convocation {tag}") == OK  # queued for MES
    assert via_mx(site, pki, peer_certs[MES_DN], REMOTE_PATIENT, PRO2_FOR_REPLY, f"Re: Convocation {tag}") == OK


# --- the trust space changes under a running server ------------------------------------------------------------------


def admin(site: ServerThread, *args: str) -> subprocess.CompletedProcess[str]:
    """``masante-admin`` in this process (``support.run_admin``), on the running server's configuration."""
    return support.run_admin(*args, config=site.config.path)


def test_trust_space_changes_apply_to_the_running_server(
    site: ServerThread, pki: support.TestPKI, peer_certs: dict[str, tuple[Path, Path]]
) -> None:
    newcomer = "dr@nouvel-operateur.test"
    assert submit(site, pki, PRO, newcomer, "avant").startswith(OUTSIDE_TRUST)
    r = admin(site, "trust", "add", "nouvel-operateur.test", "--mta-host", "127.0.0.1", "--mta-port", "1")
    assert r.returncode == 0, r.stderr
    assert submit(site, pki, PRO, newcomer, "après") == OK  # no restart

    r = admin(site, "trust", "suspend", OTHER)
    assert r.returncode == 0, r.stderr
    try:
        assert submit(site, pki, PRO, REMOTE_PRO, "suspendu").startswith("451 4.7.1")
        assert via_mx(site, pki, peer_certs[OTHER_DN], REMOTE_PRO, PRO, "suspendu").startswith("451 4.7.1")
    finally:
        assert admin(site, "trust", "resume", OTHER).returncode == 0
    assert via_mx(site, pki, peer_certs[OTHER_DN], REMOTE_PRO, PRO, "de retour") == OK

    r = admin(site, "trust", "remove", "nouvel-operateur.test")
    assert r.returncode == 0, r.stderr
    assert submit(site, pki, PRO, newcomer, "retiré").startswith(OUTSIDE_TRUST)


# --- TLS on the MX: only the MSSanté suites --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cipher", "connects"),
    [
        ("AES128-SHA", False),
        ("AES256-GCM-SHA384", False),
        ("ECDHE-RSA-AES128-GCM-SHA256", True),
        ("ECDHE-RSA-AES256-SHA384", True),
    ],
)
def test_openssl_with_a_cipher_outside_the_mssante_suites_cannot_connect(
    site: ServerThread, pki: support.TestPKI, peer_certs: dict[str, tuple[Path, Path]], cipher: str, connects: bool
) -> None:
    require_tool("openssl")
    cert, key = peer_certs[OTHER_DN]
    r = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{site.port('mx')}",
            "-starttls",
            "smtp",
            "-tls1_2",
            "-cipher",
            cipher,
            "-CAfile",
            str(pki.ca_file),
            "-cert",
            str(cert),
            "-key",
            str(key),
            "-brief",
        ],
        input="QUIT\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    if connects:
        assert r.returncode == 0, r.stderr
        assert f"Ciphersuite: {cipher}" in r.stderr
    else:
        assert r.returncode != 0
        assert "CONNECTION ESTABLISHED" not in r.stderr and "Ciphersuite" not in r.stderr, r.stderr


# --- submission: nobody sends in another's name ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{"From": f"Dr Wilson <{PRO2_FOR_REPLY}>"}, {"Sender": ORG}, {"From": f"{PRO}, {PRO2_FOR_REPLY}"}],
    ids=["someone-elses-from", "someone-elses-sender", "a-second-author"],
)
def test_from_and_sender_must_be_the_authenticated_address(
    site: ServerThread, pki: support.TestPKI, headers: dict[str, str]
) -> None:
    tag = marker()
    raw = message(PRO, PATIENT, f"usurpation {tag}")
    for name, value in headers.items():
        raw = raw.replace(f"From: {PRO}\r\n".encode(), b"") if name == "From" else raw
        raw = f"{name}: {value}\r\n".encode() + raw
    s = smtplib.SMTP("127.0.0.1", site.port("submission"), timeout=30)
    try:
        s.starttls(context=tls_client(pki))
        s.login(PRO, support.PASSWORD)
        got = transaction(s, PRO, PATIENT, raw)
    finally:
        s.quit()
    assert got.startswith("550 5.7.1 The From and Sender header fields must hold your own address"), got
    assert copies(site, tag) == 0  # only this test's message: other tests' mail may still be on its way
