"""The state of the selected mailboxes, kept once per process and shared by every session that has one selected.

Implementation notes (invariants):
- An entry is the store's state of one mailbox at ``highestmodseq``: every
  message there (UID -> stored flags and modseq), UIDNEXT, UIDVALIDITY, the
  first \\Recent UID and its owner; and the UIDs expunged after ``base`` (the
  modseq of its first read) with their modseq. It answers "what changed after
  modseq m" for any ``m >= base`` without the database, exactly as the store's
  rows and tombstones would (``changes_between`` / ``expunged_between``).
- It is trusted only while nothing says it may be behind: every change
  notification of the process (``ChangeNotifier.watch``: in-process commits,
  PostgreSQL's LISTEN for other processes, the SQLite poller) moves the entry's
  generation, and the next look reads the mailbox row once and, if its
  HIGHESTMODSEQ moved, the rows and tombstones in between: one read per change
  and per process, however many sessions look. Concurrent looks share that read.
  A look more than ``REVALIDATE_AFTER`` seconds after the last read (the injected
  clock) reads the row again, for writers no notification reached.
- A writer of this process that took modseq m under the mailbox's row lock reads
  the messages from an entry at m - 1 (``known``: nothing can come between), and
  after its commit applies its own change (``applied``): the entry is at m
  without reading back what was written. If any other notification came
  meanwhile the entry stays due for a read. This rests on one ``publish`` per
  committed unit of work (``UnitOfWork.commit``): a publication covering two
  units' changes to one mailbox would pass for the writer's own alone.
- SELECT still reads the mailbox row from the store (the moment a session's view
  is built from the truth); its messages come from the entry when the entry is
  at that row's UIDVALIDITY and HIGHESTMODSEQ (``states_at``: every change to a
  message takes a new modseq, so the two cannot differ), else from the store,
  and that read is handed to the cache when it is newer.
- Bounded: at most ``MAX_MESSAGES`` messages in all, the least recently used
  mailboxes dropped first (a dropped mailbox is read again when next looked at).
"""

from __future__ import annotations

import asyncio
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from mailserver.notify import ChangeNotifier
from mailserver.store.repositories.mail import MailboxRow

#: seconds after which a mailbox no notification mentioned is looked at again in the store
REVALIDATE_AFTER = 1.0
#: messages held by one process's cache, over all its mailboxes
MAX_MESSAGES = 200_000
#: reads in a row ``current`` makes while notifications keep coming before it lets the caller read the store
READ_ATTEMPTS = 3

#: (uid, stored flags, modseq, expunged) rows of a change read: what ``MessageViews.delta`` returns
DeltaRow = tuple[int, str, int, bool]
#: (mailbox id, modseq known) -> the mailbox's row (None: gone) and, if it moved past that modseq, the delta
ChangesRead = Callable[[int, int], Awaitable[tuple[MailboxRow | None, list[DeltaRow]]]]


@dataclass(slots=True)
class MailboxState:
    """One mailbox as the store holds it at ``row.highestmodseq``."""

    row: MailboxRow
    messages: dict[int, tuple[str, int]]  # uid -> (stored flags, modseq)
    base: int  # expunges after this modseq are in ``expunged``
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq of its expunge
    generation: int = 0  # notifications received
    checked: int = 0  # the generation the last read (or own write) brought the entry up to
    checked_at: float = 0.0
    echoes: int = 0  # own commits already applied whose notification the database will send back
    reading: asyncio.Task[None] | None = None

    @property
    def highestmodseq(self) -> int:
        return self.row.highestmodseq

    def changed_after(self, since: int) -> list[tuple[int, str, int]]:
        """(uid, flags, modseq) of the messages added or changed after ``since``, by UID."""
        return sorted((u, f, m) for u, (f, m) in self.messages.items() if m > since)

    def expunged_after(self, since: int) -> list[int]:
        return sorted(u for u, m in self.expunged.items() if m > since)

    def apply(self, rows: Iterable[DeltaRow]) -> None:
        for uid, flags, modseq, gone in rows:
            if gone:
                self.messages.pop(uid, None)
                self.expunged[uid] = modseq
            else:
                self.messages[uid] = (flags, modseq)


