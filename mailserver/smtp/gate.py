"""How many large messages this process takes in at once (issue 14 point 3).

A large message costs the server several times its size while it is read, parsed, judged and
sealed; eight of them at once would cost gigabytes. The DATA reader asks the ``LargeMessageGate``
for a slot as soon as a message grows past ``limits.large_message_size`` (smaller messages never
wait): with a slot it reads on, and the slot is given back once the message is stored or refused.
Without one it stops reading (the client's socket fills and its writes block: TCP is the queue),
so a message waiting costs the server ``large_message_size`` at most (past ``limits.spool_threshold``
that is on disk, encrypted: ``smtp.dataspool``).

Invariants:
- At most ``slots`` messages hold a slot at any time; ``peak`` is the most that ever did.
- Slots are given in the order they were asked for (``asyncio.Semaphore`` is fair).
- A session waits ``wait`` seconds at most (below the client's 3-minute data block timeout, RFC
  5321 §4.5.3.2.5); past it, the reader reads the rest of the data without keeping it, and the
  answer after the final dot is ``451 4.3.2`` (system not accepting messages just now: retry).
- A session holding a slot must average ``min_rate`` octets/s since its 354
  (``limits.large_message_min_rate``; the usual ``smtp.data_min_rate`` otherwise):
  a client trickling a large message cannot hold a slot for hours; past it, 421 4.4.2.
- The wait never counts against the slow-DATA rate (``smtp.data_min_rate``) nor the idle timeout:
  the server, not the client, is the slow one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from policies.reply import Reply

BUSY = Reply(
    451,
    "4.3.2",
    "Too many large messages are being received just now: the message was not accepted, try again later",
)


class LargeMessageGate:
    def __init__(self, *, threshold: int, slots: int, wait: float, min_rate: int = 0) -> None:
        self.threshold = threshold  # octets past which a message needs a slot; 0: never
        self.slots = max(1, slots)
        self.wait = wait
        self.min_rate = min_rate  # octets/s a session holding a slot must average (a slow client is cut, 421)
        self.in_use = 0
        self.peak = 0
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None
        self._changed: asyncio.Event | None = None

    def _moved(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def until(self, predicate: Callable[[LargeMessageGate], bool]) -> None:
        """Return once ``predicate(self)`` holds (a metric, a test waiting for sessions to queue up)."""
        while not predicate(self):
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            await self._changed.wait()

    def needs_slot(self, size: int) -> bool:
        return bool(self.threshold) and size > self.threshold

    async def enter(self) -> bool:
        """Take a slot, waiting ``wait`` seconds at most: True with the slot, False without."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
        if self._sem.locked():
            self.waiting += 1
            self._moved()
            try:
                async with asyncio.timeout(self.wait):
                    await self._sem.acquire()
            except TimeoutError:
                return False
            finally:
                self.waiting -= 1
                self._moved()
        else:
            await self._sem.acquire()  # free: returns at once
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        self._moved()
        return True

    def leave(self) -> None:
        if self._sem is None or self.in_use <= 0:
            raise RuntimeError("LargeMessageGate.leave() without enter()")
        self.in_use -= 1
        self._sem.release()
        self._moved()
