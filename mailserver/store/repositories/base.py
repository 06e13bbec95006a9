from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from mailserver.store.errors import Conflict


class Repository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @contextlib.asynccontextmanager
    async def _conflict_as(self, message: str) -> AsyncIterator[None]:
        """Flush inside a savepoint and turn a uniqueness violation into ``Conflict(message)``."""
        try:
            async with self.session.begin_nested():
                yield
                await self.session.flush()
        except IntegrityError:
            raise Conflict(message) from None
