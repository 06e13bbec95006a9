"""The mailboxes every account has, and UIDVALIDITY.

Every account: INBOX, Sent, Drafts, Trash, Junk (RFC 6154 SPECIAL-USE).
Patients also: the vault ``Documents`` with its children, and ``Agenda``
(docs/DESIGN.md, "Special mailboxes"). Hierarchy delimiter: "/".

Mailbox CREATE / DELETE / RENAME / SUBSCRIBE live here (the IMAP session calls
them in its unit of work). Invariants:
- every superior name of a mailbox exists (CREATE and RENAME create missing
  parents; DELETE refuses a mailbox that has children);
- INBOX and the special mailboxes (SPECIAL-USE ones, a patient's vault and
  agenda) cannot be deleted; INBOX, the vault and the agenda cannot be renamed
  (RENAME INBOX moves its messages to the new mailbox, RFC 3501 §6.3.5);
- a mailbox deleted and created again gets a larger UIDVALIDITY, even within the same second, in
  another process or after a restart: the account row keeps the largest one it ever had
  (``accounts.uidvalidity_high``), raised in the transaction of the CREATE or DELETE;
- locks are taken in one order on every path: the account row (UIDVALIDITY), then mailbox rows by id,
  then messages, then the audit head;
- CREATE, DELETE, RENAME and SUBSCRIBE publish the account's channel
  (``notify.account_channel``) after their commit: NOTIFY sessions list again.
"""

from __future__ import annotations

from mailserver.errors import MailboxCannot, MailboxExists, MailboxHasChildren, MailboxNotFound
from mailserver.notify import account_channel
from mailserver.store.models import Mailbox
from mailserver.store.repositories.mail import INBOX, canonical_name
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
    """A UIDVALIDITY larger than any this account's mailboxes ever had: the clock (``uow.clock``, the one the
    server injects), or one more than the largest.

    RFC 3501 §2.3.1.1: a mailbox deleted and re-created under the same name must get a new one, and a
    client compares them as numbers, so they only grow. The account row's high-water mark is raised and
    read in one statement (its row lock serialises two CREATEs of one account, in any process); the
    mailboxes that exist bound it from below too (accounts opened in bulk start at 0).
    """
    largest = await uow.mailboxes.largest_uidvalidity(account_id) or 0
    now = int(uow.clock().timestamp())  # the injected clock (a test moves it; it never sleeps)
    return await uow.accounts.next_uidvalidity(account_id, at_least=max(now, largest + 1))


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


MAX_NAME = 500  # characters; the column holds 512


def validate_name(name: str) -> str:
    """A mailbox name as stored (INBOX canonical, trailing delimiter dropped), or MailboxCannot saying why not."""
    if name.endswith(DELIMITER):
        name = name.rstrip(DELIMITER)
    if not name:
        raise MailboxCannot("A mailbox name cannot be empty")
    if len(name) > MAX_NAME:
        raise MailboxCannot(f"A mailbox name is at most {MAX_NAME} characters")
    if name.startswith(DELIMITER) or DELIMITER * 2 in name:
        raise MailboxCannot(f"A mailbox name cannot start with {DELIMITER!r} or hold an empty level")
    if any(ch in name for ch in "*%") or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise MailboxCannot("A mailbox name cannot hold *, % or control characters")
    return canonical_name(name)


