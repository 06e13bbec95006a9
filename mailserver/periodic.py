"""A ``Service`` with no endpoint that does its work now and then: the agenda's reminders, the whitelist sync.

The subclass writes ``run_once()``; this class runs it in a task of its own every ``poll`` seconds, when
``wake()`` is called, and for ``settle()``. The work decides by ``ctx.clock`` (what is due), never by how
often it runs, so a test moves a ``FakeClock`` and calls ``settle()`` instead of sleeping.

Invariants:
- ``settle()`` returns once a pass that began after the call has finished without an error (or the service
  stops): what was due at the clock's present is done.
- An unexpected error in a pass is logged by its type only (``<name>.loop-error``), the loop pauses
  ``ERROR_PAUSE`` seconds and goes on: one bad row never stops the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailserver.endpoints import Endpoint

ERROR_PAUSE = 5.0


class PeriodicService:
    name = "periodic"

    def __init__(self, *, poll: float, log: logging.Logger) -> None:
        self.poll = poll
        self._log = log
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._requested = 0
        self._settled = 0
        self._cond = asyncio.Condition()

    async def run_once(self) -> object:
        raise NotImplementedError

    async def start(self) -> list[Endpoint]:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)
        return []

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        async with self._cond:
            self._cond.notify_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def wake(self) -> None:
        self._wake.set()

    async def settle(self) -> None:
        """Return once a pass that began after this call has done everything due at the clock's present."""
        self._requested += 1
        wanted = self._requested
        self._wake.set()
        async with self._cond:
            await self._cond.wait_for(lambda: self._settled >= wanted or self._stopping)

    async def _run(self) -> None:
        while not self._stopping:
            requested = self._requested
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - the loop survives; the error is logged by its type
                self._log.error(f"{self.name}.loop-error", extra={"fields": {"error": type(exc).__name__}})
                await asyncio.sleep(ERROR_PAUSE)
            else:
                async with self._cond:
                    self._settled = max(self._settled, requested)
                    self._cond.notify_all()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll)
            self._wake.clear()
