"""Crash consistency of the administrator's long commands: ``masante-admin keys rotate`` and ``trust import``.

Each is run as a real process and SIGKILLed at a moment drawn from a seeded generator: a delay after
the process begins writing (a hook of the test says so on stdout: ``MARK``), within the time the whole
command took in this process (a calibration run, which is also the state the killed run starts
from). Then:

- rotation: whatever the moment, every message of every account still decrypts with the keys on
  disk (``load_keyring``: the KEK file and a ``.next`` left by the killed run); a rerun completes; after
  it, no ``.next`` is left and every account key is wrapped by the KEK in the file;
- import: the trust space is exactly the list before (A) or the list being imported (B), never a mix;
  a rerun completes and leaves B;
- the audit chain verifies after each step.

``tests/crash/test_admin_kill.py`` kills each once per database; ``make bench-crash`` more often.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crypto.envelope import Keyring, pending_path, read_key_file
from directory.trust import WHITELIST, TrustSpace
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.keys import rotate_kek
from tests import support
from tests.crash.campaign import TIMEOUT, Site, _contents, audit_report, with_context
from tests.data.generate import write_whitelist
from tests.harness.messages import message
from tests.test_server_process import clean_env

ADMIN = "from admin_cli.main import main; main()"
#: a hook saying ``step`` on stdout when the command begins writing (the moment a kill's delay counts from):
#: ``keys rotate`` writes the next KEK (step 1 of ``mailserver.keys``),
#: ``trust import`` applies the parsed list (``TrustSpace._apply``, in its one transaction)
MARK = {
    "rotate": (
        "import mailserver.keys as k\n"
        "real = k.write_key_file\n"
        "k.write_key_file = lambda *a: (print('step', flush=True), real(*a))[1]\n"
    ),
    "import": (
        "from directory.trust import TrustSpace as T\n"
        "real = T._apply\n"
        "async def marked(*a):\n"
        "    print('step', flush=True)\n"
        "    return await real(*a)\n"
        "T._apply = marked\n"
    ),
}
ACCOUNTS = 12


def run_admin(site: Site, args: list[str], kill_after: float | None = None) -> tuple[float, bool]:
    """``masante-admin ARGS``: the seconds it ran after its mark, and whether it was killed (``kill_after``
    seconds after the mark: the moment it begins writing; it may finish first). A run not killed must succeed."""
    mark = MARK[args[1]] if kill_after is not None else ""
    proc = subprocess.Popen(  # noqa: S603 - our own command
        [sys.executable, "-c", mark + ADMIN, "--config", str(site.cfg), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    assert proc.stdout is not None
    first = proc.stdout.readline() if mark else ""
    t0 = time.monotonic()
    killed = False
    try:
        if kill_after is not None and first == "step\n":
            try:
                proc.wait(kill_after)
            except subprocess.TimeoutExpired:
                proc.kill()
                killed = True
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    took = time.monotonic() - t0
    if not killed:
        assert proc.returncode == 0, f"masante-admin {' '.join(args)} failed ({proc.returncode}):\n{first}{out}{err}"
    return took, killed


# --- keys rotate ------------------------------------------------------------------------------------------


async def populate_mail(ctx: Context) -> None:
    """Professionals of their own, a message in each one's INBOX."""
    for i in range(ACCOUNTS):
        account = await support.make_pro(ctx, f"dr.rotate{i}")
        async with ctx.uow() as uow:
            acct = await uow.accounts.get(account.id)
            assert acct is not None
            raw = message("lab@lab.test", acct.address, f"rotate-{i}", f"résultats {i}\n" * 50)
            await deliver(uow, ctx.keyring, raw, [acct])
            await uow.commit()


async def _readable(ctx: Context) -> list[str]:
    problems = []
    async with ctx.uow(readonly=True) as uow:
        addresses = [a.address for a in await uow.accounts.list() if a.address.startswith("dr.rotate")]
    for address in addresses:
        subjects = [m.subject for m in await _contents(ctx, address)]  # decrypts every body
        if len(subjects) != 1:
            problems.append(f"{address} holds {len(subjects)} messages")
    intact, sentence = await audit_report(ctx)
    return problems + ([] if intact else [f"audit verify: {sentence}"])


def readable(site: Site, when: str) -> list[str]:
    """Every message opens with the keys on disk (a Context loads them as the server does)."""
    try:
        return [f"{when}: {p}" for p in with_context(site, _readable)]
    except Exception as exc:  # noqa: BLE001 - any failure to open a key or a body is the finding
        return [f"{when}: {exc!r}"]


async def _wrapped_by(ctx: Context) -> set[str]:
    async with ctx.uow(readonly=True) as uow:
        return {Keyring.wrapped_kid(a.wrapped_key) for a in await uow.accounts.list() if a.wrapped_key}


