"""App credentials, enrolments and second-factor contacts (``models/credentials.py``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select, update

from mailserver.store.models import AppCredential, Enrolment, SecondFactorContact
from mailserver.store.repositories.base import Repository


class CredentialRepository(Repository):
    async def by_digest(self, digest: bytes) -> AppCredential | None:
        stmt = select(AppCredential).where(AppCredential.digest == digest)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def get(self, credential_id: int) -> AppCredential | None:
        return await self.session.get(AppCredential, credential_id)

    async def list(self, account_id: int, *, kind: str | None = None) -> Sequence[AppCredential]:
        stmt = select(AppCredential).where(AppCredential.account_id == account_id)
        if kind is not None:
            stmt = stmt.where(AppCredential.kind == kind)
        return (await self.session.execute(stmt.order_by(AppCredential.id))).scalars().all()

    async def add(self, credential: AppCredential) -> AppCredential:
        async with self._conflict_as("a credential with that secret already exists"):
            self.session.add(credential)
        return credential

    async def touch(self, credential_id: int, when: dt.datetime) -> None:
        """Record a use (``last_used_at``), without reading the row."""
        stmt = update(AppCredential).where(AppCredential.id == credential_id).values(last_used_at=when)
        await self.session.execute(stmt)

    # --- enrolments ---------------------------------------------------------------------------------------

    async def add_enrolment(self, enrolment: Enrolment) -> Enrolment:
        async with self._conflict_as("an enrolment with that id already exists"):
            self.session.add(enrolment)
        return enrolment

    async def enrolment(self, nonce: str, *, lock: bool = False) -> Enrolment | None:
        stmt = select(Enrolment).where(Enrolment.nonce == nonce)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    # --- contacts -----------------------------------------------------------------------------------------

    async def contact(self, account_id: int) -> SecondFactorContact | None:
        return await self.session.get(SecondFactorContact, account_id)

    async def set_contact(self, account_id: int, email: str | None, phone: str | None, when: dt.datetime) -> None:
        row = await self.session.get(SecondFactorContact, account_id)
        if row is None:
            self.session.add(SecondFactorContact(account_id=account_id, email=email, phone=phone, updated_at=when))
        else:
            row.email, row.phone, row.updated_at = email, phone, when
        await self.session.flush()