class MailboxCache:
    """The process's selected mailboxes of one database (``cache_of``)."""

    def __init__(self, notifier: ChangeNotifier) -> None:
        self._entries: OrderedDict[int, MailboxState] = OrderedDict()
        self._size = 0
        self.reads = 0  # store reads made to bring entries up to date (tests, metrics)
        self._notifier = weakref.ref(notifier)  # the notifier holds the cache (its watcher), not the other way
        notifier.watch(self._notified)

    # --- notifications --------------------------------------------------------------------------------

    def _notified(self, mailbox_ids: Iterable[int] | None, remote: bool) -> None:
        """A change notification (``None``: anything may have changed, e.g. a listener reconnected); one from
        the database that an own write already applied said would come back (``echoes``) is spent."""
        ids = list(self._entries) if mailbox_ids is None else mailbox_ids
        for mid in ids:
            entry = self._entries.get(mid)
            if entry is None:
                continue
            if mailbox_ids is None:
                entry.echoes = 0
            elif remote and entry.echoes:
                entry.echoes -= 1
                continue
            entry.generation += 1

    # --- reading --------------------------------------------------------------------------------------

    def peek(self, mailbox_id: int, now: float) -> MailboxState | None:
        """The entry if it is known to be current (no database work), else None."""
        entry = self._entries.get(mailbox_id)
        if entry is None or entry.checked != entry.generation or now - entry.checked_at >= REVALIDATE_AFTER:
            return None
        self._entries.move_to_end(mailbox_id)
        return entry

    async def current(self, mailbox_id: int, now: float, read: ChangesRead) -> MailboxState | None:
        """The entry brought up to date (None if the mailbox is gone or was never put here by ``install``)."""
        fresh = self.peek(mailbox_id, now)
        if fresh is not None:
            return fresh
        entry = self._entries.get(mailbox_id)
        if entry is None:
            return None
        for _ in range(READ_ATTEMPTS):
            task = entry.reading
            if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
                task = entry.reading = asyncio.ensure_future(self._read(entry, now, read))
            await asyncio.shield(task)
            if self._entries.get(mailbox_id) is not entry:
                return None  # gone, or replaced by a SELECT's read: the caller reads the store itself
            if entry.checked == entry.generation:
                return entry
        return None  # changing faster than it can be read: the caller reads the store itself

    async def _read(self, entry: MailboxState, now: float, read: ChangesRead) -> None:
        seen = entry.generation
        mailbox_id = entry.row.id
        self.reads += 1
        row, rows = await read(mailbox_id, entry.highestmodseq)
        if self._entries.get(mailbox_id) is not entry:
            return  # dropped or replaced meanwhile
        if row is None or row.uidvalidity != entry.row.uidvalidity:
            self.drop(mailbox_id)
            return
        if row.highestmodseq < entry.highestmodseq:
            return  # an own write moved the entry past this read meanwhile: read again
        before = len(entry.messages)
        entry.apply(rows)
        self._size += len(entry.messages) - before
        entry.row = row
        entry.checked, entry.checked_at = seen, now
        self._trim()

    # --- filling --------------------------------------------------------------------------------------

    def install(self, row: MailboxRow, states: Iterable[tuple[int, str, int]], now: float) -> None:
        """What SELECT read from the store, kept if the cache knows nothing newer of the mailbox."""
        old = self._entries.get(row.id)
        if old is not None and old.row.uidvalidity == row.uidvalidity and old.highestmodseq >= row.highestmodseq:
            self._entries.move_to_end(row.id)
            return
        if old is not None:
            self.drop(row.id)
        entry = MailboxState(row, {u: (f, m) for u, f, m in states}, base=row.highestmodseq)
        entry.checked_at = now
        self._entries[row.id] = entry
        self._size += len(entry.messages)
        self._trim()

    def states_at(self, row: MailboxRow) -> list[tuple[int, str, int]] | None:
        """(uid, stored flags, modseq) of every message, by UID, if the entry holds the mailbox exactly as
        ``row`` (just read from the store) says it is: same UIDVALIDITY and HIGHESTMODSEQ (every change to a
        message takes a new modseq, so nothing can differ); None otherwise (read the store)."""
        entry = self._entries.get(row.id)
        if entry is None or entry.row.uidvalidity != row.uidvalidity or entry.highestmodseq != row.highestmodseq:
            return None
        self._entries.move_to_end(row.id)
        return sorted((u, f, m) for u, (f, m) in entry.messages.items())

    def generation(self, mailbox_id: int) -> int | None:
        """The entry's generation if it is current, to hand to ``applied`` after a write."""
        entry = self._entries.get(mailbox_id)
        if entry is None or entry.checked != entry.generation:
            return None
        return entry.generation

    def known(self, mailbox_id: int, modseq: int) -> MailboxState | None:
        """The entry if it holds the mailbox exactly at ``modseq`` (a writer holding the row lock, whose new
        modseq is ``modseq + 1``, reads the messages from it instead of the store)."""
        entry = self._entries.get(mailbox_id)
        return entry if entry is not None and entry.highestmodseq == modseq else None

    def applied(
        self,
        mailbox_id: int,
        modseq: int,
        generation: int | None,
        *,
        flags: Mapping[int, str] | None = None,
        expunged: Iterable[int] = (),
        uidnext: int | None = None,
        alone: bool = True,
    ) -> None:
        """This process committed ``modseq`` on the mailbox: ``flags`` written (new messages included, below
        ``uidnext``), ``expunged`` removed.

        Applied only if the entry holds the mailbox at ``modseq - 1`` (the writer held the row lock: nothing
        came between). ``generation`` is what ``generation`` said before the write: if the one notification
        since is the writer's own commit and that commit changed nothing else of the mailbox (``alone``), the
        entry is current again without a read."""
        entry = self.known(mailbox_id, modseq - 1)
        if entry is None:
            return
        for uid, f in (flags or {}).items():
            if uid in entry.messages or uid >= entry.row.uidnext:
                self._size += uid not in entry.messages
                entry.messages[uid] = (f, modseq)
        for uid in expunged:
            if entry.messages.pop(uid, None) is not None:
                self._size -= 1
                entry.expunged[uid] = modseq
        entry.row = entry.row.moved(modseq, uidnext)
        if alone and generation is not None and entry.checked == generation and entry.generation == generation + 1:
            entry.checked = entry.generation
            notifier = self._notifier()
            if notifier is not None and notifier.echoing:
                entry.echoes += 1

    def first_recent(self, mailbox_id: int) -> int | None:
        """Where \\Recent starts as far as this process knows (claims of its sessions included)."""
        entry = self._entries.get(mailbox_id)
        return None if entry is None else entry.row.first_recent_uid

    def claimed_recent(self, mailbox_id: int, uidnext: int) -> None:
        """This process claimed \\Recent up to ``uidnext``: no other session need try for those."""
        entry = self._entries.get(mailbox_id)
        if entry is not None and entry.row.first_recent_uid < uidnext:
            entry.row = entry.row.recent_from(uidnext)

    def drop(self, mailbox_id: int) -> None:
        entry = self._entries.pop(mailbox_id, None)
        if entry is not None:
            self._size -= len(entry.messages)

    def _trim(self) -> None:
        while self._size > MAX_MESSAGES and len(self._entries) > 1:
            mid = next(iter(self._entries))
            self.drop(mid)

    def __len__(self) -> int:
        return len(self._entries)


_CACHES: weakref.WeakKeyDictionary[ChangeNotifier, MailboxCache] = weakref.WeakKeyDictionary()


def cache_of(notifier: ChangeNotifier) -> MailboxCache:
    """The one cache of the process for the database whose changes ``notifier`` announces."""
    cache = _CACHES.get(notifier)
    if cache is None:
        cache = _CACHES[notifier] = MailboxCache(notifier)
    return cache
