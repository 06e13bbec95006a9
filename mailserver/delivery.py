"""The one path a message takes into a mailbox: SMTP DATA, IMAP APPEND, the queue and imports all call ``deliver``.

Invariants:
- ``deliver`` classifies, seals each copy with its recipient's data key and
  adds the rows to the caller's unit of work; it never commits. The caller
  commits, and only then answers ``250`` / ``OK``: IDLE sessions are woken by
  the commit (``uow.touch``), never before.
- Each recipient gets their own sealed copy (no blob is shared across accounts).
- UIDs are allocated last, mailbox rows in ascending id order, so the row locks
  are held briefly and two deliveries cannot deadlock.
- Parsing, filing and sealing need no database (``seal``): callers that can run
  it before opening their unit of work, so that no writer waits on them.
- The message is parsed once, by the door (``mailserver.message``): ``deliver``
  reads the ``ParsedMessage`` it is given (bytes are parsed here, leniently, for
  callers that build a message themselves: reports, imports, tests).
- The agenda (``mailserver.agenda.file``) sees each copy after it is added, in
  the same unit of work: an invitation to a patient also becomes the event
  message in ``Agenda``; a calendar that does not read files nothing more.
- A shredded account (``KeyDestroyed``) cannot receive: the error propagates and
  the whole unit of work rolls back, nothing half-delivered.
- The vault (``file_documents``, a professional's message): each patient
  recipient also gets one message per health document in its ``Documents/``
  child (``mailserver.vault``), added with the INBOX copy in the same unit of
  work and the same ordered UID allocation: both or neither. A recipient in
  ``unfiled`` (a package its vault cannot integrate, ``mailserver.mdn``) gets the
  INBOX copy only.
- Quotas (``limits`` given: ``mailserver.quota.admit``): checked in the caller's
  transaction, after the recipients' anchors and target mailbox rows are locked
  and before any row is added, so that no concurrent delivery can overshoot. A
  copy that does not fit refuses the whole delivery (``OverQuota``), or with
  ``skip_full`` leaves that recipient out (``DeliveryResult.skipped``). Without
  ``limits`` (reports, reminders, notices the server writes itself) nothing is
  bounded.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

from crypto.envelope import Keyring
from mailserver import agenda, metrics, quota, vault
from mailserver.bodies import account_key, seal_blob
from mailserver.config import LimitsSection
from mailserver.message import PARSE_IN_THREAD, ParsedMessage, parse_message_async
from mailserver.message.offload import in_thread
from mailserver.store.models import Account, AccountKind, Blob
from mailserver.store.models.base import utcnow
from mailserver.store.repositories.mail import INBOX, MailboxRow, canonical_name
from mailserver.store.uow import UnitOfWork


class DeliveryError(Exception):
    """The message cannot be delivered to this recipient; nothing was stored for anyone."""


class MailboxMissing(DeliveryError):
    pass


@dataclass(frozen=True, slots=True)
class Delivered:
    account_id: int
    address: str
    mailbox_id: int
    mailbox: str
    uid: int
    modseq: int
    uidvalidity: int


@dataclass
class DeliveryResult:
    delivered: list[Delivered] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)  # account ids left out, their quota full (``skip_full``)


def encode_flags(flags: Iterable[str]) -> str:
    """Flags already in their stored form (``mailserver.flags``: keywords sealed) joined: unique, sorted."""
    return " ".join(sorted(set(flags)))


def classify(message: ParsedMessage, account: Account) -> str:
    """The mailbox a message from outside is filed into. Vault and agenda filing rules come with
    the vault and agenda work; until then everything goes to INBOX."""
    return INBOX


@dataclass(frozen=True, slots=True)
class Sealed:
    """A message made ready for ``deliver`` before any transaction: parsed, filed and sealed per recipient."""

    message: ParsedMessage
    when: dt.datetime
    copies: list[tuple[Account, str, Blob, int, str]]  # (recipient, mailbox name, sealed blob, size, how)


async def seal(
    keyring: Keyring,
    message: ParsedMessage | bytes,
    recipients: Sequence[Account],
    *,
    mailbox: str | None = None,
    internal_date: dt.datetime | None = None,
    source: str = "smtp",
    file_documents: bool = False,
    unfiled: Collection[int] = (),
) -> Sealed:
    """Everything ``deliver`` does that needs no database: parse (bytes), classify, build the vault's
    messages, seal each copy with its recipient's key. A caller runs it before opening its unit of work,
    so that no writer waits on the cipher. ``unfiled``: account ids whose vault gets nothing (see ``deliver``)."""
    when = internal_date or utcnow()
    if isinstance(message, bytes):
        message = await parse_message_async(message, strict=False)
    raw = message.raw
    # what goes where: the message itself for every recipient, then (the vault) one message per health document
    # for each patient recipient
    wanted: list[tuple[Account, str, ParsedMessage | None, str]] = [
        (account, mailbox or classify(message, account), None, source) for account in recipients
    ]
    patients = [a for a in recipients if a.kind is AccountKind.PATIENT and a.id not in unfiled]
    if file_documents and mailbox is None and patients:
        big = message.size > PARSE_IN_THREAD  # building and parsing the vault messages, off the event loop
        filings = await in_thread(vault.filings, message, when=when) if big else vault.filings(message, when=when)
        wanted += [(account, f.mailbox, f.message, "vault") for f in filings for account in patients]
    metas = {id(message): message.imap_meta()}
    copies: list[tuple[Account, str, Blob, int, str]] = []
    for account, name, filed, how in wanted:
        body = filed or message
        if id(body) not in metas:
            metas[id(body)] = body.imap_meta()
        blob = seal_blob(account_key(keyring, account), account.id, body.raw, metas[id(body)])
        copies.append((account, name, blob, body.size if filed is not None else len(raw), how))
    return Sealed(message, when, copies)


async def deliver(
    uow: UnitOfWork,
    keyring: Keyring,
    message: ParsedMessage | bytes,
    recipients: Sequence[Account],
    *,
    mailbox: str | None = None,
    flags: Iterable[str] = (),
    internal_date: dt.datetime | None = None,
    actor: str = "system",
    source: str = "smtp",
    file_documents: bool = False,
    unfiled: Collection[int] = (),
    sealed: Sealed | None = None,
    limits: LimitsSection | None = None,
    skip_full: bool = False,
) -> DeliveryResult:
    """Add one copy of ``message`` per recipient to the unit of work. ``mailbox`` forces the
    target (APPEND); otherwise ``classify`` chooses. ``flags``: in their stored form, the keywords sealed
    (``mailserver.flags.FlagCodec``, one account: APPEND). ``file_documents``: the message comes from a
    professional, an organisation or an application, and its documents go to patients' vaults too, except the
    vaults of ``unfiled`` (account ids: a package their vault cannot integrate, told by an MDN).
    ``sealed``: what ``seal`` made of the same arguments beforehand (else it is done here).
    ``limits``: bound the copies by the recipients' quotas (the vault's root too when ``mailbox`` forces a
    target: the owner filing); ``skip_full``: a recipient they do not fit is skipped rather than refusing all.
    The caller commits."""
    if sealed is None:
        sealed = await seal(
            keyring,
            message,
            recipients,
            mailbox=mailbox,
            internal_date=internal_date,
            source=source,
            file_documents=file_documents,
            unfiled=unfiled,
        )
    message, when = sealed.message, sealed.when
    stored_flags = encode_flags(flags)
    # mailboxes looked up and rows written in bulk (a broadcast or a message to a hundred recipients is a handful
    # of statements, not a handful per copy)
    pairs = [(account.id, name) for account, name, _, _, _ in sealed.copies]
    usage = None
    if limits is not None and uow.db.is_sqlite:  # the one writer is this unit's: the usage read with the rows
        boxes, usage = await uow.mailboxes.rows_and_usage(pairs)
    elif limits is not None:  # the quota's lock (every recipient's anchor) taken with the read of the rows
        boxes = await uow.mailboxes.rows_locked(pairs)
    else:
        boxes = await uow.mailboxes.rows_many(pairs)
    targets: list[tuple[Account, MailboxRow, Blob, int, str]] = []
    for account, name, blob, size, how in sealed.copies:
        mb = boxes.get((account.id, canonical_name(name)))
        if mb is None:
            raise MailboxMissing(f"mailbox {name} does not exist for account {account.id}")
        targets.append((account, mb, blob, size, how))
    result = DeliveryResult()
    if limits is not None:
        over = await quota.admit(
            uow,
            limits,
            [(t[0], t[1], t[3]) for t in targets],
            vault_too=mailbox is not None,
            skip_full=skip_full,
            usage=usage,
            anchors_locked=uow.db.is_postgresql,
        )
        if over:
            targets = [t for t in targets if t[0].id not in over]
            result.skipped = sorted(over)
        if not targets:
            return result
    targets.sort(key=lambda t: t[1].id)  # stable: copies into one mailbox keep their order
    placed = await uow.messages.place(
        [(blob, mb.id, size) for _, mb, blob, size, _ in targets],
        flags=stored_flags,
        when=when,
        locked=limits is not None and uow.db.is_postgresql,  # rows_locked above
    )
    for (account, mb, _blob, _size, how), (uid, modseq) in zip(targets, placed, strict=True):
        uow.touch(mb.id)
        uow.audit(actor, "deliver", f"account:{account.id}/mailbox:{mb.id}/uid:{uid}", "ok", how)
        result.delivered.append(Delivered(account.id, account.address, mb.id, mb.name, uid, modseq, mb.uidvalidity))
        uow.after_commit(metrics.DELIVERIES.labels(how).inc)  # once, when it commits (not once a retried run)
    # the agenda: invitations, updates, cancellations, replies, for the copies of the message itself (not the
    # vault's); after every copy, so mailbox rows stay locked in ascending order within each phase
    for (account, mb, _blob, _size, how), d in zip(targets, result.delivered, strict=True):
        if how != "vault":
            await agenda.file(uow, keyring, message, account, mb, d.uid, actor=actor)
    return result
