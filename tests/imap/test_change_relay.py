"""Server processes of one SQLite file tell each other of their commits (``mailserver.notify.SiblingRelay``).

Each relay here is a process's: its own ``ChangeNotifier``, its own datagram socket in the directory beside
the database. A publication of one process's commit wakes the watchers of the others at once, never comes back
to its own; a process that died leaves a socket that the next sender removes; a publication too large for one
datagram (a broadcast) arrives whole, in pieces; what is not a list of mailbox ids is ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path

import pytest

from mailserver.notify import RELAY_DATAGRAM, ChangeNotifier, SiblingRelay, relay_directory


class Process:
    """What one server process has: a notifier, its relay, and what its watchers heard."""

    def __init__(self, directory: str) -> None:
        self.notifier = ChangeNotifier()
        self.relay = SiblingRelay(directory, self.notifier)
        self.heard: list[tuple[frozenset[int], bool]] = []
        self.notifier.watch(self._watch)

    def _watch(self, ids: Iterable[int] | None, remote: bool) -> None:
        self.heard.append((frozenset(ids or ()), remote))


async def until(predicate: object, what: str) -> None:
    for _ in range(2000):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0)  # the datagram is read when the loop looks at the socket
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """Where the database is: deep enough that a socket's full path would pass the 107 bytes AF_UNIX allows."""
    deep = tmp_path / ("a-long-directory-name-" * 5)
    deep.mkdir()
    assert len(str(deep / "masante.db-notify" / "123456-89abcdef.sock")) > 108
    return deep


@contextlib.contextmanager
def short_names(directory: Path) -> Iterator[Callable[[str], str]]:
    """Addresses of sockets in ``directory`` short enough for AF_UNIX (through ``/proc/self/fd``, as the relay)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield lambda name: f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


@pytest.fixture
async def two(home: Path) -> AsyncIterator[tuple[Process, Process]]:
    directory = relay_directory(str(home / "masante.db"))
    assert directory == str(home / "masante.db-notify")
    a, b = Process(directory), Process(directory)
    await a.relay.start()
    await b.relay.start()
    yield a, b
    await a.relay.stop()
    await b.relay.stop()


def test_databases_of_one_process_have_no_relay() -> None:
    assert relay_directory(":memory:") is None
    assert relay_directory("file:mem?mode=memory&cache=shared") is None
    assert relay_directory(None) is None


async def test_a_commit_in_one_process_wakes_the_watchers_of_the_other(two: tuple[Process, Process]) -> None:
    a, b = two
    with b.notifier.subscribe([7]) as sub:
        a.notifier.publish([7, 9])  # a's own commit
        assert await asyncio.wait_for(sub.wait(), 5)
        assert sub.take_changed() == {7}
    assert b.heard == [(frozenset({7, 9}), True)]  # told as another process's change
    assert a.heard == [(frozenset({7, 9}), False)]  # and a heard its own once, never back from b
    b.notifier.publish([3])
    await until(lambda: len(a.heard) == 2, "a hears b's commit")
    assert a.heard[1] == (frozenset({3}), True)
    assert len(b.heard) == 2  # b's own, not echoed by a


async def test_the_directory_is_private_and_a_stopped_process_leaves_no_socket(
    two: tuple[Process, Process], home: Path
) -> None:
    a, _ = two
    directory = home / "masante.db-notify"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert len(list(directory.glob("*.sock"))) == 2
    await a.relay.stop()
    assert len(list(directory.glob("*.sock"))) == 1
    a.notifier.publish([1])  # a stopped relay sends nothing
    assert a.notifier.relay is None


async def test_the_socket_of_a_process_that_died_is_removed_by_the_next_sender(
    two: tuple[Process, Process], home: Path
) -> None:
    a, b = two
    directory = home / "masante.db-notify"
    with short_names(directory) as address:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(address("4242-dead.sock"))
        s.close()  # bound and gone, as a process killed with SIGKILL leaves it
    assert (directory / "4242-dead.sock").exists()
    with b.notifier.subscribe([5]) as sub:
        a.notifier.publish([5])
        assert await asyncio.wait_for(sub.wait(), 5)  # the live neighbour is told all the same
    assert not (directory / "4242-dead.sock").exists()


async def test_a_broadcast_too_large_for_one_datagram_arrives_whole(two: tuple[Process, Process]) -> None:
    a, b = two
    ids = set(range(1_000_000, 1_005_000))  # 5,000 mailboxes: about 40 KB of ids
    assert len(",".join(map(str, ids))) > RELAY_DATAGRAM
    a.notifier.publish(ids)
    await until(lambda: set().union(*(h[0] for h in b.heard)) == ids, "every id reaches b")
    assert len(b.heard) > 1 and all(remote for _, remote in b.heard)


async def test_what_is_not_a_list_of_mailbox_ids_is_ignored(
    two: tuple[Process, Process], home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = two
    directory = home / "masante.db-notify"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        with short_names(directory) as address:
            for sock_path in directory.glob("*.sock"):
                s.sendto(b"1,2,\x1b[31mDROP", address(sock_path.name))
                s.sendto(b"11,12", address(sock_path.name))
    finally:
        s.close()
    await until(lambda: any(h[0] == {11, 12} for h in b.heard), "the good datagram is heard")
    await until(lambda: any(h[0] == {11, 12} for h in a.heard), "the good datagram is heard")
    assert all(h[0] != {1, 2} for h in a.heard + b.heard)
    assert "malformed change notification" in caplog.text
    assert "\x1b" not in caplog.text  # its bytes are not logged