def parents(name: str) -> list[str]:
    """The superior names of ``name``, outermost first: a/b/c -> [a, a/b]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:i]) for i in range(1, len(levels))]


def is_protected(mailbox: Mailbox, *, patient: bool) -> bool:
    """INBOX, SPECIAL-USE mailboxes and (for a patient) the vault and agenda cannot be deleted."""
    if mailbox.name == INBOX or mailbox.special_use:
        return True
    return patient and (mailbox.name in PATIENT_EXTRA)


async def _create_missing(uow: UnitOfWork, account_id: int, names: list[str]) -> None:
    for n in names:
        if await uow.mailboxes.get(account_id, n) is None:
            await uow.mailboxes.create(account_id, n, uidvalidity=await next_uidvalidity(uow, account_id))


async def create_mailbox(uow: UnitOfWork, account_id: int, name: str) -> Mailbox:
    """RFC 3501 §6.3.3: create ``name`` (and any missing superior names)."""
    canonical = validate_name(name)
    if await uow.mailboxes.get(account_id, canonical) is not None:
        raise MailboxExists(f"Mailbox {canonical!r} already exists")
    await _create_missing(uow, account_id, parents(canonical))
    uow.touch(account_channel(account_id))
    return await uow.mailboxes.create(account_id, canonical, uidvalidity=await next_uidvalidity(uow, account_id))


async def delete_mailbox(uow: UnitOfWork, account_id: int, name: str, *, patient: bool) -> Mailbox:
    """RFC 3501 §6.3.4: delete ``name`` and its messages (blobs no other message uses go too)."""
    mailbox = await uow.mailboxes.get(account_id, name)
    if mailbox is None:
        raise MailboxNotFound(canonical_name(name))
    if mailbox.name == INBOX:
        raise MailboxCannot("INBOX cannot be deleted")
    if is_protected(mailbox, patient=patient):
        raise MailboxCannot(f"{mailbox.name} is a special mailbox of every account and cannot be deleted")
    prefix = mailbox.name + DELIMITER
    if any(m.name.startswith(prefix) for m in await uow.mailboxes.list(account_id)):
        raise MailboxHasChildren(f"{mailbox.name} has mailboxes under it: delete them first")
    await uow.accounts.keep_uidvalidity(account_id, mailbox.uidvalidity)
    blob_ids = await uow.messages.blob_ids(mailbox.id)
    await uow.mailboxes.delete(mailbox)
    await uow.blobs.delete_orphans(blob_ids)
    uow.touch(mailbox.id)
    uow.touch(account_channel(account_id))
    return mailbox


async def rename_mailbox(uow: UnitOfWork, account_id: int, old: str, new: str, *, patient: bool) -> None:
    """RFC 3501 §6.3.5: rename ``old`` and the mailboxes under it; renaming INBOX moves its messages."""
    source = await uow.mailboxes.get(account_id, old)
    if source is None:
        raise MailboxNotFound(canonical_name(old))
    target = validate_name(new)
    if await uow.mailboxes.get(account_id, target) is not None:
        raise MailboxExists(f"Mailbox {target!r} already exists")
    if target.startswith(source.name + DELIMITER):
        raise MailboxCannot("A mailbox cannot be moved under itself")
    uow.touch(account_channel(account_id))  # published only if the unit commits
    if source.name == INBOX:
        await _create_missing(uow, account_id, parents(target))
        dest = await uow.mailboxes.create(account_id, target, uidvalidity=await next_uidvalidity(uow, account_id))
        for mailbox_id in sorted((source.id, dest.id)):  # mailbox rows by id, then messages
            await uow.mailboxes.lock(mailbox_id)
        messages = await uow.messages.list(source.id)
        if messages:
            first, modseq = await uow.mailboxes.allocate(dest.id, len(messages))
            await uow.messages.add_copies(dest.id, messages, first, modseq)
            await uow.messages.expunge(source.id, [m.uid for m in messages], await uow.mailboxes.bump_modseq(source.id))
        uow.touch(source.id)
        uow.touch(dest.id)
        return
    if patient and (source.name in PATIENT_EXTRA):
        raise MailboxCannot(f"{source.name} is a special mailbox of every patient and cannot be renamed")
    await _create_missing(uow, account_id, parents(target))
    prefix = source.name + DELIMITER
    for box in await uow.mailboxes.list(account_id):
        if box.name == source.name:
            box.name = target
        elif box.name.startswith(prefix):
            box.name = target + DELIMITER + box.name[len(prefix) :]
        else:
            continue
        uow.touch(box.id)
    await uow.mailboxes.flush()


async def set_subscribed(uow: UnitOfWork, account_id: int, name: str, subscribed: bool) -> None:
    mailbox = await uow.mailboxes.get(account_id, name)
    if mailbox is None:
        raise MailboxNotFound(canonical_name(name))
    mailbox.subscribed = subscribed
    uow.touch(account_channel(account_id))
    await uow.mailboxes.flush()
