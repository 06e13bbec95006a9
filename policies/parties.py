"""What a decision needs to know about a sender or a recipient, in the policies' own vocabulary.

``directory`` maps its accounts and trust-space entries to a ``Party``; policies
never look anything up themselves.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    PROFESSIONAL = "professional"  # PER, ORG (and CAB) mailboxes, here or at another operator
    APPLICATION = "application"  # APP mailboxes: software
    PATIENT = "patient"  # an INS mailbox, here or at another operator's patient domain
    UNKNOWN = "unknown"  # a local domain, but no such account
    OUTSIDE = "outside"  # a domain outside the trust space


class Status(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"
    SUSPENDED = "suspended"
    OPPOSED = "opposed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Party:
    address: str
    role: Role
    local: bool  # a mailbox of this server (False: another operator's)
    status: Status = Status.ACTIVE  # for another operator: that operator's status in the trust space
    profession_code: str | None = None  # Annuaire Santé profession code, e.g. "21" pharmacist
