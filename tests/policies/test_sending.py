"""The who-may-write-to-whom table of DESIGN.md, restated row by row."""

import pytest

from policies import Party, Role, Status, may_send
from policies.reply import Reply

PRO = Party("dr@hopital.test", Role.PROFESSIONAL, local=True)
APP = Party("labo@hopital.test", Role.APPLICATION, local=True)
PATIENT = Party("279035121518989@patient.masante.fr", Role.PATIENT, local=True)
OTHER_PATIENT = Party("185077505612323@patient.masante.fr", Role.PATIENT, local=True)
OUTSIDE = Party("someone@gmail.com", Role.OUTSIDE, local=False)
PHARMACIST = Party("pharma@officine.test", Role.PROFESSIONAL, local=False, profession_code="21")


@pytest.mark.parametrize(
    ("sender", "recipient", "grant", "allowed", "code"),
    [
        (PRO, PRO, False, True, 250),
        (PRO, APP, False, True, 250),
        (PRO, PATIENT, False, True, 250),
        (PRO, OUTSIDE, False, False, 550),
        (APP, PRO, False, True, 250),
        (APP, APP, False, True, 250),
        (APP, PATIENT, False, True, 250),
        (APP, OUTSIDE, False, False, 550),
        (PATIENT, PRO, False, False, 550),
        (PATIENT, PRO, True, True, 250),
        (PATIENT, APP, True, False, 550),
        (PATIENT, OTHER_PATIENT, True, False, 550),
        (PATIENT, OUTSIDE, True, False, 550),
        (PATIENT, PHARMACIST, False, True, 250),
        (OUTSIDE, PRO, False, False, 550),
        (OUTSIDE, PATIENT, False, False, 550),
    ],
)
def test_table(sender: Party, recipient: Party, grant: bool, allowed: bool, code: int) -> None:
    d = may_send(sender, recipient, patient_has_grant=grant)
    assert d.allowed is allowed and d.reply.code == code
    if not allowed:
        assert d.reply.enhanced.startswith("5.7.") and len(d.reply.text) > 20


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.CLOSED, "550 5.2.1"),
        (Status.OPPOSED, "550 5.2.1"),
        (Status.DISABLED, "550 5.2.1"),
        (Status.SUSPENDED, "450 4.2.1"),
    ],
)
def test_recipient_state_comes_first(status: Status, expected: str) -> None:
    patient = Party(PATIENT.address, Role.PATIENT, local=True, status=status)
    assert str(may_send(PRO, patient).reply).startswith(expected)


def test_unknown_local_recipient() -> None:
    assert str(may_send(PRO, Party("nobody@hopital.test", Role.UNKNOWN, local=True)).reply).startswith("550 5.1.1")


def test_reply_validates() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        Reply(550, "4.7.1", "x")
    with pytest.raises(ValueError, match="one line"):
        Reply(550, "5.7.1", "a\r\nb")
    assert str(Reply(550, "5.7.1", "No")) == "550 5.7.1 No"
