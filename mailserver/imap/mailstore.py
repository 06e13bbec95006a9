"""The mail services an IMAP session calls: one account's mailboxes and messages, typed results only.

Invariants:
- Every method opens its own unit of work and closes it before returning: no
  database session outlives a command, none is held while a client idles.
- Every lookup is scoped by the logged-in account: a mailbox is found by
  (account id, name) or by an id obtained that way; another account's
  mailbox does not exist for this one.
- Every change takes a fresh modseq from its mailbox row (``allocate`` /
  ``bump_modseq``), so other sessions learn of it through ``changes``; the unit
  of work ``touch``es the mailbox so IDLE sessions wake after the commit.
- The selected mailboxes' state (UIDs, flags, modseqs) is kept once per
  process (``mailboxcache``) and kept current by the change notifications:
  ``changes`` (every command's untagged news, IDLE's wake-ups) reads the store
  only when a notification says the mailbox moved, once for all the sessions;
  STORE, EXPUNGE and FETCH take the messages' current flags from it under the
  row lock when it holds the mailbox just before their modseq, and hand it
  their own change after the commit. A STORE the cache says changes nothing is
  confirmed by reading the mailbox row (at the cache's HIGHESTMODSEQ the cache
  is the store) and answered without taking the writer. SELECT reads the
  mailbox row from the store and takes the messages from the cache when it
  holds them at that row's HIGHESTMODSEQ (``states_at``), else from the store;
  STATUS reads the store.
- The hot path runs Core statements (``MailboxRow``, no ORM objects): one
  ``UPDATE ... RETURNING`` for the modseq and the row lock, one for the flags.
  COPY and MOVE lock both rows with one ``SELECT ... FOR UPDATE`` (by id), copy
  the message rows with one ``INSERT ... SELECT`` (the blobs shared, nothing
  opened or sealed again) and, for a MOVE, take both modseqs in one ``UPDATE``;
  they and APPEND hand their change to the process's view after the commit. An
  APPEND into the mailbox its session has selected read-write claims the new
  messages' \\Recent in its own unit of work (``recent_for``), not in a second one.
- Reading message content (a body section, RFC822...) is audited, ids only:
  one entry per call with the mailbox id and the UIDs. Bodies are decrypted
  in a worker thread, outside any transaction, so the event loop goes on.
- Every writing unit of work runs through ``_retrying``: PostgreSQL aborting it
  as a deadlock or a serialization failure runs it again (issue 11).
- APPEND parses the message once (``mailserver.message``) and hands that
  ``ParsedMessage`` to the admission service (built once per process and
  given to the store) and to ``delivery.deliver``, sealed (``delivery.seal``)
  before its unit of work takes the writer.
- A patient's vault (``Documents/`` and below, issue 8): an APPEND there is
  labelled by ``vault.upload`` (``X-Document-Author: patient``...); reading a vault message's content is
  audited as ``vault.read``, expunging or moving it out as ``vault.delete``
  (ids only). Stored content never changes: only flags do.
- APPEND and COPY/MOVE are bounded by the quota roots over their target
  (``mailserver.quota``: the account's, and the vault's ``limits.vault_quota``),
  NO [OVERQUOTA] past them; checked again in the writing transaction, under
  the account's quota lock (``quota.admit``, ``quota.lock_anchor``): no overshoot.
- ``$MDNSent`` (RFC 3503): set by a patient's client on a message that asks for a
  read receipt, it makes the server send that MDN (``mailserver.mdn``) in the
  STORE's unit of work; once set it stays (a STORE cannot remove it), so one copy
  gives one MDN.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from crypto.envelope import DataKey
from mailserver import mailboxes as mbx
from mailserver import quota, vault
from mailserver.admission import Admission, role_of
from mailserver.bodies import account_key, open_body, open_meta
from mailserver.context import Context
from mailserver.delivery import Delivered, MailboxMissing, Sealed, deliver, seal
from mailserver.errors import (
    AccountGone,
    Busy,
    MailboxGone,
    MailboxNotFound,
    Refused,
    SpecialUseRefused,
    TooBig,
)
from mailserver.flags import FlagCodec
from mailserver.imap.mailboxcache import DeltaRow, MailboxCache, cache_of
from mailserver.mdn import Notifier
from mailserver.message import ImapMeta, MessageError, ParsedMessage, parse_message_async, stored
from mailserver.store.errors import TransactionAborted
from mailserver.store.models import Account, AccountKind, Blob, Mailbox, Message
from mailserver.store.repositories.mail import MailboxRow, canonical_name
from mailserver.store.retry import retrying
from mailserver.store.uow import UnitOfWork
from policies import mdn as P

RECENT = "\\Recent"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    id: int
    name: str
    special_use: str | None
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    subscribed: bool

    @classmethod
    def of(cls, m: Mailbox | MailboxRow) -> MailboxInfo:
        return cls(m.id, m.name, m.special_use, m.uidvalidity, m.uidnext, m.highestmodseq, m.subscribed)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What SELECT starts from."""

    mailbox: MailboxInfo
    messages: list[tuple[int, frozenset[str]]]  # (uid, flags) by uid
    recent: frozenset[int]
    modseq: int
    modseqs: dict[int, int] = field(default_factory=dict)  # uid -> mod-sequence


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed in a mailbox after a modseq, up to ``modseq``."""

    changed: list[tuple[int, frozenset[str]]]  # (uid, flags), new messages included
    expunged: list[int]
    modseq: int
    uidnext: int
    recent: frozenset[int] = frozenset()
    modseqs: dict[int, int] = field(default_factory=dict)  # uid -> mod-sequence of the changed messages


@dataclass(frozen=True, slots=True)
class StoreResult:
    """STORE: the flags and mod-sequence of every message still there, and those UNCHANGEDSINCE kept."""

    flags: dict[int, frozenset[str]]
    modseqs: dict[int, int]
    modified: list[int]  # RFC 7162 §3.1.3: changed after UNCHANGEDSINCE, left as they were


@dataclass(slots=True)
class MessageData:
    """One message for FETCH or SEARCH: what was asked for, nothing more."""

    uid: int
    flags: frozenset[str]
    internal_date: dt.datetime
    size: int
    meta: ImapMeta | None = None
    modseq: int = 0
    raw: bytes | None = None
    _parsed: ParsedMessage | None = field(default=None, repr=False)
    blob_id: str | None = None  # RFC 8474 EMAILID (``imap.objectid``)
    saved: dt.datetime | None = None  # RFC 8514 SAVEDATE

    @property
    def parsed(self) -> ParsedMessage:
        """The stored message taken apart (leniently: it was accepted once), on first use."""
        if self._parsed is None:
            self._parsed = stored(self.raw or b"")
        return self._parsed


@dataclass(frozen=True, slots=True)
class StatusInfo:
    messages: int
    recent: int
    uidnext: int
    uidvalidity: int
    unseen: int
    size: int
    highestmodseq: int = 1
    append_limit: int = 0  # RFC 7889: the largest APPEND this mailbox takes
    deleted: int = 0  # RFC 9051: messages marked \\Deleted (read only when asked: ``status(deleted=True)``)


@dataclass(frozen=True, slots=True)
class CopyResult:
    uidvalidity: int
    source_uids: list[int]
    dest_uids: list[int]


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message an APPEND brings: its octets, flags and internal date (None: now)."""

    raw: bytes
    flags: tuple[str, ...] = ()
    internal_date: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class AppendResult:
    uidvalidity: int
    uid: int
    mailbox_id: int


