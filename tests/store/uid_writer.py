"""Run as a separate process by test_concurrency: deliver N messages, one transaction each, print the UIDs."""

import asyncio
import os
import sys

from crypto.envelope import Kek, Keyring
from mailserver.config import build
from mailserver.context import Context
from mailserver.delivery import deliver


async def main(db_url: str, kek: str, address: str, n: int, tag: str) -> None:
    cfg = build({"database": {"url": db_url}}, os.environ, __import__("pathlib").Path("/tmp/unused.toml"))
    ctx = Context.open(cfg, keyring=Keyring(Kek.from_text(kek, origin="argv")))
    uids = []
    try:
        async with ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(address)
        assert account is not None
        for i in range(n):
            async with ctx.uow() as uow:
                r = await deliver(uow, ctx.keyring, f"Subject: {tag} {i}\r\n\r\n{tag}\r\n".encode(), [account])
                await uow.commit()
            uids.append(r.delivered[0].uid)
    finally:
        await ctx.close()
    print(" ".join(map(str, uids)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
