"""An IMAP session opened with an app credential: what its ``Scope`` lets it see and change.

Invariants:
- A session logged in with the account password gets the plain ``MailStore``;
  one logged in with an app credential gets a ``ScopedMailStore`` (``open_store``).
- Through a grant limited to folders, LIST and LSUB show those folders and
  their children only; SELECT, EXAMINE, STATUS, APPEND, COPY/MOVE into,
  CREATE, DELETE, RENAME and SUBSCRIBE of any other name answer
  ``NO [NOPERM]``, whether that mailbox exists or not (a grant does not tell
  which folders exist beside it).
- Through a read-only grant every write answers ``NO [NOPERM]``: STORE,
  EXPUNGE (and CLOSE of a mailbox holding ``\\Deleted`` messages), APPEND, COPY/MOVE, CREATE, DELETE, RENAME,
  (UN)SUBSCRIBE; reading sets no ``\\Seen`` and claims no ``\\Recent``.
- Every audit entry a scoped session writes names the credential in its actor
  (``<address> via app <name>``); a grant's SELECT, EXAMINE and STATUS are
  audited too, so every access through a grant is in the trail.
- ``still_valid`` is asked before every command of a scoped session: a revoked
  or expired credential ends the session at its next command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from directory.app_passwords import KIND_GRANT, AppPasswords, Scope
from mailserver import quota
from mailserver.admission import Admission
from mailserver.context import Context
from mailserver.errors import NoPermission
from mailserver.imap.mailstore import (
    AppendResult,
    Changes,
    CopyResult,
    MailboxInfo,
    MailStore,
    MessageData,
    NewMessage,
    Snapshot,
    StatusInfo,
    StoreResult,
)
from mailserver.store.models import Account


def open_store(ctx: Context, account: Account, admission: Admission, scope: Scope | None) -> MailStore:
    """The store a session logged in with ``scope`` works on."""
    return MailStore(ctx, account, admission) if scope is None else ScopedMailStore(ctx, account, admission, scope)


async def still_valid(ctx: Context, scope: Scope) -> bool:
    return await AppPasswords(ctx).still_valid(scope)


class ScopedMailStore(MailStore):
    def __init__(self, ctx: Context, account: Account, admission: Admission, scope: Scope) -> None:
        super().__init__(ctx, account, admission)
        self.scope = scope
        self.actor = f"{account.address} via {scope.label}"

    def _need(self, name: str) -> None:
        if not self.scope.covers(name):
            raise NoPermission(f"This app may not open {name!r}: it was granted {', '.join(self.scope.folders or ())}")

    def _write(self) -> None:
        if self.scope.read_only:
            raise NoPermission("This app has read-only access: nothing can be changed through it")

    async def _audit_access(self, action: str, info: MailboxInfo) -> None:
        if self.scope.kind != KIND_GRANT:
            return
        async with self.ctx.uow() as uow:
            uow.audit(self.actor, action, f"{self.account.owner_id}/mailbox:{info.id}", "ok")
            await uow.commit()

    # --- mailboxes -----------------------------------------------------------------------------------------

    async def mailboxes(self) -> list[MailboxInfo]:
        return [m for m in await super().mailboxes() if self.scope.covers(m.name)]

    async def create(self, name: str, *, special_use: str | None = None) -> None:
        self._need(name)
        self._write()
        await super().create(name, special_use=special_use)

    async def delete(self, name: str) -> None:
        self._need(name)
        self._write()
        await super().delete(name)

    async def rename(self, old: str, new: str) -> None:
        self._need(old)
        self._need(new)
        self._write()
        await super().rename(old, new)

    async def subscribe(self, name: str, subscribed: bool) -> None:
        self._need(name)
        self._write()
        await super().subscribe(name, subscribed)

    async def status(self, name: str, *, deleted: bool = False) -> StatusInfo:
        self._need(name)
        info = await super().status(name, deleted=deleted)
        if self.scope.kind == KIND_GRANT:
            mailbox_id = (await super().info(name)).id  # an id in the audit: a mailbox's name is health data
            async with self.ctx.uow() as uow:
                uow.audit(self.actor, "imap.status", f"{self.account.owner_id}/mailbox:{mailbox_id}", "ok")
                await uow.commit()
        return info

    async def quota_roots(self, name: str) -> tuple[str, list[quota.Root]]:
        self._need(name)
        return await super().quota_roots(name)

    async def info(self, name: str) -> MailboxInfo:
        self._need(name)
        return await super().info(name)

    # --- selected state ------------------------------------------------------------------------------------

    async def select(self, name: str, *, readonly: bool) -> Snapshot:
        self._need(name)
        snap = await super().select(name, readonly=readonly or self.scope.read_only)
        await self._audit_access("imap.examine" if readonly else "imap.select", snap.mailbox)
        return snap

    async def changes(self, mailbox_id: int, since: int, *, claim_recent: bool) -> Changes:
        return await super().changes(mailbox_id, since, claim_recent=claim_recent and not self.scope.read_only)

    async def fetch(
        self,
        mailbox_id: int,
        uids: Sequence[int],
        *,
        meta: bool,
        body: bool,
        mark_seen: bool,
        audit: bool,
        envelope: bool = True,
    ) -> tuple[list[MessageData], dict[int, frozenset[str]]]:
        return await super().fetch(
            mailbox_id,
            uids,
            meta=meta,
            body=body,
            mark_seen=mark_seen and not self.scope.read_only,
            audit=audit,
            envelope=envelope,
        )

    async def store(
        self, mailbox_id: int, uids: Sequence[int], mode: str, flags: Iterable[str]
    ) -> dict[int, frozenset[str]]:
        self._write()
        return await super().store(mailbox_id, uids, mode, flags)

    async def store_flags(
        self, mailbox_id: int, uids: Sequence[int], mode: str, flags: Iterable[str], unchanged_since: int | None = None
    ) -> StoreResult:
        self._write()
        return await super().store_flags(mailbox_id, uids, mode, flags, unchanged_since)

    async def expunge(self, mailbox_id: int, uids: Sequence[int]) -> list[int]:
        if not uids:
            return []
        self._write()
        return await super().expunge(mailbox_id, uids)

    async def copy(self, mailbox_id: int, uids: Sequence[int], dest_name: str, *, move: bool) -> CopyResult:
        self._need(dest_name)
        self._write()
        return await super().copy(mailbox_id, uids, dest_name, move=move)

    async def append_many(
        self, name: str, items: Sequence[NewMessage], *, recent_for: int | None = None
    ) -> list[AppendResult]:
        self._need(name)
        self._write()
        return await super().append_many(name, items, recent_for=recent_for)
