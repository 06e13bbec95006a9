"""What every service needs, built once per process from the configuration.

The server and ``masante-admin`` build the same ``Context``: the CLI goes
through the same services as the server, never around them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto.envelope import Keyring, load_keyring
from mailserver.auditing import open_trail
from mailserver.config import Config
from mailserver.store.db import Database
from mailserver.store.models.base import utcnow
from mailserver.store.uow import UnitOfWork

Clock = Callable[[], dt.datetime]


@dataclass
class Context:
    config: Config
    db: Database
    keyring: Keyring
    clock: Clock = field(default=utcnow)

    @classmethod
    def open(cls, config: Config, *, keyring: Keyring | None = None, clock: Clock = utcnow) -> Context:
        if keyring is None:
            keyring = load_keyring(config.resolve(config.keys.kek_file), os.environ.get("MASANTE_KEK"))
        db = Database(config.database_url, echo=config.database.echo, audit=open_trail(config))
        return cls(config=config, db=db, keyring=keyring, clock=clock)

    def uow(self, *, readonly: bool = False) -> UnitOfWork:
        return UnitOfWork(self.db, readonly=readonly)

    async def close(self) -> None:
        await self.db.dispose()
