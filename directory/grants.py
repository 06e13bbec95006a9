"""Delegated access for the labelled apps of a patient's space: a scoped, expiring, revocable app password.

Invariants:
- A grant is an app credential (``directory.app_passwords``) of kind ``grant``
  on a patient's account, named by the app: IMAP only, limited to the granted
  folders and their children, read-only unless said otherwise, expiring after
  the given duration (on the context's clock). Its secret is shown once.
- A folder granted must exist on the account when the grant is made (a typo
  would otherwise grant nothing, silently); one app holds one live grant.
- Revoking ends new logins at once and open sessions at their next command
  (the IMAP session asks ``AppPasswords.still_valid`` before each command).
- Every grant, revoke and access through a grant is audited with the app's
  name (``imap.scoped``).
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from dataclasses import dataclass

from directory.app_passwords import KIND_GRANT, AppPasswords, CredentialView, InvalidCredential, check_name
from directory.patients import PatientService
from mailserver.context import Context
from mailserver.store.repositories.mail import canonical_name

_DURATION = re.compile(r"^\s*(\d+)\s*([dhms]?)\s*$")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1, "": 86400}
MAX_DURATION = dt.timedelta(days=3660)


def parse_duration(text: str) -> dt.timedelta:
    """``90d``, ``12h``, ``30m``, ``3600s`` (a bare number is days)."""
    m = _DURATION.match(text)
    if m is None or int(m.group(1)) == 0:
        raise InvalidCredential(f"--expires takes a duration such as 90d, 12h or 30m (not {text!r})")
    delta = dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    if delta > MAX_DURATION:
        raise InvalidCredential("--expires: ten years at most")
    return delta


def parse_folders(text: str) -> tuple[str, ...]:
    folders = tuple(dict.fromkeys(canonical_name(f.strip().strip("/")) for f in text.split(",") if f.strip()))
    if not folders:
        raise InvalidCredential("--folders names at least one folder (Documents,Agenda)")
    return folders


@dataclass(frozen=True, slots=True)
class Granted:
    view: CredentialView
    secret: str
    address: str


class Grants:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.patients = PatientService(ctx)
        self.credentials = AppPasswords(ctx)

    async def grant(
        self,
        ins: str,
        app: str,
        folders: tuple[str, ...],
        *,
        actor: str,
        read_only: bool = True,
        expires: dt.timedelta | None = None,
    ) -> Granted:
        app = check_name(app)
        account = await self.patients.get(ins)
        async with self.ctx.uow(readonly=True) as uow:
            names = {m.name for m in await uow.mailboxes.list(account.id)}
        missing = [f for f in folders if f not in names]
        if missing:
            raise InvalidCredential(f"{account.address} has no folder {', '.join(missing)}")
        expires_at = None if expires is None else self.ctx.clock() + expires
        view, secret = await self.credentials.create(
            account.address,
            app,
            actor=actor,
            protocols=frozenset({"imap"}),
            kind=KIND_GRANT,
            folders=folders,
            read_only=read_only,
            app=app,
            expires_at=expires_at,
        )
        return Granted(view, secret, account.address)

    async def list(self, ins: str) -> builtins.list[CredentialView]:
        account = await self.patients.get(ins)
        return await self.credentials.list(account.address, kind=KIND_GRANT)

    async def revoke(self, ins: str, app: str, *, actor: str) -> int:
        account = await self.patients.get(ins)
        return await self.credentials.revoke(account.address, app, actor=actor, kind=KIND_GRANT)
