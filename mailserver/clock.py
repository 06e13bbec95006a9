"""Time, injected: what the server decides by the clock, it reads from ``ctx.clock``.

Invariants:
- Every decision that waits on time passing (the queue's retries, backoff,
  leases and expiry; DSN delays; grants and retention) reads ``ctx.clock``, never
  ``datetime.now`` or ``time.monotonic`` directly, so that a test moves time with
  ``FakeClock.advance`` instead of sleeping (mox: ``timeNow``, replaced during tests).
- ``clock()`` is the aware UTC now (the call shape ``ctx.clock()`` the services
  use); ``clock.monotonic()`` is seconds that never go back, for rates.
- A ``FakeClock`` never moves by itself except by one microsecond a reading, so
  that two events read in order are never at the same instant; nothing it
  decides changes between two ``advance`` calls.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def __call__(self) -> dt.datetime:
        """Now, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin that never go back."""
        ...


class SystemClock:
    """The machine's clocks."""

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "SystemClock()"


#: how far a reading of a FakeClock moves it, so that successive readings are strictly ordered
TICK = dt.timedelta(microseconds=1)


class FakeClock:
    """A clock that moves only when told to (``advance``); safe to read and advance from several threads."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        now = start if start is not None else dt.datetime.now(dt.UTC)
        if now.tzinfo is None:
            raise ValueError("a FakeClock starts at an aware datetime")
        self._now = now.astimezone(dt.UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            self._now += TICK
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            self._mono += TICK.total_seconds()
            return self._mono

    def advance(self, seconds: float) -> dt.datetime:
        """Move both clocks ``seconds`` forward; returns the new now."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._mono += seconds
            return self._now

    def advance_to(self, when: dt.datetime) -> dt.datetime:
        """Move forward to ``when`` (no move if it is already past)."""
        with self._lock:
            gap = (when - self._now).total_seconds()
        return self.advance(max(0.0, gap))

    def __repr__(self) -> str:
        return f"FakeClock({self._now.isoformat()})"
