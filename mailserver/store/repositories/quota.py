"""What an account's messages weigh, for its storage quota (``mailserver.quota``).

Invariants:
- Usage is read from the message rows of the account's mailboxes (their RFC822 sizes: each copy counts,
  as in RFC 9208 §5.1), never from a counter that could drift; one aggregate query per quota root. SMTP
  RCPT's read of the account root is the same aggregate, folded into its read of the recipient's account
  (``AccountRepository.local``): change one, change both.
- Built on the unit of work's session (``UsageViews(uow.session)``): it reads in that transaction.
- ``lock_anchors`` locks mailbox rows only, in ascending id order, as every writer takes them (PostgreSQL;
  SQLite's writer holds the whole database already): an account's anchor is its lowest mailbox row.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, func, or_, select

from mailserver.store.models import Mailbox, Message
from mailserver.store.repositories.base import Repository


@dataclass(frozen=True, slots=True)
class Usage:
    octets: int
    messages: int


#: the sizes and number of an account's messages, over every mailbox (the account's root)
_USAGE = (
    select(func.coalesce(func.sum(Message.size), 0), func.count(Message.id))
    .join(Mailbox, Message.mailbox_id == Mailbox.id)
    .where(Mailbox.account_id == bindparam("account_id"))
)


class UsageViews(Repository):
    async def usage(self, account_id: int, *, mailbox_ids: Collection[int] | None = None) -> Usage:
        """The sizes and number of the account's messages; with ``mailbox_ids``, of those mailboxes only."""
        stmt = _USAGE
        if mailbox_ids is not None:
            stmt = stmt.where(Mailbox.id.in_(sorted(mailbox_ids)))
        octets, count = (await self.session.execute(stmt, {"account_id": account_id})).one()
        return Usage(int(octets), int(count))

    async def usage_many(self, account_ids: Sequence[int]) -> dict[int, Usage]:
        """``usage`` of several accounts, one grouped query per 500; an account with no message is absent."""
        out: dict[int, Usage] = {}
        for i in range(0, len(account_ids), 500):
            stmt = (
                select(Mailbox.account_id, func.coalesce(func.sum(Message.size), 0), func.count(Message.id))
                .join(Mailbox, Message.mailbox_id == Mailbox.id)
                .where(Mailbox.account_id.in_(account_ids[i : i + 500]))
                .group_by(Mailbox.account_id)
            )
            for account_id, octets, count in (await self.session.execute(stmt)).all():
                out[int(account_id)] = Usage(int(octets), int(count))
        return out

    async def lock_anchors(self, account_ids: Sequence[int], mailbox_ids: Collection[int]) -> None:
        """Lock the anchor of each account (its lowest mailbox row) and the rows ``mailbox_ids``, in ascending
        id order, until the transaction ends: the writers of one account's quota take turns (PostgreSQL; one
        statement per 500 accounts)."""
        if self.session.get_bind().dialect.name != "postgresql":
            return
        targets = sorted(mailbox_ids)
        for i in range(0, max(len(account_ids), 1), 500):
            anchors = (
                select(func.min(Mailbox.id))
                .where(Mailbox.account_id.in_(account_ids[i : i + 500]))
                .group_by(Mailbox.account_id)
            )
            wanted: ColumnElement[bool] = Mailbox.id.in_(anchors)
            if i == 0 and targets:
                wanted = or_(wanted, Mailbox.id.in_(targets))
            await self.session.execute(select(Mailbox.id).where(wanted).order_by(Mailbox.id).with_for_update())
