"""The queue on the injected clock, and DNS through the injected resolver: no sleep, no public DNS.

The server's clock is a ``FakeClock``: a retry happens when the clock is moved
past its backoff and not a microsecond before. Its resolver is a
``MemoryResolver``: the MX of a trust-space domain without an MTA of its own
(``queue.mx_lookup``) and the DKIM keys not in our table (``smtp.dkim_dns``)
come from it.
"""

from __future__ import annotations

import pytest

from crypto import dkim as dkimlib
from directory.accounts import AccountService
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.message import parse_message
from mailserver.resolver import MemoryResolver
from mailserver.smtp.queue import retry_delay
from mailserver.store.models import AccountKind
from tests.smtp.conftest import OTHER, PRO, site_fixture
from tests.smtp.harness import ServerThread, marker, message, submission
from tests.support import PASSWORD, PRO_DOMAIN, TestPKI

FIRST_RETRY = 10.0
FACTOR = 2.0
#: a trust-space operator whose mail exchanger is found in DNS, and one that has none
MX_ONLY = "mx-only.test"
NO_MX = "no-mx.test"
#: a domain that signs with a key published only in DNS
DNS_SIGNER = "dns-signer.test"
#: software with a rate limit: this many recipients an hour
APP = f"labo@{PRO_DOMAIN}"
APP_RATE = 2


def mx_domains(server: ServerThread, request: pytest.FixtureRequest) -> None:
    port: int = request.getfixturevalue("unreachable_port")

    async def go(ctx: Context) -> None:
        trust = TrustSpace(ctx)
        await trust.add(MX_ONLY, actor="test", dns=["CN=mx.mx-only.test,C=FR"], mta_port=port)
        await trust.add(NO_MX, actor="test", dns=["CN=mx.no-mx.test,C=FR"])

    server.call(go)
    server.call(lambda ctx: AccountService(ctx).create(APP, AccountKind.APP, actor="test", password=PASSWORD))
    assert isinstance(server.resolver, MemoryResolver)
    server.resolver.add_mx(MX_ONLY, "localhost")


site_server = site_fixture(
    mx_domains,
    queue={"first_retry": FIRST_RETRY, "backoff_factor": FACTOR, "bounce_after": 86400, "mx_lookup": True},
    smtp={"dkim_dns": True},
    policy={"rate_application_per_hour": APP_RATE},
)


def queued(site: ServerThread, rcpt: str) -> tuple[int, str | None] | None:
    """(attempts, last error) of the queued message to ``rcpt``; None if there is none."""

    async def go(ctx: Context) -> tuple[int, str | None] | None:
        async with ctx.uow(readonly=True) as uow:
            rows = [q for q in await uow.queue.list() if q.rcpt_to == rcpt]
        return (rows[0].attempts, rows[0].last_error) if rows else None

    return site.call(go)


def send(site: ServerThread, pki: TestPKI, rcpt: str) -> None:
    s = submission(site, pki, PRO)
    try:
        s.sendmail(PRO, [rcpt], message(PRO, rcpt, f"retry {marker()}"))
    finally:
        s.quit()


def attempts(site: ServerThread, rcpt: str) -> int:
    found = queued(site, rcpt)
    assert found is not None, f"nothing queued for {rcpt}"
    return found[0]


def test_a_retry_waits_for_its_backoff_on_the_injected_clock(site: ServerThread, pki: TestPKI) -> None:
    rcpt = f"dr.backoff.{marker()[:6]}@{OTHER}"  # its MTA listens nowhere: every attempt fails
    send(site, pki, rcpt)
    site.settle()
    assert attempts(site, rcpt) == 1
    made = 1
    for _ in range(3):
        delay = retry_delay(made, first=FIRST_RETRY, factor=FACTOR, cap=site.config.queue.max_retry_interval)
        site.advance(delay - 0.01)  # just before the backoff: nothing
        assert attempts(site, rcpt) == made
        site.advance(0.02)  # just past it: the retry
        made += 1
        assert attempts(site, rcpt) == made
    assert made == 4 and retry_delay(3, first=FIRST_RETRY, factor=FACTOR, cap=10**6) == 40.0  # 10, 20, 40 s


