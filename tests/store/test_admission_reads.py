"""The reads admission makes of an address in one statement each (``AccountRepository.local``,
``TrustRepository.remote``) say what the reads they replace said, on SQLite and PostgreSQL: the domain,
the account, the account root's usage (``UsageViews.usage``, over every mailbox), the operator and the
directory's published mailbox."""

from __future__ import annotations

from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.store.models import Account, OperatorStatus, PublishedMailbox, TrustedOperator
from mailserver.store.repositories.quota import Usage, UsageViews
from tests import support


async def _deliver(ctx: Context, account: Account, raw: bytes, mailbox: str | None = None) -> None:
    async with ctx.uow() as uow:
        acct = await uow.accounts.get(account.id)
        assert acct is not None
        await deliver(uow, ctx.keyring, raw, [acct], mailbox=mailbox)
        await uow.commit()


async def test_a_local_address_reads_its_account_and_its_usage_as_the_separate_reads_did(ctx: Context) -> None:
    await support.add_domains(ctx)
    pro = await support.make_pro(ctx)
    other = await support.make_pro(ctx, "dr.wilson")
    empty = await support.make_patient(ctx)
    await _deliver(ctx, pro, b"Subject: one\r\n\r\nfirst\r\n")
    await _deliver(ctx, pro, b"Subject: two\r\n\r\nthe second, longer\r\n", mailbox="Drafts")
    await _deliver(ctx, other, b"Subject: theirs\r\n\r\nnot dr.house's\r\n")
    async with ctx.uow(readonly=True) as uow:
        expected = await UsageViews(uow.session).usage(pro.id)
        found = await uow.accounts.local(pro.address.upper(), support.PRO_DOMAIN.upper(), usage=True)
        plain = await uow.accounts.local(pro.address, support.PRO_DOMAIN)
        nobody = await uow.accounts.local(f"nobody@{support.PRO_DOMAIN}", support.PRO_DOMAIN, usage=True)
        patient = await uow.accounts.local(empty.address, support.PATIENT_DOMAIN, usage=True)
        not_ours = await uow.accounts.local("dr.who@elsewhere.test", "elsewhere.test", usage=True)
    assert expected.messages == 2 and expected.octets > 0
    assert found is not None and found.account is not None and found.account.id == pro.id
    assert found.usage == expected  # both mailboxes, and none of dr.wilson's messages
    assert plain is not None and plain.account is not None and plain.account.id == pro.id and plain.usage is None
    assert nobody is not None and nobody.account is None  # our domain, no such account
    assert not_ours is None
    assert patient is not None and patient.account is not None and patient.usage == Usage(0, 0)  # no message


async def test_another_domains_address_reads_its_operator_and_the_published_mailbox(ctx: Context) -> None:
    async with ctx.uow() as uow:
        uow.session.add(TrustedOperator(domain="clinique.test", status=OperatorStatus.SUSPENDED))
        uow.session.add(PublishedMailbox(address="robot@clinique.test", kind="APP", row_hash="a"))
        uow.session.add(PublishedMailbox(address="dr.x@clinique.test", kind="PER", profession_code="10", row_hash="b"))
        await uow.commit()
    async with ctx.uow(readonly=True) as uow:
        app = await uow.trust.remote("Robot@Clinique.test", "CLINIQUE.test")
        pro = await uow.trust.remote("dr.x@clinique.test", "clinique.test")
        unpublished = await uow.trust.remote("dr.y@clinique.test", "clinique.test")
        outside = await uow.trust.remote("robot@gmail.com", "gmail.com")
    assert app is not None and (app.status, app.published_kind) == (OperatorStatus.SUSPENDED, "APP")
    assert pro is not None and (pro.published_kind, pro.profession_code) == ("PER", "10")
    assert unpublished is not None and (unpublished.published_kind, unpublished.profession_code) == (None, None)
    assert outside is None
