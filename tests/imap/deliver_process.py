"""Run as a separate process by the IMAP tests: deliver one message to an address, print its UID.

It shares nothing with the server under test but the database: on PostgreSQL the
server's IDLE sessions learn of the delivery through LISTEN/NOTIFY only.
"""

import asyncio
import os
import sys
from pathlib import Path

from crypto.envelope import Kek, Keyring
from mailserver.config import build
from mailserver.context import Context
from mailserver.delivery import deliver


async def main(db_url: str, kek: str, address: str, subject: str) -> None:
    cfg = build({"database": {"url": db_url}}, os.environ, Path("/tmp/unused.toml"))
    ctx = Context.open(cfg, keyring=Keyring(Kek.from_text(kek, origin="argv")))
    try:
        async with ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(address)
        assert account is not None
        async with ctx.uow() as uow:
            raw = f"From: lab@lab.test\r\nTo: {address}\r\nSubject: {subject}\r\n\r\nfrom another process\r\n"
            result = await deliver(uow, ctx.keyring, raw.encode(), [account])
            await uow.commit()
    finally:
        await ctx.close()
    print(result.delivered[0].uid)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
