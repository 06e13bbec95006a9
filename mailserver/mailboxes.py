"""The mailboxes every account has, and UIDVALIDITY.

Every account: INBOX, Sent, Drafts, Trash, Junk (RFC 6154 SPECIAL-USE).
Patients also: the vault ``Documents`` with its children, and ``Agenda``
(../shared/DESIGN.md, "Special mailboxes"). Hierarchy delimiter: "/".
"""

from __future__ import annotations

import time

from sqlalchemy import func, select

from mailserver.store.models import Mailbox
from mailserver.store.uow import UnitOfWork

DELIMITER = "/"

STANDARD: tuple[tuple[str, str | None], ...] = (
    ("INBOX", None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)

VAULT = "Documents"
VAULT_CHILDREN = ("Comptes-rendus", "Resultats", "Ordonnances", "Imagerie", "Autres")
AGENDA = "Agenda"

PATIENT_EXTRA: tuple[str, ...] = (
    VAULT,
    *(f"{VAULT}{DELIMITER}{c}" for c in VAULT_CHILDREN),
    AGENDA,
)


async def next_uidvalidity(uow: UnitOfWork, account_id: int) -> int:
    """A UIDVALIDITY never used before by this account: the clock, or one more than the largest seen.

    RFC 3501 §2.3.1.1: a mailbox deleted and re-created under the same name must get a new one.
    """
    largest = (
        await uow.session.execute(select(func.max(Mailbox.uidvalidity)).where(Mailbox.account_id == account_id))
    ).scalar_one_or_none()
    return max(int(time.time()), int(largest or 0) + 1) % 2**32 or 1


async def create_default_mailboxes(uow: UnitOfWork, account_id: int, *, patient: bool) -> list[Mailbox]:
    names: list[tuple[str, str | None]] = list(STANDARD)
    if patient:
        names += [(n, None) for n in PATIENT_EXTRA]
    created = []
    for name, special in names:
        created.append(
            await uow.mailboxes.create(
                account_id, name, uidvalidity=await next_uidvalidity(uow, account_id), special_use=special
            )
        )
    return created
