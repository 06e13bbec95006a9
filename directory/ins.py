"""The INS (Identifiant National de Santé) matricule: what names a patient's mailbox.

15 characters: a 13-character NIR or NIA, then a 2-digit key.
- Positions 6-7 (the département) may be ``2A`` or ``2B`` for Corsica; for the
  key they count as ``19`` and ``18``.
- key = 97 - (the 13-character number mod 97), written on 2 digits.
The first digit is not restricted to 1/2: NIA and provisional numbers exist.
Source: docs/reference/mssante.md §3, python-stdnum ``stdnum.fr.nir``.
"""

from __future__ import annotations

import re

from directory.errors import InvalidIdentifier

_FORM = re.compile(r"[0-9]{5}(?:[0-9]{2}|2[AB])[0-9]{8}\Z")


def ins_key(first13: str) -> int:
    digits = first13[:5] + first13[5:7].replace("2A", "19").replace("2B", "18") + first13[7:]
    return 97 - int(digits) % 97


def validate_ins(value: str) -> str:
    """The INS in canonical form (upper-case ``2A``/``2B``), or InvalidIdentifier saying what is wrong."""
    ins = value.strip().upper()
    if len(ins) != 15:
        raise InvalidIdentifier(
            f"INS {value!r} must have 15 characters (13 for the NIR or NIA, 2 for the key), not {len(ins)}"
        )
    if not _FORM.match(ins):
        raise InvalidIdentifier(f"INS {value!r} must be digits, with 2A or 2B allowed at positions 6-7")
    expected = ins_key(ins[:13])
    if int(ins[13:]) != expected:
        raise InvalidIdentifier(f"INS {value!r} has the wrong key: {ins[13:]} given, {expected:02d} expected")
    return ins


def is_valid_ins(value: str) -> bool:
    try:
        validate_ins(value)
    except InvalidIdentifier:
        return False
    return True