def test_the_mail_exchanger_comes_from_the_injected_resolver(site: ServerThread, pki: TestPKI) -> None:
    assert isinstance(site.resolver, MemoryResolver)
    port = site.call(lambda ctx: TrustSpace(ctx).lookup(MX_ONLY))
    assert port is not None and port.mta_host is None
    found, none = f"a.{marker()[:6]}@{MX_ONLY}", f"b.{marker()[:6]}@{NO_MX}"
    send(site, pki, found)
    send(site, pki, none)
    site.settle()
    attempted, error = queued(site, found) or (0, None)
    assert attempted == 1 and error is not None and f"cannot connect to localhost:{port.mta_port}" in error
    attempted, error = queued(site, none) or (0, None)
    assert attempted == 1 and error == f"no address found for the mail exchangers of {NO_MX}"
    assert ("MX", MX_ONLY) in site.resolver.queries and ("MX", NO_MX) in site.resolver.queries


def test_dkim_keys_not_in_the_table_come_from_the_injected_resolver(site: ServerThread) -> None:
    assert isinstance(site.resolver, MemoryResolver)
    key = dkimlib.generate_key()
    selector = f"s{marker()[:8]}"
    name = dkimlib.key_name(DNS_SIGNER, selector)
    raw = message(f"dr@{DNS_SIGNER}", PRO, "signed elsewhere")
    signed = dkimlib.sign(raw, domain=DNS_SIGNER, selector=selector, private_pem=key.private_pem)

    async def verify(ctx: Context) -> list[tuple[str, str]]:
        from mailserver.smtp.signing import DkimVerifier

        return [(r.status.value, r.reason) for r in await DkimVerifier(ctx).verify(parse_message(signed))]

    assert site.call(verify) == [("permerror", f"no key published at {name}")]  # not published yet
    site.resolver.add_txt(name, key.record)
    assert site.call(verify) == [("pass", "good signature")]
    site.resolver.fail(name)
    assert site.call(verify) == [("temperror", "key lookup timed out")]


def test_a_rate_limit_refills_on_the_injected_clock(site: ServerThread, pki: TestPKI) -> None:
    def rcpt_reply() -> tuple[int, str]:
        s = submission(site, pki, APP)
        try:
            s.mail(APP)
            code, text = s.rcpt(PRO)
            return code, text.decode()
        finally:
            s.quit()

    assert [rcpt_reply()[0] for _ in range(APP_RATE)] == [250] * APP_RATE
    code, text = rcpt_reply()
    assert code == 450 and text.startswith("4.7.1 ") and f"at most {APP_RATE} per hour" in text, (code, text)
    site.advance(3600 / APP_RATE - 1)  # not quite one recipient's worth of time
    assert rcpt_reply()[0] == 450
    site.advance(2)  # now one token has come back: one recipient, not two
    assert rcpt_reply()[0] == 250
    assert rcpt_reply()[0] == 450


def test_a_new_signing_key_is_used_once_the_key_cache_expires_on_the_clock(site: ServerThread, pki: TestPKI) -> None:
    from directory.dkim import DkimKeys
    from mailserver.smtp import spool
    from mailserver.smtp.signing import KEY_CACHE_SECONDS

    def queued_signed(tag: str) -> bool:
        rcpt = f"sign.{tag[:8]}@{OTHER}"
        s = submission(site, pki, PRO)
        try:
            s.sendmail(PRO, [rcpt], message(PRO, rcpt, f"signed? {tag}"))
        finally:
            s.quit()

        async def body(ctx: Context) -> bytes:
            async with ctx.uow(readonly=True) as uow:
                [row] = [q for q in await uow.queue.list() if q.rcpt_to == rcpt]
            return spool.open_body(ctx.keyring, row)

        return site.call(body).startswith(b"DKIM-Signature:")

    assert not queued_signed(marker())  # the domain has no signing key: sent unsigned, and that is remembered
    site.call(lambda ctx: DkimKeys(ctx).generate(PRO_DOMAIN, actor="test", selector="clock1"))
    assert not queued_signed(marker())  # the signer has not looked again yet
    site.advance(KEY_CACHE_SECONDS + 1)
    assert queued_signed(marker())
