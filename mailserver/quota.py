"""Quotas (RFC 9208): how much an account may hold, in octets and in messages, configured per kind of account.

Invariants:
- Quota roots: ``""``, the whole account, bounded by ``[limits] quota_<kind>``
  (STORAGE, octets) and ``[limits] quota_messages_<kind>`` (MESSAGE, a count;
  RFC 9208 §5.2), for patient, professional, organisation, application, over
  every mailbox; for a patient, ``Documents`` too, the vault, bounded by
  ``[limits] vault_quota`` (STORAGE only), over ``Documents`` and every mailbox
  under it. A limit of 0 is no limit on that resource; a root with no resource
  limited does not exist.
- Usage is what the messages weigh and how many they are (``UsageViews``: their
  RFC822 sizes, each copy counted), read when asked; no counter to drift. SMTP
  RCPT reads the account root's usage with the recipient's account, in the same
  statement (``AccountRepository.local``), and asks ``is_full`` with it.
- One rule for every door (``check``, ``admit``): a message goes into a mailbox
  only if every root over that mailbox keeps each resource at or below its
  limit once the message is in; refused whole otherwise (``OverQuota``: IMAP
  ``NO [OVERQUOTA]``; ``mailserver.admission``: SMTP ``552 5.2.2``). A MOVE is
  counted only against the roots its target has and its source has not.
- Mail from others (SMTP, the broadcast) is bounded by the account root only:
  the vault's root bounds what the patient files there (APPEND, COPY, MOVE).
- ``is_full`` (SMTP RCPT, on the usage read with the recipient's account) is
  the early look, in a read transaction of its own: it can be outrun. SMTP DATA
  has no early look: its bound is ``admit`` with ``skip_full`` (a recipient it
  does not fit is refused, the others get the message). IMAP COPY and MOVE call
  ``check`` in their writing transaction, under the anchor's lock. ``admit`` is the
  bound itself, run by ``delivery.deliver`` in the writing transaction, right
  before the rows are added: on PostgreSQL it first locks the account's
  *anchor* (its lowest mailbox row) with the target mailbox rows, all in
  ascending id order, as every writer takes mailbox rows, then reads the usage
  (READ COMMITTED: the statement sees what the previous holder committed); on
  SQLite the unit of work already holds the one writer (a delivery reads the usage
  with its target rows, in one statement; on PostgreSQL it locks the anchors with
  its target rows as it reads them). Two deliveries racing
  for the last free room are serialised: one gets in, the other is refused.
  COPY/MOVE takes the same anchor. No overshoot, whatever the concurrency.
- STORAGE is said in units of 1024 octets (RFC 9208 §5.1), usage rounded up;
  MESSAGE as an exact count (§5.2).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from mailserver.config import LimitsSection
from mailserver.errors import OverQuota
from mailserver.mailboxes import DELIMITER, VAULT
from mailserver.store.models import Account, AccountKind, Mailbox
from mailserver.store.repositories.mail import MailboxRow
from mailserver.store.repositories.quota import Usage, UsageViews
from mailserver.store.uow import UnitOfWork
from mailserver.vault import is_vault

ACCOUNT_ROOT = ""
VAULT_ROOT = VAULT


@dataclass(frozen=True, slots=True)
class Limit:
    """The limits of one quota root: octets (STORAGE) and messages (MESSAGE); 0: that resource is not limited."""

    octets: int
    messages: int = 0

    def __bool__(self) -> bool:
        return self.octets > 0 or self.messages > 0


def account_limit(limits: LimitsSection, kind: AccountKind) -> int:
    """The octets an account of ``kind`` may hold (0: no quota)."""
    return {
        AccountKind.PATIENT: limits.quota_patient,
        AccountKind.PER: limits.quota_professional,
        AccountKind.ORG: limits.quota_organisation,
        AccountKind.APP: limits.quota_application,
    }[kind]


def account_message_limit(limits: LimitsSection, kind: AccountKind) -> int:
    """The messages an account of ``kind`` may hold (0: no limit on the count)."""
    return {
        AccountKind.PATIENT: limits.quota_messages_patient,
        AccountKind.PER: limits.quota_messages_professional,
        AccountKind.ORG: limits.quota_messages_organisation,
        AccountKind.APP: limits.quota_messages_application,
    }[kind]


def limit_of(limits: LimitsSection, account: Account, root: str) -> Limit:
    """The limits of the account's quota root ``root``; falsy when the account has no such root."""
    if root == ACCOUNT_ROOT:
        return Limit(account_limit(limits, account.kind), account_message_limit(limits, account.kind))
    if root == VAULT_ROOT and account.kind is AccountKind.PATIENT:
        return Limit(limits.vault_quota)
    return Limit(0)


