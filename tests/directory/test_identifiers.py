"""RPPS, ADELI, national ids, FINESS, INS: real-format examples (docs/reference/mssante.md §3) and wrong keys."""

from __future__ import annotations

import pytest

from directory.errors import InvalidIdentifier
from directory.identifiers import (
    IdType,
    luhn_ok,
    parse_national_id,
    parse_professional,
    professional_id,
    validate_adeli,
    validate_finess,
    validate_rpps,
)
from directory.ins import validate_ins


@pytest.mark.parametrize("rpps", ["10001045367", "10100224947", "10104335319"])  # RPPS of PS_LibreAcces rows
def test_real_rpps(rpps: str) -> None:
    assert validate_rpps(rpps) == rpps
    assert parse_national_id("8" + rpps).value == rpps
    assert parse_professional(f" {rpps} ").national_id == "8" + rpps


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("10001045368", "wrong check digit"),  # last digit changed
        ("10001045376", "wrong check digit"),  # two digits swapped
        ("1000104536", "11 digits"),
        ("100010453670", "11 digits"),
        ("1000104536A", "11 digits"),
    ],
)
def test_bad_rpps(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_rpps(value)


def test_worked_luhn_example() -> None:
    # §3: for 10001045367 the doubled-digit sum is 20, 20 mod 10 = 0
    assert luhn_ok("10001045367") and not luhn_ok("10001045360")


@pytest.mark.parametrize("adeli", ["012600631", "759124159", "629400748", "2A0012345", "2b0012345"])
def test_adeli(adeli: str) -> None:
    assert validate_adeli(adeli) == adeli.upper()
    assert parse_national_id("0" + adeli).type is IdType.ADELI


@pytest.mark.parametrize(
    ("value", "why"), [("01260063", "9 characters"), ("0126006311", "9 characters"), ("2C0012345", "9 digits")]
)
def test_bad_adeli(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_adeli(value)


@pytest.mark.parametrize(
    "finess", ["010000024", "010780054", "750048886", "630013605", "140028093", "750712184", "130783293"]
)
def test_real_finess(finess: str) -> None:
    assert validate_finess(finess) == finess


@pytest.mark.parametrize("finess", ["2A0000017", "2b0001234"])
def test_corsican_finess_is_checked_for_form_only(finess: str) -> None:
    assert validate_finess(finess) == finess.upper()


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("750048887", "wrong check digit"),
        ("75004888", "9 characters"),
        ("2C0000017", "9 digits"),
        ("2A000001X", "9 digits"),
    ],
)
def test_bad_finess(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_finess(value)


def test_national_ids() -> None:
    assert professional_id("8", "10001045367").national_id == "810001045367"
    assert professional_id("0", "012600631").national_id == "0012600631"
    with pytest.raises(InvalidIdentifier, match="neither 8"):
        professional_id("3", "10001045367")
    for bad in ("810001045368", "910001045367", "10001045367", "00126006311"):
        with pytest.raises(InvalidIdentifier):
            parse_national_id(bad)


@pytest.mark.parametrize(
    ("ins", "ok"),
    [
        ("279035121518989", True),  # the ANS example patient
        ("295109912611193", True),
        ("253072A07300443", True),  # 2A counts as 19
        ("253072B07300470", True),  # 2B counts as 18
        ("253072A07300470", False),  # the 2B key under 2A
        ("288091234567823", False),  # the ANS HL7v2 placeholder: wrong key
        ("253097812634581", False),
    ],
)
def test_ins(ins: str, ok: bool) -> None:
    if ok:
        assert validate_ins(ins) == ins
    else:
        with pytest.raises(InvalidIdentifier, match="wrong key"):
            validate_ins(ins)
