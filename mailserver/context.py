"""What every service needs, built once per process from the configuration.

The server and ``masante-admin`` build the same ``Context``: the CLI goes
through the same services as the server, never around them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from crypto.credentials import load_or_create_credential_key
from crypto.envelope import Keyring, load_keyring
from crypto.metadata import MetadataKey
from mailserver.auditing import open_trail
from mailserver.clock import Clock, SystemClock
from mailserver.config import Config
from mailserver.resolver import DnsResolver, Resolver
from mailserver.store.db import Database
from mailserver.store.uow import UnitOfWork

__all__ = ["Clock", "Context", "Resolver"]


@dataclass
class Context:
    config: Config
    db: Database
    keyring: Keyring
    clock: Clock = field(default_factory=SystemClock)  # mailserver.clock: tests pass a FakeClock
    resolver: Resolver = field(default_factory=DnsResolver)  # mailserver.resolver: tests pass a MemoryResolver

    @classmethod
    def open(
        cls,
        config: Config,
        *,
        keyring: Keyring | None = None,
        clock: Clock | None = None,
        resolver: Resolver | None = None,
    ) -> Context:
        if keyring is None:
            keyring = load_keyring(config.resolve(config.keys.kek_file), os.environ.get("MASANTE_KEK"))
        db = Database(config.database_url, echo=config.database.echo, audit=open_trail(config))
        db.metadata_key_loader = lambda: MetadataKey(
            load_or_create_credential_key(
                config.resolve(config.keys.credential_key_file), os.environ.get("MASANTE_CREDENTIAL_KEY") or None
            )
        )
        return cls(
            config=config,
            db=db,
            keyring=keyring,
            clock=clock or SystemClock(),
            resolver=resolver or DnsResolver.for_config(config),
        )

    def uow(self, *, readonly: bool = False) -> UnitOfWork:
        return UnitOfWork(self.db, readonly=readonly, clock=self.clock)

    async def close(self) -> None:
        await self.db.dispose()
