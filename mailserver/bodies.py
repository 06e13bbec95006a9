"""Sealing and opening message bodies with the owning account's data key.

Invariants: a body is sealed before it reaches the session (plaintext is never
added to a row); it is bound to ``account:<id>`` and ``blob:<uuid>``; the derived
metadata is sealed separately (purpose "meta") under the same binding.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from crypto.envelope import DataKey, Keyring
from mailserver.store.models import Account, Blob, Message
from mailserver.store.uow import UnitOfWork


def account_key(keyring: Keyring, account: Account) -> DataKey:
    """The account's data key; ``KeyDestroyed`` once the account was shredded."""
    return DataKey(keyring.unwrap(account.wrapped_key, owner=account.owner_id), owner=account.owner_id)


def seal_blob(key: DataKey, account_id: int, raw: bytes, meta: dict[str, Any] | None) -> Blob:
    blob_id = str(uuid.uuid4())
    object_id = f"blob:{blob_id}"
    return Blob(
        id=blob_id,
        account_id=account_id,
        body=key.seal(raw, object_id=object_id, purpose="body"),
        meta=None
        if meta is None
        else key.seal(json.dumps(meta, separators=(",", ":")).encode(), object_id=object_id, purpose="meta"),
        size=len(raw),
    )


def open_body(key: DataKey, blob: Blob) -> bytes:
    return key.open(blob.body, object_id=blob.object_id, purpose="body")


def open_meta(key: DataKey, blob: Blob) -> dict[str, Any] | None:
    if blob.meta is None:
        return None
    data: dict[str, Any] = json.loads(key.open(blob.meta, object_id=blob.object_id, purpose="meta"))
    return data


async def read_body(uow: UnitOfWork, keyring: Keyring, account: Account, message: Message) -> bytes:
    """The plaintext of ``message`` (which must belong to ``account``)."""
    blob = await uow.blobs.get(message.blob_id)
    if blob is None or blob.account_id != account.id:
        raise LookupError(f"message {message.id} has no blob of account {account.id}")
    return open_body(account_key(keyring, account), blob)
