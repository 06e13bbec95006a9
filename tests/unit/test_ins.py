"""INS matricule: 15 characters, NIR/NIA + key = 97 - (number mod 97), Corsica 2A/2B counted as 19/18."""

import pytest

from directory.errors import InvalidIdentifier
from directory.ins import validate_ins


@pytest.mark.parametrize(
    ("ins", "canonical"),
    [
        ("279035121518989", "279035121518989"),  # the ANS example patient
        ("295109912611193", "295109912611193"),
        ("253072A07300443", "253072A07300443"),  # Corsica, 2A -> 19
        ("253072b07300470", "253072B07300470"),  # Corsica, 2B -> 18, lower case accepted
        ("185077505612323", "185077505612323"),
    ],
)
def test_valid(ins: str, canonical: str) -> None:
    assert validate_ins(ins) == canonical


@pytest.mark.parametrize(
    ("ins", "why"),
    [
        ("288091234567823", "wrong key: 23 given, 94 expected"),  # ANS placeholder, not a real key
        ("253097812634581", "wrong key"),
        ("27903512151898", "15 characters"),
        ("2790351215189890", "15 characters"),
        ("27903512151898X", "digits"),
        ("253072C07300443", "digits, with 2A or 2B"),
    ],
)
def test_invalid(ins: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_ins(ins)
