"""The trust space: which operator domains we exchange mail with, and how to recognise their MTAs.

Invariants:
- A domain outside the trust space is never relayed to nor accepted from.
- Domain names compare case-insensitively (stored lower-case).
- An operator's MTAs are recognised by the subject DN of their client
  certificate; a domain may list several DNs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from directory.addresses import normalize_domain
from directory.errors import OperatorExists, UnknownOperator
from mailserver.context import Context
from mailserver.store.errors import Conflict
from mailserver.store.models import OperatorStatus, TrustedOperator
from mailserver.store.models.base import utcnow


@dataclass(frozen=True, slots=True)
class Operator:
    domain: str
    description: str | None
    mta_host: str | None
    mta_port: int | None
    dkim_signing: bool
    status: OperatorStatus
    dns: tuple[str, ...]

    @property
    def active(self) -> bool:
        return self.status is OperatorStatus.ACTIVE


def _view(op: TrustedOperator, dns: Sequence[str]) -> Operator:
    return Operator(op.domain, op.description, op.mta_host, op.mta_port, op.dkim_signing, op.status, tuple(dns))


class TrustSpace:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def lookup(self, domain: str) -> Operator | None:
        async with self.ctx.uow(readonly=True) as uow:
            op = await uow.trust.get(domain.lower())
            if op is None:
                return None
            return _view(op, await uow.trust.dns(op.domain))

    async def list(self) -> list[Operator]:
        async with self.ctx.uow(readonly=True) as uow:
            ops = await uow.trust.list()
            dns: dict[str, list[str]] = {}
            for row in await uow.trust.all_dns():
                dns.setdefault(row.domain, []).append(row.dn)
            return [_view(o, sorted(dns.get(o.domain, []))) for o in ops]

    async def add(
        self,
        domain: str,
        *,
        actor: str,
        dns: Sequence[str] = (),
        description: str | None = None,
        mta_host: str | None = None,
        mta_port: int | None = None,
        dkim_signing: bool = False,
    ) -> Operator:
        name = normalize_domain(domain)
        async with self.ctx.uow() as uow:
            op = TrustedOperator(
                domain=name,
                description=description,
                mta_host=mta_host,
                mta_port=mta_port,
                dkim_signing=dkim_signing,
                status=OperatorStatus.ACTIVE,
                source="manual",
            )
            try:
                await uow.trust.add(op, dns)
            except Conflict:
                raise OperatorExists(f"{name} is already in the trust space") from None
            uow.audit(actor, "trust.add", f"domain:{name}", "ok")
            await uow.commit()
            return _view(op, list(dict.fromkeys(dns)))

    async def set_status(self, domain: str, status: OperatorStatus, *, actor: str) -> None:
        name = normalize_domain(domain)
        async with self.ctx.uow() as uow:
            op = await uow.trust.get(name)
            if op is None:
                raise UnknownOperator(f"{name} is not in the trust space")
            op.status = status
            op.updated_at = utcnow()
            uow.audit(actor, "trust.status", f"domain:{name}", "ok", status.value)
            await uow.commit()

    async def remove(self, domain: str, *, actor: str) -> None:
        name = normalize_domain(domain)
        async with self.ctx.uow() as uow:
            op = await uow.trust.get(name)
            if op is None:
                raise UnknownOperator(f"{name} is not in the trust space")
            await uow.trust.remove(op)
            uow.audit(actor, "trust.remove", f"domain:{name}", "ok")
            await uow.commit()
