"""KEK rotation: every wrapped data key re-wrapped under a new KEK; bodies are not touched.

Steps, each safe to interrupt:
1. write the new KEK to ``<kek_file>.next`` (0600);
2. in one transaction, re-wrap every account key and queued message key under it;
3. replace ``<kek_file>`` by ``.next`` (atomic rename).
A crash after 2 leaves both files; ``load_keyring`` loads both, so every key
still opens, and the next rotation finishes step 3 first.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from crypto.envelope import Kek, Keyring, pending_path, read_key_file, write_key_file
from mailserver.context import Context


class RotationError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class RotationResult:
    old_kid: str
    new_kid: str
    accounts: int
    queued: int


#: ``progress(done, total)``: keys re-wrapped so far out of all to re-wrap (for the CLI's bar)
RotationProgress = Callable[[int, int], None]


async def rotate_kek(ctx: Context, *, actor: str, progress: RotationProgress | None = None) -> RotationResult:
    if os.environ.get("MASANTE_KEK"):
        raise RotationError(
            "the KEK comes from MASANTE_KEK; rotation writes key files: unset it and use "
            "keys.kek_file, or rotate the variable yourself"
        )
    kek_file = ctx.config.resolve(ctx.config.keys.kek_file)
    nxt = pending_path(kek_file)
    old = read_key_file(kek_file)
    if nxt.exists():
        # an earlier rotation was interrupted: finish it (if its key is in use) or start again
        pending = read_key_file(nxt)
        ring = Keyring(pending, [old])
        if await _count_wrapped_by(ctx, pending.kid.hex()) > 0:
            await _rewrap_all(ctx, ring, actor, old.kid.hex(), progress)
            _promote(nxt, kek_file)
            old = pending
        else:
            nxt.unlink()
    new = Kek.generate()
    write_key_file(nxt, new)
    ring = Keyring(new, [old, *([] if ctx.keyring.current.kid == old.kid else [ctx.keyring.current])])
    accounts, queued = await _rewrap_all(ctx, ring, actor, old.kid.hex(), progress)
    _promote(nxt, kek_file)
    ctx.keyring = Keyring(new)
    return RotationResult(old.kid.hex(), new.kid.hex(), accounts, queued)


def _promote(nxt: Path, kek_file: Path) -> None:
    os.replace(nxt, kek_file)
    dir_fd = os.open(kek_file.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _count_wrapped_by(ctx: Context, kid: str) -> int:
    async with ctx.uow(readonly=True) as uow:
        accounts = await uow.accounts.list()
        items = await uow.queue.list()
    return sum(1 for a in accounts if a.wrapped_key and Keyring.wrapped_kid(a.wrapped_key) == kid) + sum(
        1 for q in items if q.wrapped_key and Keyring.wrapped_kid(q.wrapped_key) == kid
    )


async def _rewrap_all(
    ctx: Context, ring: Keyring, actor: str, old_kid: str, progress: RotationProgress | None
) -> tuple[int, int]:
    async with ctx.uow() as uow:
        accounts = await uow.accounts.with_wrapped_keys()
        items = await uow.queue.wrapped()
        total = len(accounts) + len(items)
        done = 0
        for a in accounts:
            if a.wrapped_key is not None:
                a.wrapped_key = ring.rewrap(a.wrapped_key, owner=a.owner_id)
            done += 1
            if progress is not None and (done % 500 == 0 or done == total):
                progress(done, total)
        for q in items:
            if q.wrapped_key is not None:
                q.wrapped_key = ring.rewrap(q.wrapped_key, owner=q.owner_id)
            done += 1
            if progress is not None and (done % 500 == 0 or done == total):
                progress(done, total)
        if progress is not None and total == 0:
            progress(0, 0)
        uow.audit(
            actor,
            "keys.rotate",
            f"kek:{ring.current.kid.hex()}",
            "ok",
            f"from kek:{old_kid}; {len(accounts)} account keys, {len(items)} queued",
        )
        await uow.commit()
        return len(accounts), len(items)
