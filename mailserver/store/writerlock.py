"""The SQLite writer shared by the processes of one database: a lock file beside it, taken before a batch's BEGIN.

SQLite lets one transaction write at a time. A second process's ``BEGIN IMMEDIATE`` that finds the lock
taken does not wait for it to be released: its busy handler sleeps and tries again, 1, 2, 5, 10, 15, 20, 25 ms
and on (measured: two ``masante-server`` processes under 20 SMTP clients, p99 of DATA -> 250 150 ms -> 1.6-1.8
s, no more messages per second than one process). Each process's group writer (``groupcommit``) therefore
takes this lock first and holds it from its batch's BEGIN to the end of its COMMIT or ROLLBACK; a process that
waits for it is woken by the kernel the moment the other lets go, and meanwhile its event loop goes on serving
(its next batch gathers the units that arrive).

Invariants:
- ``flock(LOCK_EX)`` on ``<database>-writer.lock`` (0600, created on first use). The kernel releases it when the
  process dies, SIGKILL included: a crashed writer never leaves the others waiting.
- The lock orders writers; it does not protect anything by itself. A writer that does not take it (a tool of
  another version, ``sqlite3`` by hand) still meets SQLite's own lock and its busy timeout, as before.
- A blocking wait happens on a thread of the loop's executor, never on the event loop. If the waiter is
  cancelled, the lock it may get afterwards is released at once, on that thread: a cancelled wait never leaves
  the lock held.
- One holder per process at a time (the group writer opens one batch at a time); ``acquire`` by a second
  coroutine of the same process while it is held is a programming error.
- In-memory and URI databases are private to their process: no lock file, ``acquire`` costs nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import threading

from mailserver.sqlitefile import beside
from mailserver.store.errors import StoreBusy

LOCK_FILE_MODE = 0o600


def lock_path(database: str | None) -> str | None:
    """The lock file of the SQLite database file ``database`` (None: it has none: in memory, a URI, not SQLite)."""
    return beside(database, "-writer.lock")


class WriterLock:
    def __init__(self, database: str | None) -> None:
        self.path = lock_path(database)
        self._fd: int | None = None
        self._held = False
        self._guard = threading.Lock()  # the waiting thread and a cancelled waiter agree on who releases

    @property
    def held(self) -> bool:
        return self._held

    async def acquire(self, patience: float) -> None:
        """Hold the lock; ``StoreBusy`` if another process held it for ``patience`` seconds."""
        if self.path is None:
            return
        if self._held:
            raise RuntimeError("the writer lock is held already by this process")
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_FILE_MODE)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            await self._wait(self._fd, patience)
        self._held = True

    async def _wait(self, fd: int, patience: float) -> None:
        state = {"granted": False, "abandoned": False}  # each read and written under ``_guard``

        def block() -> None:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with self._guard:
                if state["abandoned"]:  # nobody awaits it any more: give it back at once
                    fcntl.flock(fd, fcntl.LOCK_UN)
                else:
                    state["granted"] = True

        waiting = asyncio.get_running_loop().run_in_executor(None, block)
        try:
            async with asyncio.timeout(patience):
                await asyncio.shield(waiting)
        except BaseException as exc:
            with self._guard:
                state["abandoned"] = True
                if state["granted"]:  # granted as we gave up (its answer not yet seen by the loop)
                    fcntl.flock(fd, fcntl.LOCK_UN)
            if isinstance(exc, TimeoutError):
                raise StoreBusy("another process held the database's writer too long; try again") from None
            raise

    def release(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