#: what a STORE would do to messages of the given (stored flags, modseq): its answer if nothing changes, the
#: new stored flags of those that change (compare-and-set: None) and those of them that newly ask for an MDN
_StorePlan = tuple[StoreResult, dict[int, tuple[str | None, str]], list[int]]


class MailStore:
    """One logged-in account's view of the store."""

    def __init__(self, ctx: Context, account: Account, admission: Admission) -> None:
        self.ctx = ctx
        self.account = account
        self.admission = admission
        self.actor = account.address
        self.patient = account.kind is AccountKind.PATIENT
        self._key: DataKey | None = None
        #: the account's flags to and from ``messages.flags`` (its keywords sealed: ``mailserver.flags``)
        self.codec = FlagCodec(lambda: ctx.db.metadata_key, account.id)
        #: mailbox id -> UIDs whose \\Recent this session's APPEND claimed (``append_many(recent_for=...)``),
        #: until its next look at that mailbox (``changes``, ``select``) reports them as recent
        self._own_recent: dict[int, set[int]] = {}

    @property
    def key(self) -> DataKey:
        if self._key is None:
            self._key = account_key(self.ctx.keyring, self.account)
        return self._key

    # --- mailboxes -----------------------------------------------------------------------------------------

    async def mailboxes(self) -> list[MailboxInfo]:
        async with self.ctx.uow(readonly=True) as uow:
            return [MailboxInfo.of(m) for m in await uow.mailboxes.list(self.account.id)]

    async def _mailbox(self, uow: UnitOfWork, name: str, *, try_create: bool = False) -> Mailbox:
        mailbox = await uow.mailboxes.get(self.account.id, name)
        if mailbox is None:
            raise MailboxNotFound(canonical_name(name), try_create=try_create)
        return mailbox

    async def create(self, name: str, *, special_use: str | None = None) -> None:
        """CREATE, with a special use (RFC 6154 §3) that no other mailbox of the account holds."""

        async def work() -> None:
            async with self.ctx.uow() as uow:
                if special_use is not None and await uow.mailboxes.by_special_use(self.account.id, special_use):
                    raise SpecialUseRefused(f"Another mailbox already is the {special_use} mailbox of this account")
                mailbox = await mbx.create_mailbox(uow, self.account.id, name)
                if special_use is not None:
                    mailbox.special_use = special_use
                uow.audit(self.actor, "imap.create", f"{self.account.owner_id}/mailbox:{mailbox.id}", "ok")
                await uow.commit()

        await _retrying(work)

    async def delete(self, name: str) -> None:
        async def work() -> None:
            async with self.ctx.uow() as uow:
                mailbox = await mbx.delete_mailbox(uow, self.account.id, name, patient=self.patient)
                action = "vault.delete" if self._in_vault(mailbox) else "imap.delete"
                uow.audit(self.actor, action, f"{self.account.owner_id}/mailbox:{mailbox.id}", "ok")
                await uow.commit()

        await _retrying(work)

    async def rename(self, old: str, new: str) -> None:
        async def work() -> None:
            async with self.ctx.uow() as uow:
                source = await self._mailbox(uow, old)
                await mbx.rename_mailbox(uow, self.account.id, old, new, patient=self.patient)
                uow.audit(self.actor, "imap.rename", f"{self.account.owner_id}/mailbox:{source.id}", "ok")
                await uow.commit()

        await _retrying(work)

    async def subscribe(self, name: str, subscribed: bool) -> None:
        async def work() -> None:
            async with self.ctx.uow() as uow:
                await mbx.set_subscribed(uow, self.account.id, name, subscribed)
                await uow.commit()

        await _retrying(work)

    async def status(self, name: str, *, deleted: bool = False) -> StatusInfo:
        async with self.ctx.uow(readonly=True) as uow:
            found = await uow.mailboxes.status(self.account.id, name)
            if found is None:
                raise MailboxNotFound(canonical_name(name))
            m, n, unseen, recent, size = found
            marked = await uow.message_views.deleted_count(m.id) if deleted else 0
        limit = min(self.ctx.config.limits.max_message_size, self.ctx.config.imap.max_literal)
        return StatusInfo(
            n, recent, m.uidnext, m.uidvalidity, unseen, size, max(1, m.highestmodseq), limit, deleted=marked
        )

    async def info(self, name: str) -> MailboxInfo:
        """One mailbox's row, as LIST sees it (RFC 8474 MAILBOXID); MailboxNotFound if there is none."""
        async with self.ctx.uow(readonly=True) as uow:
            return MailboxInfo.of(await self._mailbox(uow, name))

    # --- selected state ------------------------------------------------------------------------------------

    def _cache(self) -> MailboxCache:
        return cache_of(self.ctx.db.notifier)

    def _now(self) -> float:
        return self.ctx.clock.monotonic()

    async def _read_changes(self, mailbox_id: int, known: int) -> tuple[MailboxRow | None, list[DeltaRow]]:
        """The mailbox's row and what changed after ``known`` up to its HIGHESTMODSEQ (the cache's one read)."""
        async with self.ctx.uow(readonly=True) as uow:
            row = await uow.mailboxes.row(mailbox_id)
            if row is None or row.highestmodseq <= known:
                return row, []
            return row, await uow.message_views.delta(mailbox_id, known, row.highestmodseq)

    async def select(self, name: str, *, readonly: bool) -> Snapshot:
        """The mailbox and its messages; a read-write SELECT claims the \\Recent messages (RFC 3501 §2.3.2)."""
        async with self.ctx.uow(readonly=True) as uow:
            m = await uow.mailboxes.row_by_name(self.account.id, name)
            if m is None:
                raise MailboxNotFound(canonical_name(name))
            # the messages from the process's view when it holds the mailbox at the row's modseq
            cached = self._cache().states_at(m)
            states = cached if cached is not None else await uow.message_views.states(m.id)
        first = m.first_recent_uid
        if not readonly and m.first_recent_uid < m.uidnext:
            async with self.ctx.uow() as uow:
                uidnext = await uow.mailboxes.claim_recent_from(m.id, m.first_recent_uid)
                if uidnext is None:  # another session claimed meanwhile: claim what is left
                    claimed = await uow.mailboxes.claim_recent(m.id)
                    if claimed is None:
                        raise MailboxNotFound(canonical_name(name))
                    first, uidnext = claimed
                if uidnext != m.uidnext:  # mail arrived meanwhile: the snapshot must hold what was claimed
                    fresh = await uow.mailboxes.row(m.id)
                    if fresh is None:  # pragma: no cover - locked above
                        raise MailboxNotFound(canonical_name(name))
                    m = fresh
                    states = await uow.message_views.states(m.id)
                await uow.commit()
            m = m.recent_from(max(m.first_recent_uid, uidnext))
            self._cache().claimed_recent(m.id, uidnext)
        own = self._own_recent.pop(m.id, set())
        modseq = max([m.highestmodseq, *(s[2] for s in states)])
        if modseq == m.highestmodseq:  # the row and the messages agree (PostgreSQL reads them at two instants)
            self._cache().install(m, states, self._now())
        return Snapshot(
            MailboxInfo.of(m),
            [(uid, self.codec.decode(flags)) for uid, flags, _ in states],
            frozenset(uid for uid, _, _ in states if uid >= first or uid in own),
            modseq,
            {uid: ms for uid, _, ms in states},
        )

    async def changes(self, mailbox_id: int, since: int, *, claim_recent: bool) -> Changes:
        """What happened in the mailbox after modseq ``since``. Raises MailboxGone if it was deleted.

        Answered from the process's cache of the mailbox when it holds everything after ``since``
        (``mailboxcache``: no database work while nothing changed), else from the store."""
        entry = await self._cache().current(mailbox_id, self._now(), self._read_changes)
        if entry is not None and entry.base <= since:
            if entry.row.account_id != self.account.id:
                raise MailboxGone("The selected mailbox was deleted")
            row = entry.row
            if row.highestmodseq <= since:
                return Changes([], [], since, row.uidnext)
            changed = entry.changed_after(since)
            expunged = entry.expunged_after(since)
        else:
            async with self.ctx.uow(readonly=True) as uow:
                found = await uow.mailboxes.row(mailbox_id)
                if found is None or found.account_id != self.account.id:
                    raise MailboxGone("The selected mailbox was deleted")
                row = found
                if row.highestmodseq <= since:
                    return Changes([], [], since, row.uidnext)
                delta = await uow.message_views.delta(mailbox_id, since, row.highestmodseq)
            changed = sorted((u, f, m) for u, f, m, gone in delta if not gone)
            expunged = sorted(u for u, _, _, gone in delta if gone)
        recent: frozenset[int] = frozenset()
        newest = max((u for u, _, _ in changed), default=0)
        if claim_recent and newest >= row.first_recent_uid:
            first = await self._claim_recent(mailbox_id, row.first_recent_uid, newest)
            recent = frozenset(u for u, _, _ in changed if u >= first)
        own = self._own_recent.pop(mailbox_id, None)
        if own and claim_recent:  # this session's APPEND claimed them in its own unit of work
            recent |= {u for u, _, _ in changed if u in own}
        return Changes(
            [(u, self.codec.decode(f)) for u, f, _ in changed],
            expunged,
            row.highestmodseq,
            row.uidnext,
            recent,
            {u: ms for u, _, ms in changed},
        )

    async def _claim_recent(self, mailbox_id: int, first: int, newest: int) -> int:
        """Claim \\Recent (RFC 3501 §2.3.2) for messages up to ``newest``, thought to start at ``first``: where
        the caller's claim starts. Another session of the process that claimed them first is known from the
        cache (``newest`` below its claim: nothing for this one, no second look in the store)."""
        cache = self._cache()
        async with self.ctx.uow() as uow:
            claimed = cache.first_recent(mailbox_id)  # looked at again once this is the writer (SQLite)
            if claimed is not None and claimed > newest:
                return claimed
            uidnext = await uow.mailboxes.claim_recent_from(mailbox_id, first)
            if uidnext is None:
                claimed = cache.first_recent(mailbox_id)
                if claimed is not None and claimed > newest:
                    return claimed
                left = await uow.mailboxes.claim_recent(mailbox_id)
                if left is None:
                    raise MailboxGone("The selected mailbox was deleted")
                first, uidnext = left
            await uow.commit()
        cache.claimed_recent(mailbox_id, uidnext)
        return first

    async def vanished(self, mailbox_id: int, since: int) -> list[int]:
        """UIDs expunged from the mailbox after modseq ``since`` (RFC 7162 VANISHED (EARLIER)); tombstones are kept."""
        async with self.ctx.uow(readonly=True) as uow:
            m = await self._check_owner(uow, mailbox_id)
            return await uow.message_views.expunged_between(mailbox_id, since, m.highestmodseq)

    # --- messages ------------------------------------------------------------------------------------------

    def _meta(self, blob: Blob, data: MessageData, envelope: bool = True) -> ImapMeta:
        meta = open_meta(self.key, blob, envelope=envelope)
        if meta is None:  # none, or of a layout no longer read: derive it again from the body
            if data.raw is None:
                data._parsed = stored(open_body(self.key, blob))
            meta = data.parsed.imap_meta()
        return meta

    async def _owned(self, uow: UnitOfWork, mailbox_id: int) -> MailboxRow:
        """The account's mailbox: from the cache when current, else its row. Raises MailboxGone."""
        entry = self._cache().peek(mailbox_id, self._now())
        row = entry.row if entry is not None else await uow.mailboxes.row(mailbox_id)
        if row is None or row.account_id != self.account.id:
            raise MailboxGone("The selected mailbox was deleted")
        return row

    async def fetch(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        meta: bool,
        body: bool,
        mark_seen: bool,
        audit: bool,
        envelope: bool = True,
    ) -> tuple[list[MessageData], dict[int, frozenset[str]]]:
        """The messages ``uids`` (those still there), with metadata and/or plaintext; with ``mark_seen``
        \\Seen is set on them (new flags returned); with ``audit`` the read is recorded. Without
        ``envelope`` the metadata's envelope is left empty, its addresses not decoded (SEARCH's matching
        reads only the decoded fields and the sent date)."""
        async with self.ctx.uow(readonly=True) as uow:
            in_vault = self._in_vault(await self._owned(uow, mailbox_id))
            rows = await uow.message_views.fetch_rows(mailbox_id, uids, meta=meta and not body, body=body)
            if meta and not body and any(r[8] is None for r in rows):  # no sealed metadata: derived from the body
                rows = await uow.message_views.fetch_rows(mailbox_id, uids, meta=False, body=True)
        # decrypting happens outside any transaction (bodies in a worker thread, off the event loop); the
        # write below (\Seen, audit) is short
        stored_flags = {int(r[0]): r[1] for r in rows}
        key = self.key
        if body:
            out = await asyncio.to_thread(self._open, key, rows, meta, body, envelope)
        else:
            out = self._open(key, rows, meta, body, envelope)
        unseen = {u: f for u, f in stored_flags.items() if "\\Seen" not in self.codec.decode(f)} if mark_seen else {}
        if not (unseen or (audit and rows)):
            return out, {}

        async def work() -> dict[int, frozenset[str]]:
            new_flags: dict[int, frozenset[str]] = {}
            cache = self._cache()
            generation = cache.generation(mailbox_id)
            modseq = 0
            async with self.ctx.uow() as uow:
                if unseen:
                    modseq = await uow.mailboxes.bump_if_there(mailbox_id) or 0
                    if not modseq:
                        raise MailboxGone("The selected mailbox was deleted")
                    # compare-and-set: a message whose flags changed since they were read is read again
                    wanted = {u: (f, self.codec.encode(self.codec.decode(f) | {"\\Seen"})) for u, f in unseen.items()}
                    written = set(await uow.messages.set_flags(mailbox_id, dict(wanted.items()), modseq))
                    missed = set(wanted) - written
                    if missed:
                        again = {
                            u: (f, self.codec.encode(self.codec.decode(f) | {"\\Seen"}))
                            for u, (f, _) in (await uow.messages.states_of(mailbox_id, missed)).items()
                        }
                        written |= set(await uow.messages.set_flags(mailbox_id, again, modseq))
                        wanted.update(again)
                    for uid in written:
                        new_flags[uid] = self.codec.decode(wanted[uid][1])
                    for d in out:
                        if d.uid in new_flags:
                            d.modseq = modseq
                    uow.touch(mailbox_id)
                if audit and rows:
                    uow.audit(
                        self.actor,
                        "vault.read" if in_vault else "imap.fetch",
                        f"{self.account.owner_id}/mailbox:{mailbox_id}",
                        "ok",
                        "uids " + _compact(r[0] for r in rows),
                    )
                await uow.commit()
            if modseq:
                cache.applied(mailbox_id, modseq, generation, flags={u: wanted[u][1] for u in written})
            return new_flags

        new_flags = await _retrying(work)
        return out, new_flags

    def _open(
        self, key: DataKey, rows: Sequence[Any], meta: bool, body: bool, envelope: bool = True
    ) -> list[MessageData]:
        """FETCH rows (``MessageViews.fetch_rows``) as MessageData, with their metadata and/or bodies opened
        with ``key``."""
        out: list[MessageData] = []
        for r in rows:
            data = MessageData(
                int(r[0]), self.codec.decode(r[1]), r[3], int(r[4]), modseq=int(r[2]), blob_id=r[5], saved=r[6]
            )
            if len(r) > 7 and r[7] == self.account.id:
                blob = Blob(id=r[5], account_id=r[7], meta=r[8], size=r[9], body=r[10] if len(r) > 10 else None)
                if body:
                    data.raw = open_body(key, blob)
                if meta:
                    data.meta = self._meta(blob, data, envelope)
            out.append(data)
        return out

    def _in_vault(self, mailbox: Mailbox | MailboxRow) -> bool:
        return self.patient and vault.is_vault(mailbox.name)

    async def _lock_owned(self, uow: UnitOfWork, mailbox_id: int) -> Mailbox:
        """The account's mailbox, its row locked first (mailbox rows by id, then messages)."""
        m = await self._check_owner(uow, mailbox_id)
        if not await uow.mailboxes.lock(mailbox_id):
            raise MailboxGone("The selected mailbox was deleted")
        return m

    async def _check_owner(self, uow: UnitOfWork, mailbox_id: int) -> Mailbox:
        m = await uow.mailboxes.get_by_id(mailbox_id)
        if m is None or m.account_id != self.account.id:
            raise MailboxGone("The selected mailbox was deleted")
        return m

    async def _bump_owned(
        self, uow: UnitOfWork, mailbox_id: int
    ) -> tuple[MailboxRow, int, dict[int, tuple[str, int]] | None]:
        """The account's mailbox locked by a new modseq (mailbox rows by id, then messages), and its messages
        as the cache holds them just before that modseq (None: the cache does not, read them)."""
        row = await self._owned(uow, mailbox_id)
        modseq = await uow.mailboxes.bump_if_there(mailbox_id)
        if modseq is None:
            raise MailboxGone("The selected mailbox was deleted")
        entry = self._cache().known(mailbox_id, modseq - 1)
        return row, modseq, None if entry is None else entry.messages

    async def store(
        self, mailbox_id: int, uids: Sequence[int], mode: str, flags: Iterable[str]
    ) -> dict[int, frozenset[str]]:
        """STORE: the resulting flags of every message still there (only changed ones get a new modseq).

        A message expunged by another session before this one wrote is not an error: it is left out.
        """
        return (await self.store_flags(mailbox_id, uids, mode, flags)).flags

    async def store_flags(
        self, mailbox_id: int, uids: Sequence[int], mode: str, flags: Iterable[str], unchanged_since: int | None = None
    ) -> StoreResult:
        """STORE with mod-sequences (RFC 7162): a message whose modseq is above ``unchanged_since`` is
        not changed and is listed in ``modified``; the others as ``store``.

        Under the row lock (a new modseq taken first) the current flags come from the process's cache when
        it holds the mailbox just before that modseq, else from the store; nothing changed, nothing is kept
        (the new modseq rolls back).

        A STORE the process's view says changes nothing (``+FLAGS`` of flags already set...) is confirmed
        by reading the mailbox row alone, outside the writer: at the view's HIGHESTMODSEQ the view is the
        store's state, and the STORE is answered from it without a writing unit of work."""
        wanted = frozenset(flags) - {RECENT}

        def plan(
            current: dict[int, tuple[str, int]],
        ) -> tuple[StoreResult, dict[int, tuple[str | None, str]], list[int]]:
            """The result if nothing changes, the new stored flags of the messages that do change, and those
            of them that newly ask for an MDN (``$MDNSent``)."""
            result: dict[int, frozenset[str]] = {}
            modseqs: dict[int, int] = {}
            modified: list[int] = []
            changed: dict[int, tuple[str | None, str]] = {}
            asked: list[int] = []  # $MDNSent newly set: the MDN the patient's client asks the server for
            for uid in sorted(current):
                stored_flags, msg_modseq = current[uid]
                if unchanged_since is not None and msg_modseq > unchanged_since:
                    modified.append(uid)
                    continue
                modseqs[uid] = msg_modseq
                old = self.codec.decode(stored_flags)
                new = wanted if mode == "" else (old | wanted if mode == "+" else old - wanted)
                new |= {f for f in old if P.is_mdn_sent(f)}  # RFC 3503 §3.1: never unset, one MDN per copy
                result[uid] = self.codec.decode(self.codec.encode(new))
                if new != old:
                    changed[uid] = (None, self.codec.encode(new))
                    if any(P.is_mdn_sent(f) for f in new) and not any(P.is_mdn_sent(f) for f in old):
                        asked.append(uid)
            return StoreResult(result, modseqs, modified), changed, asked

        unchanged = await self._unchanged_store(mailbox_id, uids, plan)
        if unchanged is not None:
            return unchanged

        async def work() -> StoreResult:
            cache = self._cache()
            generation = cache.generation(mailbox_id)
            async with self.ctx.uow() as uow:
                _, modseq, known = await self._bump_owned(uow, mailbox_id)
                if known is not None:
                    current = {u: known[u] for u in uids if u in known}
                else:
                    current = {r.uid: (r.flags, r.modseq) for r in await uow.messages.by_uids(mailbox_id, uids)}
                planned, changed, asked = plan(current)
                result, modseqs, modified = planned.flags, planned.modseqs, planned.modified
                if not changed:
                    return planned  # rolled back: the modseq is not used
                written = set(await uow.messages.set_flags(mailbox_id, changed, modseq))
                for uid in set(changed) - written:  # expunged meanwhile
                    del result[uid]
                    del modseqs[uid]
                for uid in written:
                    modseqs[uid] = modseq
                mdn_asked = [u for u in asked if u in written]
                if mdn_asked:
                    await self._notify_displayed(uow, await uow.messages.by_uids(mailbox_id, mdn_asked))
                uow.touch(mailbox_id)
                await uow.commit()
            cache.applied(mailbox_id, modseq, generation, flags={u: changed[u][1] for u in written})
            return StoreResult(result, modseqs, modified)

        return await _retrying(work)

    async def _unchanged_store(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        plan: Callable[[dict[int, tuple[str, int]]], _StorePlan],
    ) -> StoreResult | None:
        """STORE's answer when it changes nothing, known without the writer: the process's view of the
        mailbox says so and the mailbox row, read now, is at the view's HIGHESTMODSEQ (so the view holds the
        store's flags). None: it may change something, or the view cannot say (take the writer)."""
        cache = self._cache()
        entry = cache.peek(mailbox_id, self._now())
        if entry is None:
            return None
        at = entry.row
        current = {u: entry.messages[u] for u in uids if u in entry.messages}
        planned, changed, _ = plan(current)
        if changed:
            return None
        async with self.ctx.uow(readonly=True) as uow:
            row = await uow.mailboxes.row(mailbox_id)
        if row is None or row.account_id != self.account.id:
            raise MailboxGone("The selected mailbox was deleted")
        if row.uidvalidity != at.uidvalidity or row.highestmodseq != at.highestmodseq:
            return None
        return planned

    async def _notify_displayed(self, uow: UnitOfWork, messages: Sequence[Message]) -> None:
        """The read receipts (``mailserver.mdn``) the client asked for by setting ``$MDNSent``, patients only."""
        if not messages or not P.may_ask_server(role_of(self.account)):
            return
        notifier = Notifier(self.ctx)
        for m in messages:
            blob = await uow.blobs.get(m.blob_id)
            if blob is None:
                continue
            await notifier.displayed(uow, self.account, stored(open_body(self.key, blob)))

    async def expunge(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        """Remove those of ``uids`` that carry \\Deleted; returns the UIDs removed."""

        async def work() -> list[int]:
            cache = self._cache()
            generation = cache.generation(mailbox_id)
            async with self.ctx.uow() as uow:
                row, modseq, known = await self._bump_owned(uow, mailbox_id)
                in_vault = self._in_vault(row)
                if known is not None:
                    current = {u: known[u][0] for u in uids if u in known}
                else:
                    current = {r.uid: r.flags for r in await uow.messages.by_uids(mailbox_id, uids)}
                gone = sorted(u for u, f in current.items() if "\\Deleted" in self.codec.decode(f))
                if not gone:
                    return []  # rolled back: the modseq is not used
                blob_ids = await uow.messages.expunge(mailbox_id, gone, modseq)
                await uow.blobs.delete_orphans(blob_ids)
                uow.touch(mailbox_id)
                uow.audit(
                    self.actor,
                    "vault.delete" if in_vault else "imap.expunge",
                    f"{self.account.owner_id}/mailbox:{mailbox_id}",
                    "ok",
                    "uids " + _compact(gone),
                )
                await uow.commit()
            cache.applied(mailbox_id, modseq, generation, expunged=gone)
            return gone

        return await _retrying(work)

    async def copy(self, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool) -> CopyResult:
        """COPY / MOVE (RFC 4315 COPYUID, RFC 6851): the copies share the source's blobs (one account, one key:
        nothing is opened or sealed again, large bodies included).

        Both mailbox rows are read and locked by one statement, in ascending id order; the copies are one
        ``INSERT ... SELECT``; a MOVE takes both new modseqs in one ``UPDATE``. After the commit the process's
        view of both mailboxes takes the change without reading it back."""

        async def work() -> CopyResult:
            cache = self._cache()
            async with self.ctx.uow() as uow:
                # the account's quota anchor first (its lowest mailbox row, below both of these), then both
                # mailbox rows in one statement, ascending ids: the check below cannot be outrun (``mailserver.quota``)
                await quota.lock_anchor(uow, self.account.id, ())
                source, dest = await uow.mailboxes.lock_pair(mailbox_id, self.account.id, dest_name)
                if source is None or source.account_id != self.account.id:
                    raise MailboxGone("The selected mailbox was deleted")
                if dest is None:
                    raise MailboxNotFound(canonical_name(dest_name), try_create=True)
                generations = {m: cache.generation(m) for m in (source.id, dest.id)}  # under both row locks
                found = await uow.messages.copy_sources(source.id, uids)
                if not found:
                    return CopyResult(dest.uidvalidity, [], [])
                await quota.check(
                    uow,
                    self.ctx.config.limits,
                    self.account,
                    dest.name,
                    sum(size for _, size, _ in found),
                    messages=len(found),
                    moved_from=source.name if move else None,
                )
                source_uids = [uid for uid, _, _ in found]
                src_modseq = 0
                if move:
                    first, modseq, src_modseq = await uow.mailboxes.allocate_move(source.id, dest.id, len(found))
                else:
                    first, modseq = await uow.mailboxes.allocate(dest.id, len(found))
                dest_uids = await uow.messages.copy_into(source.id, source_uids, dest.id, first, modseq)
                if move:
                    await uow.messages.expunge(source.id, source_uids, src_modseq)
                    uow.touch(source.id)
                    if self._in_vault(source) and not self._in_vault(dest):
                        uow.audit(
                            self.actor,
                            "vault.delete",
                            f"{self.account.owner_id}/mailbox:{source.id}",
                            "ok",
                            f"uids {_compact(source_uids)} moved to mailbox:{dest.id}",
                        )
                uow.touch(dest.id)
                uow.audit(
                    self.actor,
                    "imap.move" if move else "imap.copy",
                    f"{self.account.owner_id}/mailbox:{source.id}",
                    "ok",
                    f"uids {_compact(source_uids)} to mailbox:{dest.id} uids {_compact(dest_uids)}",
                )
                await uow.commit()
            copies = {uid: flags for uid, (_, _, flags) in zip(dest_uids, found, strict=True)}
            gone = source_uids if move else []
            if move and source.id != dest.id:
                cache.applied(source.id, src_modseq, generations[source.id], expunged=gone)
                gone = []
            cache.applied(dest.id, modseq, generations[dest.id], flags=copies, expunged=gone, uidnext=dest_uids[-1] + 1)
            return CopyResult(dest.uidvalidity, source_uids, dest_uids)

        return await _retrying(work)

    async def quota_roots(self, name: str) -> tuple[str, list[quota.Root]]:
        """GETQUOTAROOT (RFC 9208 §4.1.2): the mailbox's name and the quota roots over it, with their usage."""
        async with self.ctx.uow(readonly=True) as uow:
            m = await self._mailbox(uow, name)
            return m.name, await quota.roots(uow, self.ctx.config.limits, self.account, m.name)

    async def quota_root(self, root: str) -> quota.Root | None:
        """GETQUOTA (RFC 9208 §4.1.1): one of the account's quota roots with its usage, or None."""
        async with self.ctx.uow(readonly=True) as uow:
            return await quota.root(uow, self.ctx.config.limits, self.account, root)

    async def append(
        self,
        name: str,
        raw: bytes,
        flags: Iterable[str],
        internal_date: dt.datetime | None,
        *,
        recent_for: int | None = None,
    ) -> AppendResult:
        """APPEND of one message: ``append_many`` of one."""
        return (await self.append_many(name, [NewMessage(raw, tuple(flags), internal_date)], recent_for=recent_for))[0]

    async def append_many(
        self, name: str, items: Sequence[NewMessage], *, recent_for: int | None = None
    ) -> list[AppendResult]:
        """APPEND through the one delivery path, after admission's ``check_append``: every message of a
        MULTIAPPEND (RFC 3502) in one unit of work, all or none; the quota counts them together, in that unit of
        work (``deliver``'s ``limits``: the bound cannot be outrun).

        ``recent_for``: the mailbox the session has selected read-write. An APPEND into it claims \\Recent
        (RFC 3501 §2.3.2: this session is the first told of the new messages) in the same unit of work, if
        \\Recent started at its first new UID (nothing older unclaimed): no second unit of work for the
        claim, and no other session of the process tries for it; the session's next ``changes`` reports them
        as recent."""
        limit = self.ctx.config.limits.max_message_size
        for item in items:
            if len(item.raw) > limit:
                raise TooBig(f"Message too big (the limit is {limit} bytes)")
        target = canonical_name(name)
        in_vault = self.patient and vault.is_vault(target)
        async with self.ctx.uow(readonly=True) as uow:
            # the account as it is now and whether the mailbox exists, in one statement
            account, box_id = await uow.mailboxes.account_and_box(self.account.id, name)
            if account is not None and box_id is None:
                raise MailboxNotFound(target, try_create=True)
        if account is None or box_id is None:  # pragma: no cover - the account was erased meanwhile
            raise AccountGone("This account no longer exists")
        ready: list[tuple[NewMessage, str, Sealed]] = []  # (item, its flags as stored, sealed)
        agenda = False  # an invitation may make the agenda change more in the same commit
        for item in items:
            try:
                msg = await parse_message_async(item.raw)
            except MessageError as exc:
                raise Refused(exc.text) from None
            decision = await self.admission.check_append(account, target, msg)
            if not decision.allowed:
                raise Refused(decision.reply.text)
            if in_vault:
                msg = vault.upload(msg, when=item.internal_date or self.ctx.clock())
            # parsed, filed and sealed before the unit of work: no writer waits on the cipher
            sealed = await seal(self.ctx.keyring, msg, [account], mailbox=target, internal_date=item.internal_date)
            agenda = agenda or bool(msg.calendar_parts())
            ready.append((item, self.codec.encode(f for f in item.flags if f != RECENT), sealed))
        cache = self._cache()
        generation: int | None = None
        claimed: int | None = None  # UIDNEXT after this APPEND's own \\Recent claim (``recent_for``)

        async def work() -> list[Delivered]:
            nonlocal generation, claimed
            done: list[Delivered] = []
            claimed = None
            async with self.ctx.uow() as uow:
                generation = cache.generation(box_id)
                for item, kept, sealed in ready:
                    try:
                        result = await deliver(
                            uow,
                            self.ctx.keyring,
                            sealed.message,
                            [account],
                            mailbox=target,
                            flags=kept.split(),
                            internal_date=item.internal_date,
                            actor=self.actor,
                            source="imap-append",
                            sealed=sealed,
                            limits=self.ctx.config.limits,  # the bound itself, atomic with the rows
                        )
                    except MailboxMissing:
                        raise MailboxNotFound(target, try_create=True) from None
                    done.append(result.delivered[0])
                mine = [d.uid for d in done if d.mailbox_id == box_id]
                if recent_for == box_id and mine and not agenda:  # an invitation may have added more
                    claimed = await uow.mailboxes.claim_recent_from(box_id, min(mine))
                await uow.commit()
            return done

        out: list[AppendResult] = []
        for (_, kept, _), d in zip(ready, await _retrying(work), strict=True):
            # the process's view takes the new message without reading it back, unless the agenda may have
            # changed the mailbox further in the same commit (then it reads it once more)
            cache.applied(
                d.mailbox_id,
                d.modseq,
                generation if d.mailbox_id == box_id else None,
                flags={d.uid: kept},
                uidnext=d.uid + 1,
                alone=not agenda,
            )
            out.append(AppendResult(d.uidvalidity, d.uid, d.mailbox_id))
        if claimed is not None:
            cache.claimed_recent(box_id, claimed)
            self._own_recent.setdefault(box_id, set()).update(r.uid for r in out if r.mailbox_id == box_id)
        return out


async def _retrying(work: Callable[[], Awaitable[T]]) -> T:
    """``work`` (one writing unit of work) run again if PostgreSQL aborted it as a deadlock or a
    serialization failure; still aborted after the retries, the command answers NO [UNAVAILABLE]."""
    try:
        return await retrying(work)
    except TransactionAborted:
        raise Busy("The mailbox is busy with other changes; try again") from None


def _compact(uids: Iterable[int]) -> str:
    ranges: list[list[int]] = []
    for u in sorted(set(uids)):
        if ranges and ranges[-1][1] + 1 == u:
            ranges[-1][1] = u
        else:
            ranges.append([u, u])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in ranges)
