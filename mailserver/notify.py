"""Change notifications: "mailbox N changed", so that IDLE sessions wake up.

Invariants:
- Notifications are sent only after the change is committed (the unit of work
  calls ``publish`` after ``commit``; on PostgreSQL ``pg_notify`` inside the
  transaction is delivered by the server at commit).
- A notification carries only a mailbox id; the listener reads what changed from
  the store (modseq), so a lost or duplicated notification costs a wake-up, never
  a wrong view.
- An account's mailbox list changing publishes ``account_channel`` (a negative
  id): NOTIFY sessions learn of CREATE, DELETE, RENAME and SUBSCRIBE that way.
- Within one process, ``publish`` reaches every subscriber directly, and first
  every watcher (``watch``: the IMAP sessions' shared mailbox cache). Across
  processes on PostgreSQL, ``PgListener`` LISTENs on ``CHANNEL`` and republishes
  locally. SQLite has no notifications: the server processes of one database file
  tell each other over datagram sockets beside it (``SiblingRelay``), and
  ``ModseqPoller`` reads the HIGHESTMODSEQ of the mailboxes someone watches every
  ``server.change_poll_interval`` seconds (one query per process, however many
  sessions wait) and republishes those that moved: the changes of processes that
  do not tell (``masante-admin``), and any datagram lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sys
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from mailserver.sqlitefile import beside

CHANNEL = "masante_mailbox_changed"
log = logging.getLogger(__name__)


def account_channel(account_id: int) -> int:
    """The id published when an account's list of mailboxes or subscriptions changes (CREATE, DELETE, RENAME,
    SUBSCRIBE): minus the account id, which no mailbox id can be (RFC 5465 MailboxName, SubscriptionChange)."""
    return -account_id


class Subscription:
    """A handle whose ``wait()`` returns once one of its mailboxes changed since the last wait."""

    def __init__(self, notifier: ChangeNotifier, mailbox_ids: frozenset[int]) -> None:
        self._notifier = notifier
        self.mailbox_ids = mailbox_ids
        self._event = asyncio.Event()
        self.changed: set[int] = set()  # the mailboxes published since the last ``take_changed``

    def _fire(self, mailbox_id: int | None = None) -> None:
        if mailbox_id is not None:
            self.changed.add(mailbox_id)
        self._event.set()

    def take_changed(self) -> set[int]:
        """The mailboxes that changed since the last call (RFC 5465 NOTIFY: which STATUS to tell)."""
        out, self.changed = self.changed, set()
        return out

    async def wait(self, seconds: float | None = None) -> bool:
        """True if woken by a change, False after ``seconds`` without one."""
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return False
        self._event.clear()
        return True

    def close(self) -> None:
        self._notifier._unsubscribe(self)


#: told of every publication: the mailbox ids (None: any mailbox may have changed) and whether it came from
#: the database (PostgreSQL's LISTEN: every commit, this process's own included, comes back that way once)
Watcher = Callable[[Iterable[int] | None, bool], None]


class ChangeNotifier:
    def __init__(self) -> None:
        self._subs: dict[int, set[Subscription]] = defaultdict(set)
        self._watchers: list[Watcher] = []
        self.echoing = False  # a PgListener republishes every commit of the database, this process's too
        #: told of this process's own publications, to pass on to other processes (``SiblingRelay.send``)
        self.relay: Callable[[Iterable[int]], None] | None = None

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` on every publication, before the subscribers are woken (the process's mailbox
        cache: a woken session finds it already marked as behind)."""
        self._watchers.append(watcher)

    @contextlib.contextmanager
    def subscribe(self, mailbox_ids: Iterable[int]) -> Iterator[Subscription]:
        sub = Subscription(self, frozenset(mailbox_ids))
        for mid in sub.mailbox_ids:
            self._subs[mid].add(sub)
        try:
            yield sub
        finally:
            sub.close()

    def _unsubscribe(self, sub: Subscription) -> None:
        for mid in sub.mailbox_ids:
            subs = self._subs.get(mid)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[mid]

    def publish(self, mailbox_ids: Iterable[int], *, remote: bool = False) -> None:
        ids = set(mailbox_ids)
        if not remote and ids and self.relay is not None:
            self.relay(ids)
        for watcher in self._watchers:
            watcher(ids, remote)
        for mid in ids:
            for sub in list(self._subs.get(mid, ())):
                sub._fire(mid)

    def publish_all(self) -> None:
        """Changes may have been missed (a listener was away): every watcher and subscriber is told."""
        for watcher in self._watchers:
            watcher(None, True)
        self.publish(list(self._subs))

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subs.values())


class PgListener:
    """LISTENs on PostgreSQL and republishes other processes' changes to a local notifier."""

    def __init__(self, dsn: str, notifier: ChangeNotifier) -> None:
        self._dsn = dsn
        self._notifier = notifier
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            ids = [int(x) for x in payload.split(",") if x]
        except ValueError:
            log.warning("ignoring malformed change notification")
            return
        self._notifier.publish(ids, remote=True)

    async def start(self) -> None:
        import asyncpg

        self._conn = await asyncpg.connect(self._dsn)
        await self._conn.add_listener(CHANNEL, self._on_notify)
        self._notifier.echoing = True
        self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        """Reconnect if the listening connection drops; wake everyone after a gap (changes may be missed)."""
        import asyncpg

        while not self._stopping:
            await asyncio.sleep(2)
            if self._conn is not None and not self._conn.is_closed():
                continue
            try:
                self._conn = await asyncpg.connect(self._dsn)
                await self._conn.add_listener(CHANNEL, self._on_notify)
                self._notifier.publish_all()
            except (OSError, asyncpg.PostgresError):
                log.warning("change listener cannot reach PostgreSQL; retrying")

    async def stop(self) -> None:
        self._stopping = True
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()


