"""What a front end is to the process that runs it: a ``Service`` that binds ``Endpoint``s.

Invariants:
- ``start()`` binds and returns the endpoints it listens on (none for a worker
  such as the outbound queue); ``stop()`` undoes it and may be called after a
  failed or partial start.
- A service holds no state that matters across processes: several processes may
  run against one PostgreSQL.
- This module imports nothing of the project: the front ends (IMAP, SMTP, HTTPS)
  implement it, ``mailserver.app`` runs them, and neither imports the other's
  module for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str  # "imaps", "submission"...
    host: str
    port: int
    description: str


class Service(Protocol):
    name: str

    async def start(self) -> list[Endpoint]: ...

    async def stop(self) -> None: ...
