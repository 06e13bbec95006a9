"""What an account's messages weigh, for its storage quota (``mailserver.quota``).

Invariants:
- Usage is read from the message rows of the account's mailboxes (their RFC822 sizes: each copy counts,
  as in RFC 9208 §5.1), never from a counter that could drift; one aggregate query per quota root.
- Built on the unit of work's session (``UsageViews(uow.session)``): it reads in that transaction.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select

from mailserver.store.models import Mailbox, Message
from mailserver.store.repositories.base import Repository


@dataclass(frozen=True, slots=True)
class Usage:
    octets: int
    messages: int


class UsageViews(Repository):
    async def usage(self, account_id: int, *, mailbox_ids: Collection[int] | None = None) -> Usage:
        """The sizes and number of the account's messages; with ``mailbox_ids``, of those mailboxes only."""
        stmt = (
            select(func.coalesce(func.sum(Message.size), 0), func.count(Message.id))
            .join(Mailbox, Message.mailbox_id == Mailbox.id)
            .where(Mailbox.account_id == account_id)
        )
        if mailbox_ids is not None:
            stmt = stmt.where(Mailbox.id.in_(sorted(mailbox_ids)))
        octets, count = (await self.session.execute(stmt)).one()
        return Usage(int(octets), int(count))
