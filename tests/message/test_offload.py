"""``in_thread``: what a worker thread returns is held by the caller alone (issue 14 point 3).

With ``asyncio.to_thread`` the finished future held the parsed message until the loop ran again: its
bytes outlived the first header edit, one more copy of a 49 MB message in memory. The collector is off
in these tests, so that only plain references count.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from mailserver.message import PARSE_IN_THREAD, parse_message_async
from mailserver.message.offload import in_thread


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_message_parsed_in_a_thread_dies_with_its_first_edit(no_collector: None) -> None:
    raw = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" * (PARSE_IN_THREAD // 2 + 10)  # parsed in a thread
    msg = await parse_message_async(raw)
    del raw
    old = msg.raw
    msg = msg.prepend(b"Received: by test\r\n")
    assert sys.getrefcount(old) == 2  # ``old`` and the call's argument: nothing else holds the first bytes
    assert msg.raw.startswith(b"Received: by test\r\nSubject: big")


async def test_in_thread_returns_the_result_and_raises_the_error() -> None:
    assert await in_thread(sorted, [3, 1, 2]) == [1, 2, 3]
    with pytest.raises(ZeroDivisionError):
        await in_thread(divmod, 1, 0)