def root_names(limits: LimitsSection, account: Account, mailbox: str) -> tuple[str, ...]:
    """The quota roots over ``mailbox`` (RFC 9208 §4.2 GETQUOTAROOT), the account's first."""
    names = [ACCOUNT_ROOT]
    if is_vault(mailbox):
        names.append(VAULT_ROOT)
    return tuple(n for n in names if limit_of(limits, account, n))


@dataclass(frozen=True, slots=True)
class Root:
    name: str
    limit: Limit
    usage: Usage

    @property
    def resources(self) -> list[tuple[str, int, int]]:
        """(resource, usage, limit) as GETQUOTA says them: STORAGE in KiB (usage rounded up, limit down,
        RFC 9208 §5.1), MESSAGE as a count (§5.2); only the resources limited."""
        out = []
        if self.limit.octets > 0:
            out.append(("STORAGE", -(-self.usage.octets // 1024), self.limit.octets // 1024))
        if self.limit.messages > 0:
            out.append(("MESSAGE", self.usage.messages, self.limit.messages))
        return out

    def refusal(self, octets: int, messages: int = 1) -> str | None:
        """Why ``messages`` more weighing ``octets`` do not fit, in a sentence the user can act on; None if
        they fit."""
        used, count = self.usage.octets, self.usage.messages
        what = "The vault is full" if self.name == VAULT_ROOT else "The mailbox is full"
        then = "delete documents first" if self.name == VAULT_ROOT else "delete (and expunge) messages first"
        if self.limit.octets > 0 and used + octets > self.limit.octets:
            return f"{what}: it holds {used} of {self.limit.octets} bytes and this needs {octets} more; {then}"
        if self.limit.messages > 0 and count + messages > self.limit.messages:
            return f"{what}: it holds {count} of {self.limit.messages} messages and this adds {messages}; {then}"
        return None

    @property
    def full(self) -> bool:
        """Not one more octet, or not one more message."""
        return (self.limit.octets > 0 and self.usage.octets >= self.limit.octets) or (
            self.limit.messages > 0 and self.usage.messages >= self.limit.messages
        )


async def _vault_boxes(uow: UnitOfWork, account: Account) -> list[int]:
    # mailbox names are sealed: the vault's mailboxes are picked once opened
    return [
        m.id for m in await uow.mailboxes.list(account.id) if m.name == VAULT or m.name.startswith(VAULT + DELIMITER)
    ]


async def root(uow: UnitOfWork, limits: LimitsSection, account: Account, name: str) -> Root | None:
    """The account's quota root ``name`` with its usage, or None if it has none of that name."""
    limit = limit_of(limits, account, name)
    if not limit:
        return None
    boxes = await _vault_boxes(uow, account) if name == VAULT_ROOT else None
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
    messages: int = 1,
    moved_from: str | None = None,
    roots_only: tuple[str, ...] | None = None,
) -> None:
    """Raise ``OverQuota`` if ``messages`` more weighing ``octets`` in ``mailbox`` would take one of its roots
    past a limit.

    ``moved_from``: the messages leave that mailbox (a MOVE); ``roots_only``: look at these roots only."""
    for r in await roots(uow, limits, account, mailbox, besides=moved_from):
        if roots_only is not None and r.name not in roots_only:
            continue
        why = r.refusal(octets, messages)
        if why is not None:
            raise OverQuota(why)


def bounds_accounts(limits: LimitsSection) -> bool:
    """Does any kind of account have a root (``is_full`` could say yes)?"""
    return any(account_limit(limits, k) or account_message_limit(limits, k) for k in AccountKind)


def is_full(limits: LimitsSection, account: Account, usage: Usage) -> bool:
    """No room left in the account's root, which holds ``usage``: not one more octet or message (SMTP RCPT,
    before the message). ``usage`` is read by the caller in its own unit of work (``AccountRepository.local``
    reads it with the account, in the same statement), as ``root`` would read it."""
    limit = limit_of(limits, account, ACCOUNT_ROOT)
    return bool(limit) and Root(ACCOUNT_ROOT, limit, usage).full


async def lock_anchor(uow: UnitOfWork, account_id: int, mailbox_ids: Collection[int]) -> None:
    """COPY/MOVE: lock the account's anchor with ``mailbox_ids``, in ascending id order (see the invariants)."""
    await UsageViews(uow.session).lock_anchors([account_id], mailbox_ids)


async def admit(
    uow: UnitOfWork,
    limits: LimitsSection,
    copies: Sequence[tuple[Account, Mailbox | MailboxRow, int]],
    *,
    vault_too: bool = False,
    skip_full: bool = False,
    usage: Mapping[int, Usage] | None = None,
    anchors_locked: bool = False,
) -> set[int]:
    """The bound itself, in the writing transaction (see the invariants): may these copies ``(recipient,
    mailbox, size)`` go in? Locks the recipients' anchors and the target mailbox rows first. ``usage``: the
    accounts' usage as this unit of work read it with the target rows (SQLite only, whose unit holds the one
    writer from its start: ``MailboxRepository.rows_and_usage``); on PostgreSQL it is read here, always, after
    the anchors are locked. ``anchors_locked``: the caller read the target rows and locked them with every
    recipient's anchor, in ascending id order (``MailboxRepository.rows_locked``): not locked again.

    Raises ``OverQuota`` for the first recipient they do not fit, or with ``skip_full`` returns the ids of
    those (their copies are to be left out). ``vault_too``: the vault's root bounds copies into it (the patient
    filing, APPEND), else the account's root only (mail from others)."""
    need: dict[int, tuple[Account, int, int]] = {}
    vault_need: dict[int, tuple[int, int]] = {}
    for account, mb, size in copies:
        _, octets, count = need.get(account.id, (account, 0, 0))
        need[account.id] = (account, octets + size, count + 1)
        if vault_too and is_vault(mb.name):
            v_octets, v_count = vault_need.get(account.id, (0, 0))
            vault_need[account.id] = (v_octets + size, v_count + 1)
    bounded = {a_id for a_id, (a, _, _) in need.items() if limit_of(limits, a, ACCOUNT_ROOT)}
    bounded |= {a_id for a_id in vault_need if limit_of(limits, need[a_id][0], VAULT_ROOT)}
    if not bounded:
        return set()
    views = UsageViews(uow.session)
    if usage is None or not uow.db.is_sqlite:
        if not anchors_locked:
            await views.lock_anchors(sorted(bounded), {mb.id for a, mb, _ in copies if a.id in bounded})
        usage = await views.usage_many(sorted(bounded))  # READ COMMITTED: what the previous holder committed
    over: set[int] = set()
    for a_id in sorted(bounded):
        account, octets, count = need[a_id]
        checks = []
        if limit := limit_of(limits, account, ACCOUNT_ROOT):
            checks.append((Root(ACCOUNT_ROOT, limit, usage.get(a_id, Usage(0, 0))), octets, count))
        if a_id in vault_need and (limit := limit_of(limits, account, VAULT_ROOT)):
            in_vault = await views.usage(a_id, mailbox_ids=await _vault_boxes(uow, account))
            checks.append((Root(VAULT_ROOT, limit, in_vault), *vault_need[a_id]))
        for r, o, n in checks:
            why = r.refusal(o, n)
            if why is None:
                continue
            if not skip_full:
                raise OverQuota(why)
            over.add(a_id)
            break
    return over
