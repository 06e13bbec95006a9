"""Putting a message in the outbound queue, sealed, and taking its bytes back out.

Invariants:
- One row per recipient, each sealed under its own data key (owner
  ``queue:<id>``): deleting the row (delivered, bounced, deleted by an
  administrator) shreds that copy.
- ``enqueue`` only adds to the caller's unit of work: the message is queued if
  and only if the caller commits (the ``250`` comes after that commit).
"""

from __future__ import annotations

import datetime as dt

from crypto.envelope import DataKey, Keyring
from mailserver.bodies import seal_for_queue
from mailserver.smtp.params import MailParams, RcptParams
from mailserver.store.models import QueuedMessage
from mailserver.store.uow import UnitOfWork


async def enqueue(
    uow: UnitOfWork,
    keyring: Keyring,
    *,
    raw: bytes,
    mail_from: str,
    rcpt: str,
    now: dt.datetime,
    expires_at: dt.datetime,
    msg_id: str,
    account_id: int | None = None,
    params: MailParams | None = None,
    rcpt_params: RcptParams | None = None,
) -> QueuedMessage:
    params = params or MailParams(body_8bit=not raw.isascii())
    sealed = seal_for_queue(keyring, raw)
    return await uow.queue.enqueue(
        sealed.id,
        body=sealed.body,
        wrapped_key=sealed.wrapped_key,
        size=len(raw),
        mail_from=mail_from,
        rcpt=rcpt,
        now=now,
        expires_at=expires_at,
        msg_id=msg_id,
        body_8bit=params.body_8bit or not raw.isascii(),
        smtputf8=params.smtputf8,
        account_id=account_id,
        orcpt=rcpt_params.orcpt if rcpt_params else None,
        notify=rcpt_params.notify_text if rcpt_params else None,
        ret=params.ret,
        envid=params.envid,
    )


def open_body(keyring: Keyring, row: QueuedMessage) -> bytes:
    """The queued message's bytes (``KeyDestroyed`` if its key is gone)."""
    key = DataKey(keyring.unwrap(row.wrapped_key, owner=row.owner_id), owner=row.owner_id)
    return key.open(row.body, object_id=row.owner_id, purpose="body")


def rcpt_params_of(row: QueuedMessage) -> RcptParams:
    notify = frozenset(row.notify.split(",")) if row.notify else None
    return RcptParams(notify, row.orcpt)
