"""Work on a message off the event loop, without the finished future keeping its result alive.

The asyncio future ``asyncio.to_thread`` awaits still holds its result after the ``await``
returns, until the loop runs again. Code that goes on without awaiting kept two copies of a
message: a 49 MB message parsed in a thread outlived its first header edit (the intake edits the
header three times before its next ``await``), one more copy of it in memory (issue 14 point 3).
``in_thread`` hands the result back in a list the caller empties, so the future holds None.

Invariant: once ``in_thread`` returns, only the caller holds the result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (``asyncio.to_thread``); the result held by the caller only."""
    box: list[T] = []

    def run() -> None:
        box.append(fn(*args, **kwargs))

    await asyncio.to_thread(run)
    return box.pop()
