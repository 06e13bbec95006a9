"""Client certificates of application and organisation mailboxes, for SASL EXTERNAL.

Invariants:
- Only APP and ORG accounts take a certificate (a person, PER, logs in with a
  Pro Santé Connect token; a patient with a password): ``bind`` refuses the
  others, and EXTERNAL refuses them even if a row existed.
- ``bind`` reads a PEM or DER file, keeps its SHA-256 fingerprint, subject and
  issuer DNs and end of validity (``models.certificates``), and refuses a
  certificate that is expired or not issued by the configured account CA
  (``[tls] account_ca``): one that could never complete the handshake.
- Every binding and removal is audited (actor, the account, the fingerprint).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from crypto.tls import certificate_facts, issued_by_bundle, load_certificate
from directory.addresses import Address
from directory.errors import InvalidState, UnknownAccount
from mailserver.context import Context
from mailserver.store.models import Account, AccountCertificate, AccountKind

#: the kinds of mailbox that log in with a certificate
CERTIFICATE_KINDS = frozenset({AccountKind.APP, AccountKind.ORG})


class CertificateService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def account_ca(self) -> Path | None:
        ca = self.ctx.config.tls.account_ca
        return self.ctx.config.resolve(Path(ca)) if ca else None

    async def bind(self, address: str, cert_file: Path, *, actor: str) -> tuple[Account, AccountCertificate]:
        addr = str(Address.parse(address))
        try:
            der = load_certificate(cert_file)
        except OSError as exc:
            raise InvalidState(f"cannot read {cert_file}: {exc.strerror}") from None
        except ValueError as exc:
            raise InvalidState(str(exc)) from None
        facts = certificate_facts(der)
        ca = self.account_ca()
        if ca is None:
            raise InvalidState("no account CA is configured: set [tls] account_ca (MASANTE_TLS_ACCOUNT_CA) first")
        if not issued_by_bundle(der, ca):
            raise InvalidState(
                f"the certificate {facts.subject_dn} is expired or not issued by the account CA {ca}: "
                "it could not log in"
            )
        async with self.ctx.uow() as uow:
            account = await uow.accounts.by_address(addr)
            if account is None:
                raise UnknownAccount(f"no account {addr}")
            if account.kind not in CERTIFICATE_KINDS:
                raise InvalidState(
                    f"{addr} is a {account.kind.value} mailbox: only APP and ORG mailboxes log in with a certificate"
                )
            binding = await uow.certificates.add(
                AccountCertificate(
                    account_id=account.id,
                    fingerprint=facts.fingerprint,
                    subject_dn=facts.subject_dn,
                    issuer_dn=facts.issuer_dn,
                    not_after=facts.not_after,
                    added_by=actor,
                )
            )
            uow.audit(actor, "certificate.add", account.owner_id, "ok", f"sha256 {facts.fingerprint}")
            await uow.commit()
        return account, binding

    async def list(self, address: str) -> Sequence[AccountCertificate]:
        addr = str(Address.parse(address))
        async with self.ctx.uow(readonly=True) as uow:
            account = await uow.accounts.by_address(addr)
            if account is None:
                raise UnknownAccount(f"no account {addr}")
            return await uow.certificates.for_account(account.id)

    async def remove(self, address: str, fingerprint: str, *, actor: str) -> None:
        addr = str(Address.parse(address))
        fp = fingerprint.replace(":", "").strip().lower()
        async with self.ctx.uow() as uow:
            account = await uow.accounts.by_address(addr)
            if account is None:
                raise UnknownAccount(f"no account {addr}")
            binding = await uow.certificates.binding(account.id, fp)
            if binding is None:
                raise InvalidState(f"no certificate with fingerprint {fp} is bound to {addr}")
            await uow.certificates.remove(binding)
            uow.audit(actor, "certificate.remove", account.owner_id, "ok", f"sha256 {fp}")
            await uow.commit()
