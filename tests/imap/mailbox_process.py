"""Run as a separate process by the IMAP tests: delete a mailbox if it exists, create it again, print its UIDVALIDITY.

It shares nothing with the server under test but the database, as a second server
process (or the same one after a restart) would.
"""

import asyncio
import os
import sys
from pathlib import Path

from crypto.envelope import Kek, Keyring
from mailserver import mailboxes
from mailserver.config import build
from mailserver.context import Context


async def main(db_url: str, kek: str, address: str, name: str) -> None:
    cfg = build({"database": {"url": db_url}}, os.environ, Path("/tmp/unused.toml"))
    ctx = Context.open(cfg, keyring=Keyring(Kek.from_text(kek, origin="argv")))
    try:
        async with ctx.uow() as uow:
            account = await uow.accounts.by_address(address)
            assert account is not None
            if await uow.mailboxes.get(account.id, name) is not None:
                await mailboxes.delete_mailbox(uow, account.id, name, patient=False)
            created = await mailboxes.create_mailbox(uow, account.id, name)
            await uow.commit()
    finally:
        await ctx.close()
    print(created.uidvalidity)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
