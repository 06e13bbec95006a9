"""The trust space: which operator domains we exchange mail with, and how to recognise their MTAs.

Invariants:
- A domain outside the trust space is never relayed to nor accepted from.
- Domain names compare case-insensitively (stored lower-case).
- An operator's MTAs are recognised by the subject DN of their client
  certificate, compared in canonical form (``directory.dn``); a domain may list
  several DNs.
- Every change is one transaction: the server, which reads the trust space from
  the database on each decision, sees the old state or the new one, never half
  of an import, and sees it as soon as it is committed (no restart, no cache).
- A whitelist import replaces the entries that came from a whitelist, adopts
  the manual entries it lists (their MTA host and port, DKIM setting and a
  suspension are local settings and are kept), keeps the manual entries it does
  not list, and saves the trust space it replaced: ``rollback`` puts it back.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from directory import whitelist
from directory.addresses import normalize_domain
from directory.dn import dn_key
from directory.errors import InvalidState, OperatorExists, UnknownOperator
from directory.whitelist import ExportEntry, ListedDomain, Rejected
from mailserver.context import Context
from mailserver.store.errors import Conflict
from mailserver.store.models import OperatorStatus, TrustedOperator, TrustImport
from mailserver.store.models.base import utcnow
from mailserver.store.uow import UnitOfWork

#: how many past trust-space states are kept for ``rollback``
KEEP_PREVIOUS = 3

MANUAL = "manual"
WHITELIST = "whitelist"


@dataclass(frozen=True, slots=True)
class Operator:
    domain: str
    description: str | None
    mta_host: str | None
    mta_port: int | None
    dkim_signing: bool
    status: OperatorStatus
    dns: tuple[str, ...]
    source: str = MANUAL
    responsible_contact: str | None = None
    support_contact: str | None = None
    listed_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        return self.status is OperatorStatus.ACTIVE

    def lists(self, dn: str) -> bool:
        """Is ``dn`` (a peer certificate's subject) one of this operator's certificate DNs?"""
        key = dn_key(dn)
        return any(dn_key(d) == key for d in self.dns)


def _view(op: TrustedOperator, dns: Sequence[str]) -> Operator:
    return Operator(
        op.domain,
        op.description,
        op.mta_host,
        op.mta_port,
        op.dkim_signing,
        op.status,
        tuple(dns),
        op.source,
        op.responsible_contact,
        op.support_contact,
        op.listed_at,
    )


@dataclass(frozen=True, slots=True)
class Change:
    domain: str
    what: tuple[str, ...]  # "description", "certificates", "contacts", "adopted"


@dataclass
class ImportPlan:
    """What an import does (or, with ``--dry-run``, would do)."""

    source: str
    generated_at: dt.datetime | None
    entries: int
    domains: int
    sha256: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    kept_manual: list[str] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unchanged: int = 0
    applied: bool = False


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    kind: str
    at: dt.datetime
    actor: str
    source: str | None
    generated_at: dt.datetime | None
    entries: int
    added: int
    removed: int
    changed: int
    restorable: bool


class TrustSpace:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # --- reading -----------------------------------------------------------------------------------------------

    async def lookup(self, domain: str) -> Operator | None:
        async with self.ctx.uow(readonly=True) as uow:
            op = await uow.trust.get(domain.lower())
            if op is None:
                return None
            return _view(op, await uow.trust.dns(op.domain))

    async def list(self) -> list[Operator]:
        async with self.ctx.uow(readonly=True) as uow:
            return await self._list(uow)

    @staticmethod
    async def _list(uow: UnitOfWork) -> builtins.list[Operator]:
        ops = await uow.trust.list()
        dns: dict[str, list[str]] = {}
        for row in await uow.trust.all_dns():
            dns.setdefault(row.domain, []).append(row.dn)
        return [_view(o, sorted(dns.get(o.domain, []))) for o in ops]

    async def domains_listing(self, dn: str, *, active_only: bool = True) -> builtins.list[str]:
        """The operator domains whose certificate list holds ``dn`` (canonical comparison)."""
        async with self.ctx.uow(readonly=True) as uow:
            return await uow.trust.domains_with_dn_key(dn_key(dn), active_only=active_only)

    # --- manual changes ------------------------------------------------------------------------------------------

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
        _check_endpoint(mta_host, mta_port)
        pairs = [(" ".join(d.split()), dn_key(d)) for d in dns if d.strip()]
        async with self.ctx.uow() as uow:
            op = TrustedOperator(
                domain=name,
                description=description,
                mta_host=mta_host,
                mta_port=mta_port,
                dkim_signing=dkim_signing,
                status=OperatorStatus.ACTIVE,
                source=MANUAL,
            )
            try:
                await uow.trust.add(op, pairs)
            except Conflict:
                raise OperatorExists(
                    f"{name} is already in the trust space (change it with `masante-admin trust set`)"
                ) from None
            uow.audit(actor, "trust.add", f"domain:{name}", "ok")
            await uow.commit()
            return _view(op, await self._dns_after(name))

    async def _dns_after(self, name: str) -> builtins.list[str]:
        async with self.ctx.uow(readonly=True) as uow:
            return await uow.trust.dns(name)

    async def update(
        self,
        domain: str,
        *,
        actor: str,
        mta_host: str | None = None,
        mta_port: int | None = None,
        dkim_signing: bool | None = None,
        description: str | None = None,
        add_dns: Sequence[str] = (),
        remove_dns: Sequence[str] = (),
        clear_endpoint: bool = False,
    ) -> Operator:
        """Change the local settings of an entry (manual or imported)."""
        name = normalize_domain(domain)
        _check_endpoint(mta_host, mta_port)
        async with self.ctx.uow() as uow:
            op = await uow.trust.get(name)
            if op is None:
                raise UnknownOperator(f"{name} is not in the trust space")
            changed = []
            if clear_endpoint:
                op.mta_host, op.mta_port = None, None
                changed.append("endpoint-cleared")
            if mta_host is not None:
                op.mta_host = mta_host
                changed.append("mta_host")
            if mta_port is not None:
                op.mta_port = mta_port
                changed.append("mta_port")
            if dkim_signing is not None:
                op.dkim_signing = dkim_signing
                changed.append("dkim")
            if description is not None:
                op.description = description
                changed.append("description")
            if add_dns or remove_dns:
                current = {dn_key(d): d for d in await uow.trust.dns(name)}
                for d in remove_dns:
                    if current.pop(dn_key(d), None) is None:
                        raise InvalidState(f"{d} is not listed for {name}")
                for d in add_dns:
                    current.setdefault(dn_key(d), " ".join(d.split()))
                await uow.trust.replace_dns(name, [(dn, k) for k, dn in current.items()])
                changed.append("certificates")
            op.updated_at = utcnow()
            uow.audit(actor, "trust.set", f"domain:{name}", "ok", ",".join(changed) or "nothing")
            await uow.commit()
            dns = await uow.trust.dns(name)
            return _view(op, dns)

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

    # --- the national whitelist -------------------------------------------------------------------------------

    async def import_whitelist(self, path: Path, *, actor: str, dry_run: bool = False) -> ImportPlan:
        """Read ``path`` (refused whole if unusable), compare with the trust space and, unless
        ``dry_run``, swap in one transaction, saving the state it replaces."""
        listed = whitelist.read(path)  # raises WhitelistError before anything is touched
        plan = ImportPlan(
            source=path.name,
            generated_at=listed.generated_at,
            entries=listed.entries,
            domains=len(listed.domains),
            sha256=listed.sha256,
            rejected=listed.rejected,
        )
        async with self.ctx.uow(readonly=dry_run) as uow:
            if not dry_run:
                await uow.trust.lock_for_change()
            current = await self._list(uow)
            by_domain = {o.domain: o for o in current}
            for name, entry in sorted(listed.domains.items()):
                op = by_domain.get(name)
                if op is None:
                    plan.added.append(name)
                    continue
                what = _differences(op, entry)
                if what:
                    plan.changed.append(Change(name, what))
                else:
                    plan.unchanged += 1
            for op in current:
                if op.domain not in listed.domains:
                    (plan.removed if op.source == WHITELIST else plan.kept_manual).append(op.domain)
            if dry_run:
                return plan
            await self._apply(uow, plan, listed.domains, current)
            uow.audit(
                actor,
                "trust.import",
                f"whitelist:{listed.sha256[:16]}",
                "ok",
                f"{path.name}: +{len(plan.added)} -{len(plan.removed)} ~{len(plan.changed)} "
                f"rejected {len(plan.rejected)}",
            )
            await uow.trust.add_import(
                TrustImport(
                    kind="import",
                    at=self.ctx.clock(),
                    actor=actor,
                    source=path.name[:500],
                    sha256=listed.sha256,
                    generated_at=listed.generated_at,
                    entries=listed.entries,
                    added=len(plan.added),
                    removed=len(plan.removed),
                    changed=len(plan.changed),
                    previous=_freeze(current),
                )
            )
            await uow.trust.keep_previous_of_newest(KEEP_PREVIOUS)
            await uow.commit()
        plan.applied = True
        return plan

    async def _apply(
        self, uow: UnitOfWork, plan: ImportPlan, listed: dict[str, ListedDomain], current: Sequence[Operator]
    ) -> None:
        now = self.ctx.clock()
        await uow.trust.remove_domains(plan.removed)
        await uow.trust.bulk_add(
            [
                {
                    "domain": name,
                    "description": listed[name].description,
                    "mta_host": None,
                    "mta_port": None,
                    "dkim_signing": False,
                    "status": OperatorStatus.ACTIVE,
                    "source": WHITELIST,
                    "responsible_contact": listed[name].responsible_contact,
                    "support_contact": listed[name].support_contact,
                    "listed_at": listed[name].listed_at,
                    "created_at": now,
                    "updated_at": now,
                }
                for name in plan.added
            ],
            {name: listed[name].dns for name in plan.added},
        )
        for change in plan.changed:
            e = listed[change.domain]
            op = await uow.trust.get(change.domain)
            if op is None:  # a bug: the lock keeps the rows we read
                raise RuntimeError(f"{change.domain} vanished during the import")
            op.description = e.description
            op.responsible_contact = e.responsible_contact
            op.support_contact = e.support_contact
            op.listed_at = e.listed_at
            op.source = WHITELIST
            op.updated_at = now
            if "certificates" in change.what:
                await uow.trust.replace_dns(change.domain, e.dns)
        await uow.trust.flush()

    async def rollback(self, *, actor: str) -> HistoryEntry:
        """Put back the trust space as it was before the newest import (or rollback)."""
        async with self.ctx.uow() as uow:
            await uow.trust.lock_for_change()
            last = await uow.trust.latest_with_previous()
            if last is None or last.previous is None:
                raise InvalidState("no earlier trust space is saved: nothing to roll back to")
            restored = _thaw(last.previous)
            current = await self._list(uow)
            await uow.trust.remove_domains([o.domain for o in current])
            now = self.ctx.clock()
            await uow.trust.bulk_add(
                [
                    {
                        "domain": o.domain,
                        "description": o.description,
                        "mta_host": o.mta_host,
                        "mta_port": o.mta_port,
                        "dkim_signing": o.dkim_signing,
                        "status": o.status,
                        "source": o.source,
                        "responsible_contact": o.responsible_contact,
                        "support_contact": o.support_contact,
                        "listed_at": o.listed_at,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for o in restored
                ],
                {o.domain: [(d, dn_key(d)) for d in o.dns] for o in restored},
            )
            record = await uow.trust.add_import(
                TrustImport(
                    kind="rollback",
                    at=now,
                    actor=actor,
                    source=f"state before change #{last.id}",
                    entries=len(restored),
                    previous=_freeze(current),
                )
            )
            uow.audit(actor, "trust.rollback", f"trust-import:{last.id}", "ok", f"{len(restored)} domains restored")
            await uow.trust.keep_previous_of_newest(KEEP_PREVIOUS)
            await uow.commit()
            return _history(record)

    async def history(self, limit: int = 20) -> builtins.list[HistoryEntry]:
        async with self.ctx.uow(readonly=True) as uow:
            return [_history(r) for r in await uow.trust.imports(limit)]

    async def export(self) -> bytes:
        """The trust space in the whitelist format (one entry per domain and DN)."""
        entries = []
        for o in await self.list():
            for dn in o.dns or (None,):
                entries.append(
                    ExportEntry(o.domain, o.description, dn, o.responsible_contact, o.support_contact, o.listed_at)
                )
        return whitelist.write(entries, self.ctx.clock())


def _check_endpoint(host: str | None, port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise InvalidState(f"MTA port {port} is not between 1 and 65535")
    if host is not None and not host.strip():
        raise InvalidState("MTA host is empty")


def _differences(op: Operator, entry: ListedDomain) -> tuple[str, ...]:
    what = []
    if op.source != WHITELIST:
        what.append("adopted")
    if (op.description or None) != entry.description:
        what.append("description")
    if {dn_key(d) for d in op.dns} != {k for _, k in entry.dns}:
        what.append("certificates")
    if (op.responsible_contact, op.support_contact) != (entry.responsible_contact, entry.support_contact):
        what.append("contacts")
    if op.listed_at != entry.listed_at and not what:
        what.append("date")
    return tuple(what)


def _freeze(ops: Sequence[Operator]) -> bytes:
    data: list[dict[str, Any]] = [
        {
            "domain": o.domain,
            "description": o.description,
            "mta_host": o.mta_host,
            "mta_port": o.mta_port,
            "dkim_signing": o.dkim_signing,
            "status": o.status.value,
            "dns": list(o.dns),
            "source": o.source,
            "responsible_contact": o.responsible_contact,
            "support_contact": o.support_contact,
            "listed_at": o.listed_at.isoformat() if o.listed_at else None,
        }
        for o in ops
    ]
    return zlib.compress(json.dumps(data, ensure_ascii=False).encode(), 6)


def _thaw(blob: bytes) -> builtins.list[Operator]:
    out = []
    for d in json.loads(zlib.decompress(blob)):
        out.append(
            Operator(
                d["domain"],
                d["description"],
                d["mta_host"],
                d["mta_port"],
                bool(d["dkim_signing"]),
                OperatorStatus(d["status"]),
                tuple(d["dns"]),
                d["source"],
                d["responsible_contact"],
                d["support_contact"],
                dt.datetime.fromisoformat(d["listed_at"]) if d["listed_at"] else None,
            )
        )
    return out


def _history(r: TrustImport) -> HistoryEntry:
    return HistoryEntry(
        r.id,
        r.kind,
        r.at,
        r.actor,
        r.source,
        r.generated_at,
        r.entries,
        r.added,
        r.removed,
        r.changed,
        r.previous is not None,
    )
