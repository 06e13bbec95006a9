"""What an account's messages weigh, for its storage quota (``mailserver.quota``).

Invariants:
- Usage is what the account's mailboxes hold (their messages' RFC822 sizes: each copy counts, as in RFC 9208
  §5.1), read from the mailbox rows (``octets``, ``message_count``), which the database's own triggers on
  ``messages`` keep in the transaction of each change (migration 0021): not a counter the application keeps,
  so no code path can forget it, and a read is a handful of rows, not every message of the account. One
  aggregate query per quota root. SMTP RCPT's read of the account root is the same aggregate, folded into its
  read of the recipient's account (``AccountRepository.local``), with the same ``USAGE_SUMS``.
- Built on the unit of work's session (``UsageViews(uow.session)``): it reads in that transaction.
- ``lock_anchors`` locks mailbox rows only, in ascending id order, as every writer takes them (PostgreSQL;
  SQLite's writer holds the whole database already): an account's anchor is its lowest mailbox row.
- The statements are Core, built once below with bound parameters (the delivery path runs them for every
  message; RCPT too): no ORM, no statement built per call.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, func, or_, select

from mailserver.store.models import Mailbox
from mailserver.store.repositories.base import Repository, is_postgresql, rows_of

_mb = cast(Table, Mailbox.__table__)
#: what the messages weigh and how many they are, over the mailbox rows read (a quota root's usage): each row
#: keeps its own (``Mailbox.octets``, ``message_count``, kept by triggers on ``messages``, migration 0021)
USAGE_SUMS = (func.coalesce(func.sum(_mb.c.octets), 0), func.coalesce(func.sum(_mb.c.message_count), 0))
_USAGE = select(*USAGE_SUMS).where(_mb.c.account_id == bindparam("account_id"))
_USAGE_IN = _USAGE.where(_mb.c.id.in_(bindparam("mailbox_ids", expanding=True)))
_USAGE_MANY = (
    select(_mb.c.account_id, *USAGE_SUMS)
    .where(_mb.c.account_id.in_(bindparam("account_ids", expanding=True)))
    .group_by(_mb.c.account_id)
)
#: usage by account, of the accounts ``account_ids``: to join with the mailbox rows of a delivery (SQLite)
USAGE_BY_ACCOUNT = (
    select(_mb.c.account_id, func.sum(_mb.c.octets).label("octets"), func.sum(_mb.c.message_count).label("messages"))
    .where(_mb.c.account_id.in_(bindparam("account_ids", expanding=True)))
    .group_by(_mb.c.account_id)
    .subquery("usage")
)
_ANCHORS = (
    select(func.min(_mb.c.id))
    .where(_mb.c.account_id.in_(bindparam("account_ids", expanding=True)))
    .group_by(_mb.c.account_id)
)
_LOCK_ANCHORS = select(_mb.c.id).where(_mb.c.id.in_(_ANCHORS)).order_by(_mb.c.id).with_for_update()
_LOCK_ANCHORS_AND = (
    select(_mb.c.id)
    .where(or_(_mb.c.id.in_(_ANCHORS), _mb.c.id.in_(bindparam("mailbox_ids", expanding=True))))
    .order_by(_mb.c.id)
    .with_for_update()
)


@dataclass(frozen=True, slots=True)
class Usage:
    octets: int
    messages: int


class UsageViews(Repository):
    async def usage(self, account_id: int, *, mailbox_ids: Collection[int] | None = None) -> Usage:
        """The sizes and number of the account's messages; with ``mailbox_ids``, of those mailboxes only."""
        if mailbox_ids is None:
            found = await self.session.execute(_USAGE, {"account_id": account_id})
        else:
            params = {"account_id": account_id, "mailbox_ids": sorted(mailbox_ids)}
            found = await self.session.execute(_USAGE_IN, params)
        octets, count = found.one()
        return Usage(int(octets), int(count))

    async def usage_many(self, account_ids: Sequence[int]) -> dict[int, Usage]:
        """``usage`` of several accounts, one grouped query per 500; an account with no message is absent."""
        out: dict[int, Usage] = {}
        for i in range(0, len(account_ids), 500):
            rows = await rows_of(self.session, _USAGE_MANY, {"account_ids": list(account_ids[i : i + 500])})
            for account_id, octets, count in rows:
                out[int(account_id)] = Usage(int(octets), int(count))
        return out

    async def lock_anchors(self, account_ids: Sequence[int], mailbox_ids: Collection[int]) -> None:
        """Lock the anchor of each account (its lowest mailbox row) and the rows ``mailbox_ids``, in ascending
        id order, until the transaction ends: the writers of one account's quota take turns (PostgreSQL; one
        statement per 500 accounts)."""
        if not is_postgresql(self.session):
            return
        targets = sorted(mailbox_ids)
        for i in range(0, max(len(account_ids), 1), 500):
            chunk = list(account_ids[i : i + 500])
            if i == 0 and targets:
                await self.session.execute(_LOCK_ANCHORS_AND, {"account_ids": chunk, "mailbox_ids": targets})
            else:
                await self.session.execute(_LOCK_ANCHORS, {"account_ids": chunk})
