"""What the store needs from the key that keeps metadata unreadable at rest (``crypto.metadata.MetadataKey``).

The store does no cryptography itself (it sits below ``crypto`` in the layers); it is handed an object that
digests and seals, set on the ``Database`` by whoever opens it with the configuration (``Context.open``).

Mailbox names are kept this way: a digest bound to the account (lookups, the unique constraint) and the
name sealed; the model's ``name`` is the opened value (``OpenedName``), opened when a unit of work loads the
row and sealed again at flush when it was set.
"""

from __future__ import annotations

from typing import Protocol, overload

from sqlalchemy import inspect
from sqlalchemy.orm.attributes import flag_modified


class MetadataSealer(Protocol):
    def digest(self, kind: str, *parts: str) -> bytes: ...

    def seal(self, plaintext: bytes, *, kind: str, bound_to: bytes) -> bytes: ...

    def open(self, sealed: bytes, *, kind: str, bound_to: bytes) -> bytes: ...

    def seal_fixed(self, plaintext: bytes, *, kind: str, bound_to: bytes) -> bytes: ...

    def open_fixed(self, sealed: bytes, *, kind: str, bound_to: bytes) -> bytes: ...


#: ``Session.info`` key of a callable giving the database's ``MetadataSealer`` (set by ``UnitOfWork``)
SESSION_SEALER = "masante.metadata"
MAILBOX = "mailbox"  # the kind of a mailbox name's digest and seal


def mailbox_name_digest(sealer: MetadataSealer, account_id: int, name: str) -> bytes:
    return sealer.digest(MAILBOX, str(account_id), name)


def seal_mailbox_name(sealer: MetadataSealer, account_id: int, name: str) -> tuple[bytes, bytes]:
    """(digest, sealed) of one account's mailbox name (canonical: see ``canonical_name``)."""
    digest = mailbox_name_digest(sealer, account_id, name)
    return digest, sealer.seal(name.encode("utf-8"), kind=MAILBOX, bound_to=digest)


def open_mailbox_name(sealer: MetadataSealer, digest: bytes, sealed: bytes) -> str:
    return sealer.open(sealed, kind=MAILBOX, bound_to=digest).decode("utf-8")


class OpenedName:
    """A model's name kept sealed in its row: the opened value lives in the instance, never in a column.

    Setting it on a row already stored marks the row modified, so the flush seals the new name
    (``mailserver.store.models.mail``'s ``before_flush`` hook)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.key = f"_opened_{name}"

    def __eq__(self, other: object) -> bool:
        # ``Mailbox.name == "INBOX"`` in a query would silently be false: the column holds a digest and a seal
        if other is self:
            return True
        raise TypeError("a sealed name is no column: look it up by its digest (MailboxRepository.get, get_many)")

    __hash__ = object.__hash__

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> OpenedName: ...

    @overload
    def __get__(self, obj: object, objtype: type | None = None) -> str: ...

    def __get__(self, obj: object | None, objtype: type | None = None) -> str | OpenedName:
        if obj is None:
            return self
        try:
            value: str = obj.__dict__[self.key]
        except KeyError:
            raise AttributeError("this name is sealed: load the row through a unit of work to read it") from None
        return value

    def __set__(self, obj: object, value: str) -> None:
        obj.__dict__[self.key] = value
        state = inspect(obj, raiseerr=False)
        if state is not None and state.persistent:
            flag_modified(obj, "name_sealed")
