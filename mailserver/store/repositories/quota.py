"""What an account's messages weigh, for its storage quota (``mailserver.quota``).

Invariants:
- Usage is read from the message rows of the account's mailboxes (their RFC822 sizes: each copy counts,
  as in RFC 9208 §5.1), never from a counter that could drift; one aggregate query per quota root.
- Built on the unit of work's session (``UsageViews(uow.session)``): it reads in that transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, or_, select

from mailserver.store.models import Mailbox, Message
from mailserver.store.repositories.base import Repository


@dataclass(frozen=True, slots=True)
class Usage:
    octets: int
    messages: int


class UsageViews(Repository):
    async def usage(self, account_id: int, *, under: str | None = None, delimiter: str = "/") -> Usage:
        """The sizes and number of the account's messages; with ``under``, of that mailbox and those below it."""
        stmt = (
            select(func.coalesce(func.sum(Message.size), 0), func.count(Message.id))
            .join(Mailbox, Message.mailbox_id == Mailbox.id)
            .where(Mailbox.account_id == account_id)
        )
        if under is not None:
            stmt = stmt.where(or_(Mailbox.name == under, Mailbox.name.startswith(under + delimiter, autoescape=True)))
        octets, count = (await self.session.execute(stmt)).one()
        return Usage(int(octets), int(count))
