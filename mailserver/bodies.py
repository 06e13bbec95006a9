"""Sealing and opening message bodies with the owning account's data key.

Invariants: a body is sealed before it reaches the session (plaintext is never
added to a row); it is bound to ``account:<id>`` and ``blob:<uuid>``; the derived
metadata (``ImapMeta`` as JSON) is sealed separately (purpose "meta") under the
same binding. Meta stored by an earlier version is read if its layout is known
(``ImapMeta.from_json``), else ``open_meta`` gives None and the reader derives it again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from crypto.envelope import DataKey, Keyring
from mailserver.message import ImapMeta
from mailserver.store.models import Account, Blob, Message
from mailserver.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class QueueSeal:
    """A message sealed for the outbound queue: its row id, the body under its own key (owner ``queue:<id>``),
    that key wrapped. Deleting the row shreds the copy."""

    id: str
    body: bytearray = field(repr=False)
    wrapped_key: bytes = field(repr=False)


def seal_for_queue(keyring: Keyring, raw: bytes) -> QueueSeal:
    """``raw`` sealed for one queue row (``QueueRepository.enqueue``)."""
    qid = str(uuid.uuid4())
    owner = f"queue:{qid}"
    key = DataKey.generate()
    return QueueSeal(
        qid, DataKey(key, owner=owner).seal(raw, object_id=owner, purpose="body"), keyring.wrap(key, owner=owner)
    )


def account_key(keyring: Keyring, account: Account) -> DataKey:
    """The account's data key; ``KeyDestroyed`` once the account was shredded."""
    return DataKey(keyring.unwrap(account.wrapped_key, owner=account.owner_id), owner=account.owner_id)


def seal_blob(key: DataKey, account_id: int, raw: bytes, meta: ImapMeta | None) -> Blob:
    blob_id = str(uuid.uuid4())
    object_id = f"blob:{blob_id}"
    return Blob(
        id=blob_id,
        account_id=account_id,
        body=key.seal(raw, object_id=object_id, purpose="body"),
        meta=None
        if meta is None
        else key.seal(json.dumps(meta.to_json(), separators=(",", ":")).encode(), object_id=object_id, purpose="meta"),
        size=len(raw),
    )


def open_body(key: DataKey, blob: Blob) -> bytes:
    return key.open(blob.sealed_body, object_id=blob.object_id, purpose="body")


def open_meta(key: DataKey, blob: Blob, *, envelope: bool = True) -> ImapMeta | None:
    """The sealed metadata, or None when there is none or it is of a layout no longer read (``envelope``:
    ``ImapMeta.from_json``'s)."""
    if blob.meta is None:
        return None
    try:
        data = json.loads(key.open(blob.meta, object_id=blob.object_id, purpose="meta"))
    except ValueError:
        return None
    return ImapMeta.from_json(data, envelope=envelope) if isinstance(data, dict) else None


async def read_body(uow: UnitOfWork, keyring: Keyring, account: Account, message: Message) -> bytes:
    """The plaintext of ``message`` (which must belong to ``account``)."""
    blob = await uow.blobs.get(message.blob_id)
    if blob is None or blob.account_id != account.id:
        raise LookupError(f"message {message.id} has no blob of account {account.id}")
    return open_body(account_key(keyring, account), blob)
