"""Identifiers of health professionals and structures: RPPS, ADELI, national ids, FINESS.

Invariants (docs/reference/mssante.md §3):
- RPPS: 11 digits, the last a Luhn check digit. Its national id (idNatPS) is
  ``8`` + RPPS (12 characters).
- ADELI: 9 characters: a département (2 digits, or ``2A``/``2B`` for Corsica)
  then 7 digits; no check digit is published, so only the form is checked. Its
  national id is ``0`` + ADELI (10 characters).
- FINESS: 9 characters with a Luhn check digit; Corsican numbers start with
  ``2A``/``2B`` and their key is not published: their form only is checked.
Every validator returns the canonical form (upper case, stripped) or raises
``InvalidIdentifier`` with a sentence saying what is wrong.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from directory.errors import InvalidIdentifier

_RPPS = re.compile(r"[0-9]{11}\Z")
_ADELI = re.compile(r"(?:[0-9]{2}|2[AB])[0-9]{7}\Z")
_FINESS = re.compile(r"[0-9]{9}\Z")
_FINESS_CORSICA = re.compile(r"2[AB][0-9]{7}\Z")


class IdType(enum.StrEnum):
    """``Type d'identifiant PP`` in the Annuaire Santé extractions."""

    ADELI = "0"
    RPPS = "8"


def luhn_ok(digits: str) -> bool:
    """The Luhn check (ISO/IEC 7812-1) over a string of digits, check digit last."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def validate_rpps(value: str) -> str:
    rpps = value.strip()
    if not _RPPS.match(rpps):
        raise InvalidIdentifier(f"RPPS {value!r} must be 11 digits")
    if not luhn_ok(rpps):
        raise InvalidIdentifier(f"RPPS {value!r} has a wrong check digit (Luhn)")
    return rpps


def validate_adeli(value: str) -> str:
    adeli = value.strip().upper()
    if len(adeli) != 9:
        raise InvalidIdentifier(f"ADELI {value!r} must have 9 characters, not {len(adeli)}")
    if not _ADELI.match(adeli):
        raise InvalidIdentifier(f"ADELI {value!r} must be 9 digits (2A or 2B allowed at the start for Corsica)")
    return adeli


def validate_finess(value: str) -> str:
    finess = value.strip().upper()
    if len(finess) != 9:
        raise InvalidIdentifier(f"FINESS {value!r} must have 9 characters, not {len(finess)}")
    if _FINESS_CORSICA.match(finess):
        return finess  # Corsica: the key of 2A/2B numbers is not published, the form is all we check
    if not _FINESS.match(finess):
        raise InvalidIdentifier(f"FINESS {value!r} must be 9 digits (or 2A/2B then 7 digits for Corsica)")
    if not luhn_ok(finess):
        raise InvalidIdentifier(f"FINESS {value!r} has a wrong check digit (Luhn)")
    return finess


@dataclass(frozen=True, slots=True)
class ProfessionalId:
    """A professional's identifier: its type, the RPPS or ADELI number, and the national id."""

    type: IdType
    value: str

    @property
    def national_id(self) -> str:
        return f"{self.type.value}{self.value}"

    def __str__(self) -> str:
        return f"{self.type.name} {self.value}"


def professional_id(id_type: str, value: str) -> ProfessionalId:
    """Validate an ``(identifier type, identifier)`` pair as the extractions give it."""
    t = id_type.strip()
    if t == IdType.RPPS.value:
        return ProfessionalId(IdType.RPPS, validate_rpps(value))
    if t == IdType.ADELI.value:
        return ProfessionalId(IdType.ADELI, validate_adeli(value))
    raise InvalidIdentifier(f"identifier type {id_type!r} is neither 8 (RPPS) nor 0 (ADELI)")


def parse_national_id(value: str) -> ProfessionalId:
    """``8`` + RPPS (12 characters) or ``0`` + ADELI (10 characters)."""
    v = value.strip().upper()
    if len(v) == 12 and v.startswith(IdType.RPPS.value):
        return ProfessionalId(IdType.RPPS, validate_rpps(v[1:]))
    if len(v) == 10 and v.startswith(IdType.ADELI.value):
        return ProfessionalId(IdType.ADELI, validate_adeli(v[1:]))
    raise InvalidIdentifier(
        f"national id {value!r} must be 8 followed by an RPPS (12 characters) or 0 followed by an ADELI (10)"
    )


def parse_professional(value: str) -> ProfessionalId:
    """What an operator types: an RPPS (11 digits), an ADELI (9 characters) or a national id."""
    v = value.strip().upper()
    if len(v) == 11:
        return ProfessionalId(IdType.RPPS, validate_rpps(v))
    if len(v) == 9:
        return ProfessionalId(IdType.ADELI, validate_adeli(v))
    return parse_national_id(v)