def settled(site: Site, when: str) -> list[str]:
    kek_file = site.config.resolve(site.config.keys.kek_file)
    problems = []
    if pending_path(kek_file).exists():
        problems.append(f"{when}: {pending_path(kek_file).name} left behind")
    kids = with_context(site, _wrapped_by)
    if kids != {read_key_file(kek_file).kid.hex()}:
        problems.append(f"{when}: account keys wrapped by {sorted(kids)}, the KEK file holds another")
    return problems


def timed(site: Site, fn: Callable[[Context], Any]) -> tuple[float, float]:
    """A calibration run of a command's work in this process: seconds to open the store, then to do it."""

    async def go() -> tuple[float, float]:
        t0 = time.monotonic()
        ctx = site.context()
        try:
            async with ctx.uow(readonly=True):
                pass
            t1 = time.monotonic()
            await fn(ctx)
            return t1 - t0, time.monotonic() - t1
        finally:
            await ctx.close()

    return asyncio.run(go())


def left_by_kill(site: Site) -> str:
    """Which of the rotation's steps the kill interrupted, from what it left on disk and in the store."""
    kek_file = site.config.resolve(site.config.keys.kek_file)
    nxt = pending_path(kek_file)
    if not nxt.exists():
        return "no .next (before step 1, or done)"
    if with_context(site, _wrapped_by) == {read_key_file(nxt).kid.hex()}:
        return ".next, keys re-wrapped under it (after the commit, before the rename)"
    return ".next, keys still under the old KEK (before the commit)"


def rotation_campaign(site: Site, rng: random.Random, kills: int, report: Callable[[str], None]) -> list[str]:
    _, work = timed(site, lambda ctx: rotate_kek(ctx, actor="test"))  # the calibration: a whole rotation
    problems = readable(site, "after a rotation") + settled(site, "after a rotation")
    for k in range(kills):
        delay = rng.uniform(0, work)
        _, killed = run_admin(site, ["keys", "rotate"], kill_after=delay)
        left = left_by_kill(site)
        found = readable(site, f"kill {k + 1}, before the rerun")
        run_admin(site, ["keys", "rotate"])
        found += readable(site, f"kill {k + 1}, after the rerun") + settled(site, f"kill {k + 1}, after the rerun")
        report(
            f"  keys rotate {'killed' if killed else 'finished before its kill'} at {delay * 1000:.0f} ms "
            f"(a whole run: {work * 1000:.0f} ms): {left}; "
            + ("every message readable, the rerun completed" if not found else f"{len(found)} PROBLEMS")
        )
        problems += found
    return problems


# --- trust import -----------------------------------------------------------------------------------------

#: the whitelist before (more domains) and the one being imported: domains removed, DNs changed
LIST_A = (1200, 1)
LIST_B = (900, 2)

TrustState = dict[str, tuple[str | None, frozenset[str]]]


async def _trust_state(ctx: Context) -> TrustState:
    return {o.domain: (o.description, frozenset(o.dns)) for o in await TrustSpace(ctx).list() if o.source == WHITELIST}


def trust_state(site: Site) -> TrustState:
    state: TrustState = with_context(site, _trust_state)
    return state


def import_campaign(
    site: Site,
    tmp: Path,
    rng: random.Random,
    kills: int,
    report: Callable[[str], None],
    lists: tuple[tuple[int, int], tuple[int, int]] = (LIST_A, LIST_B),
) -> list[str]:
    """``kills`` rounds: import A, kill an import of B, check, rerun it. ``lists``: (domains, seed) of A and B."""
    a, b = tmp / "list-a.xml", tmp / "list-b.xml"
    write_whitelist(a, lists[0][0], seed=lists[0][1])
    write_whitelist(b, lists[1][0], seed=lists[1][1])
    problems: list[str] = []
    for k in range(kills):
        # the calibration, and the state before
        _, work = timed(site, lambda ctx: TrustSpace(ctx).import_whitelist(a, actor="test"))
        before = trust_state(site)
        delay = rng.uniform(0, work)
        _, killed = run_admin(site, ["trust", "import", str(b)], kill_after=delay)
        middle = trust_state(site)
        run_admin(site, ["trust", "import", str(b)])
        after = trust_state(site)
        found = []
        if before == after:
            found.append("the two lists give the same trust space: the test shows nothing")
        if middle not in (before, after):
            found.append(
                f"kill {k + 1}: the trust space is neither list: {len(middle)} domains "
                f"(A {len(before)}, B {len(after)})"
            )
        intact, sentence = with_context(site, audit_report)
        if not intact:
            found.append(f"kill {k + 1}: audit verify: {sentence}")
        state = "the old list" if middle == before else "the new list" if middle == after else "NEITHER list"
        report(
            f"  trust import {'killed' if killed else 'finished before its kill'} at {delay * 1000:.0f} ms "
            f"(a whole run: {work * 1000:.0f} ms): {state}; the rerun completed"
            + ("" if not found else f"; {len(found)} PROBLEMS")
        )
        problems += found
    return problems


def populate(site: Site) -> None:
    asyncio.run(_populate(site))


async def _populate(site: Site) -> None:
    ctx = site.context()
    try:
        await populate_mail(ctx)
    finally:
        await ctx.close()