#: seconds between two looks at the watched mailboxes, for changes made by other processes on SQLite
POLL_INTERVAL = 1.0

ModseqFetch = Callable[[list[int]], Awaitable[dict[int, int]]]


class ModseqPoller:
    """Republishes other processes' changes where the database cannot notify (SQLite)."""

    def __init__(self, fetch: ModseqFetch, notifier: ChangeNotifier, *, interval: float = POLL_INTERVAL) -> None:
        self._fetch = fetch
        self._notifier = notifier
        self._interval = interval
        self._seen: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.poll()
            except Exception:  # a busy or unreachable database: look again at the next tick
                log.warning("change poller could not read the mailboxes; retrying", exc_info=True)

    async def poll(self) -> None:
        watched = sorted(self._notifier._subs)
        self._seen = {mid: m for mid, m in self._seen.items() if mid in self._notifier._subs}
        if not watched:
            return
        current = await self._fetch(watched)
        # a mailbox seen for the first time is published too: it may have changed between the subscription
        # and this look, and a watcher woken for nothing only finds nothing new
        moved = [mid for mid, modseq in current.items() if self._seen.get(mid) != modseq]
        self._seen.update(current)
        if moved:
            self._notifier.publish(moved)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


#: the largest datagram a relay sends: a publication of more mailboxes (a broadcast) goes in several
RELAY_DATAGRAM = 8192


def relay_directory(database: str | None) -> str | None:
    """Where the server processes of the SQLite file ``database`` have their sockets (None: a database of one
    process: in memory, a URI)."""
    return beside(database, "-notify")


class SiblingRelay:
    """Tells the other server processes of one SQLite file of this process's commits, and them of theirs.

    Each process binds a datagram socket in ``directory`` (0700, beside the database) and, after each local
    publication (a commit of this process), sends the mailbox ids to every other socket there; what it
    receives it republishes locally as ``remote``. Nothing is guaranteed: a datagram a busy process could not
    take is dropped, and its ``ModseqPoller`` still sees the change at its next look. A socket whose process
    died (connection refused) is removed by the first sender that finds it.
    """

    def __init__(self, directory: str, notifier: ChangeNotifier) -> None:
        self.directory = directory
        self._notifier = notifier
        self._sock: Any = None
        self._name: str | None = None
        self._dir_fd: int | None = None
        self._prefix = directory  # how sockets in the directory are named (``start``: through the fd if it can)
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        # sockets are named through /proc/self/fd/N/: a socket's path is at most 107 bytes, the directory's may
        # be longer (Linux; elsewhere the plain path)
        self._dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        if sys.platform.startswith("linux"):
            self._prefix = f"/proc/self/fd/{self._dir_fd}"
        self._name = f"{os.getpid()}-{secrets.token_hex(4)}.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind(self._address(self._name))
        except BaseException:
            sock.close()
            os.close(self._dir_fd)
            self._dir_fd = None
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._notifier.relay = self.send

    def _address(self, name: str) -> str:
        return os.path.join(self._prefix, name)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(RELAY_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                log.warning("change relay could not read a notification", exc_info=True)
                return
            try:
                ids = [int(x) for x in data.split(b",") if x]
            except ValueError:
                log.warning("ignoring a malformed change notification (%d bytes)", len(data))
                continue
            self._notifier.publish(ids, remote=True)

    def send(self, mailbox_ids: Iterable[int]) -> None:
        """Tell the other processes (called by ``ChangeNotifier.publish`` for this process's own changes)."""
        if self._sock is None:
            return
        try:
            peers = [n for n in os.listdir(self.directory) if n != self._name and n.endswith(".sock")]
        except OSError:
            return
        if not peers:  # one server process on this file (the usual case): nothing to encode
            return
        payloads = _datagrams(sorted(mailbox_ids))
        for name in peers:
            peer = self._address(name)
            for payload in payloads:
                try:
                    self._sock.sendto(payload, peer)
                except (ConnectionRefusedError, FileNotFoundError):  # its process is gone
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.directory, name))
                    break
                except OSError:  # its queue is full (or the like): the poller will see the change
                    break

    async def stop(self) -> None:
        if self._notifier.relay == self.send:
            self._notifier.relay = None
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        if self._name is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.directory, self._name))
            self._name = None
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None


def _datagrams(ids: list[int]) -> list[bytes]:
    out: list[bytes] = []
    current = b""
    for mid in ids:
        item = str(mid).encode()
        if current and len(current) + 1 + len(item) > RELAY_DATAGRAM:
            out.append(current)
            current = b""
        current = item if not current else current + b"," + item
    if current:
        out.append(current)
    return out
