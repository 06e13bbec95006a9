"""The SQLite writer across processes: a group writer takes ``<database>-writer.lock`` before its BEGIN.

Another process holding the lock (a real one, started here) keeps this one's write waiting, without
blocking its event loop, until it lets go or dies; a wait given up (timeout, cancellation) never leaves the lock
held. SQLite only: PostgreSQL writers meet on rows, not on a file.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from mailserver.context import Context
from mailserver.store.errors import StoreBusy
from mailserver.store.models import Domain, DomainKind
from mailserver.store.writerlock import WriterLock, lock_path

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # until told to let go (or killed)
"""


class Holder:
    """Another process that holds the lock file until ``let_go`` (or ``kill``)."""

    def __init__(self, path: str) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter, our own script
            [sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "held\n"

    def let_go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(10)
        self.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.close()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


def free_in_another_process(path: str) -> bool:
    """Whether a process that is not this one can take the lock right now."""
    probe = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n    sys.exit(1)\n"
    )
    return subprocess.run([sys.executable, "-c", probe, path], check=False).returncode == 0  # noqa: S603


@pytest.fixture
def db_url(sqlite_template: Path, tmp_path: Path) -> str:
    """SQLite only (this module overrides the two-database ``db_url``): PostgreSQL writers meet on rows."""
    target = tmp_path / "masante.db"
    shutil.copyfile(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"


@pytest.fixture
def holder(ctx: Context) -> Iterator[Holder]:
    path = lock_path(make_url(ctx.db.url).database)
    assert path is not None
    h = Holder(path)
    yield h
    if h.proc.poll() is None:
        h.kill()


async def add_domain(ctx: Context, name: str) -> None:
    async with ctx.uow() as uow:
        uow.session.add(Domain(name=name, kind=DomainKind.PROFESSIONAL))
        await uow.commit()


async def count_domains(ctx: Context, name: str) -> int:
    async with ctx.uow(readonly=True) as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(Domain).where(Domain.name == name)) or 0)


def test_the_lock_file_is_beside_the_database(ctx: Context) -> None:
    database = make_url(ctx.db.url).database
    assert lock_path(database) == f"{database}-writer.lock"
    assert lock_path(":memory:") is None and lock_path("file:x?mode=memory") is None and lock_path(None) is None


async def test_a_write_waits_for_another_process_holding_the_writer(ctx: Context, holder: Holder) -> None:
    writing = asyncio.create_task(add_domain(ctx, "waits.example"))
    ticks = 0
    for _ in range(200):  # the event loop goes on turning while the write waits on a thread
        await asyncio.sleep(0.005)
        ticks += 1
    assert not writing.done()
    assert await count_domains(ctx, "waits.example") == 0  # reads are not held up either
    holder.let_go()
    await asyncio.wait_for(writing, 10)
    assert await count_domains(ctx, "waits.example") == 1
    assert ticks == 200
    path = lock_path(make_url(ctx.db.url).database)
    assert path is not None and free_in_another_process(path)  # let go after the COMMIT


async def test_a_writer_killed_while_holding_lets_the_others_go_on(ctx: Context, holder: Holder) -> None:
    writing = asyncio.create_task(add_domain(ctx, "after-kill.example"))
    await asyncio.sleep(0.1)
    assert not writing.done()
    holder.kill()  # SIGKILL: the kernel drops its lock
    await asyncio.wait_for(writing, 10)
    assert await count_domains(ctx, "after-kill.example") == 1


async def test_a_wait_given_up_never_leaves_the_lock_held(ctx: Context, holder: Holder) -> None:
    path = lock_path(make_url(ctx.db.url).database)
    assert path is not None
    lock = WriterLock(make_url(ctx.db.url).database)
    try:
        with pytest.raises(StoreBusy, match="another process held the database's writer"):
            await lock.acquire(0.2)
        cancelled = asyncio.create_task(lock.acquire(30))
        await asyncio.sleep(0.1)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not lock.held
        holder.let_go()
        # both abandoned waits got the lock from the kernel when the holder let go, and gave it back at once
        for _ in range(100):
            if free_in_another_process(path):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("an abandoned wait kept the writer lock")
        await lock.acquire(1)  # and this process can still take it
        assert lock.held and not free_in_another_process(path)
        lock.release()
        assert free_in_another_process(path)
    finally:
        lock.close()


async def test_in_memory_databases_have_no_lock_file() -> None:
    lock = WriterLock(":memory:")
    await lock.acquire(0)
    assert lock.path is None and not lock.held  # nothing to hold: such a database is its own process's alone
    lock.close()
