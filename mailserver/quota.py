"""Storage quotas (RFC 9208): how much an account may hold, configured per kind of account.

Invariants:
- Quota roots: ``""``, the whole account, bounded by ``[limits] quota_<kind>``
  (patient, professional, organisation, application), over every mailbox; for
  a patient, ``Documents`` too, the vault, bounded by ``[limits] vault_quota``,
  over ``Documents`` and every mailbox under it. A limit of 0 is no quota: that
  root does not exist.
- Usage is what the messages weigh (``UsageViews``: their RFC822 sizes, each
  copy counted), read when asked; no counter to drift.
- One rule for every door (``check``): a message goes into a mailbox only if
  every root over that mailbox keeps its usage at or below its limit once the
  message is in; refused whole otherwise (``OverQuota``: IMAP ``NO
  [OVERQUOTA]``; ``mailserver.admission``: SMTP ``552 5.2.2``). A MOVE is
  counted only against the roots its target has and its source has not.
- Mail from others (SMTP) is bounded by the account root only: the vault's
  root bounds what the patient files there (APPEND, COPY, MOVE).
- The check reads usage before the write, in its own transaction: two messages
  racing for the last free octets may both get in (a soft bound, as Dovecot's).
- STORAGE is said in units of 1024 octets (RFC 9208 §5.1), usage rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailserver.config import LimitsSection
from mailserver.errors import OverQuota
from mailserver.mailboxes import DELIMITER, VAULT
from mailserver.store.models import Account, AccountKind
from mailserver.store.repositories.quota import Usage, UsageViews
from mailserver.store.uow import UnitOfWork
from mailserver.vault import is_vault

ACCOUNT_ROOT = ""
VAULT_ROOT = VAULT


def account_limit(limits: LimitsSection, kind: AccountKind) -> int:
    """The octets an account of ``kind`` may hold (0: no quota)."""
    return {
        AccountKind.PATIENT: limits.quota_patient,
        AccountKind.PER: limits.quota_professional,
        AccountKind.ORG: limits.quota_organisation,
        AccountKind.APP: limits.quota_application,
    }[kind]


def limit_of(limits: LimitsSection, account: Account, root: str) -> int:
    """The limit of the account's quota root ``root`` in octets; 0 when the account has no such root."""
    if root == ACCOUNT_ROOT:
        return account_limit(limits, account.kind)
    if root == VAULT_ROOT and account.kind is AccountKind.PATIENT:
        return limits.vault_quota
    return 0


def root_names(limits: LimitsSection, account: Account, mailbox: str) -> tuple[str, ...]:
    """The quota roots over ``mailbox`` (RFC 9208 §4.2 GETQUOTAROOT), the account's first."""
    names = [ACCOUNT_ROOT]
    if is_vault(mailbox):
        names.append(VAULT_ROOT)
    return tuple(n for n in names if limit_of(limits, account, n) > 0)


@dataclass(frozen=True, slots=True)
class Root:
    name: str
    limit: int  # octets
    usage: Usage

    @property
    def storage(self) -> tuple[int, int]:
        """(usage, limit) in KiB, as STORAGE is said (usage rounded up, limit down)."""
        return -(-self.usage.octets // 1024), self.limit // 1024

    def refusal(self, octets: int) -> str:
        """Why ``octets`` more do not fit, in a sentence the user can act on."""
        used = self.usage.octets
        if self.name == VAULT_ROOT:
            return (
                f"The vault is full: it holds {used} of {self.limit} bytes and this document needs {octets} more; "
                "delete documents first"
            )
        return (
            f"The mailbox is full: it holds {used} of {self.limit} bytes and this needs {octets} more; "
            "delete (and expunge) messages first"
        )


async def root(uow: UnitOfWork, limits: LimitsSection, account: Account, name: str) -> Root | None:
    """The account's quota root ``name`` with its usage, or None if it has none of that name."""
    limit = limit_of(limits, account, name)
    if limit <= 0:
        return None
    boxes = None
    if name == VAULT_ROOT:  # mailbox names are sealed: the vault's mailboxes are picked once opened
        boxes = [
            m.id
            for m in await uow.mailboxes.list(account.id)
            if m.name == VAULT or m.name.startswith(VAULT + DELIMITER)
        ]
    return Root(name, limit, await UsageViews(uow.session).usage(account.id, mailbox_ids=boxes))


async def roots(
    uow: UnitOfWork, limits: LimitsSection, account: Account, mailbox: str, *, besides: str | None = None
) -> list[Root]:
    """The roots over ``mailbox`` with their usage; with ``besides``, not those that are over that one too."""
    skip = set(root_names(limits, account, besides)) if besides is not None else set()
    out = []
    for name in root_names(limits, account, mailbox):
        if name not in skip:
            found = await root(uow, limits, account, name)
            if found is not None:
                out.append(found)
    return out


async def check(
    uow: UnitOfWork,
    limits: LimitsSection,
    account: Account,
    mailbox: str,
    octets: int,
    *,
    moved_from: str | None = None,
    roots_only: tuple[str, ...] | None = None,
) -> None:
    """Raise ``OverQuota`` if ``octets`` more in ``mailbox`` would take one of its roots past its limit.

    ``moved_from``: the octets leave that mailbox (a MOVE); ``roots_only``: look at these roots only."""
    for r in await roots(uow, limits, account, mailbox, besides=moved_from):
        if roots_only is not None and r.name not in roots_only:
            continue
        if r.usage.octets + octets > r.limit:
            raise OverQuota(r.refusal(octets))


async def is_full(uow: UnitOfWork, limits: LimitsSection, account: Account) -> bool:
    """No room left in the account's root: not one more octet (SMTP RCPT, before the message is known)."""
    r = await root(uow, limits, account, ACCOUNT_ROOT)
    return r is not None and r.usage.octets >= r.limit
