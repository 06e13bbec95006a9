"""Mail routing and DKIM keys through a real DNS server on 127.0.0.1 (``tests.ops.dnsserver``, dnspython).

The server's resolver is pointed at it with ``[dns] nameservers``. Checked:
MX preference order (and the implicit MX, the null MX), delivery falling back
to the next exchanger when the first refuses the connection, an NXDOMAIN
domain bounced at once with a DSN, a DKIM key fetched from DNS (not from the
key table) verifying a signed message, a revoked key (``p=``)
refused.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crypto import dkim as dkimlib
from directory.accounts import AccountService
from directory.trust import TrustSpace
from mailserver import resolver
from mailserver.context import Context
from mailserver.message import parse_message
from mailserver.smtp import replies as R
from mailserver.smtp.signing import DkimVerifier
from mailserver.store.models import AccountKind, DomainKind
from tests import support
from tests.ops.dnsserver import ZoneServer, txt_strings
from tests.smtp.conftest import free_port
from tests.smtp.harness import Databases, ServerThread, find, marker, message, tls_client

ZONE = "dns.test."
B_DOMAIN = "clinique.dns.test"
GONE = "gone.dns.test"
A_DOMAIN = "hopital.a.test"
A_HOST, B_HOST = "mx.hopital.a.test", f"mx.{B_DOMAIN}"
A_DN = "CN=mx.hopital.a.test,O=Operateur A,C=FR"
B_DN = f"CN={B_HOST},O=Operateur B,C=FR"
PRO_A = f"dr.martin@{A_DOMAIN}"
PRO_B = f"dr.bernard@{B_DOMAIN}"
SIGNER = "signing.dns.test"
WAIT = 30.0


def zone_text(dkim_record: str) -> str:
    # MX records written out of preference order: the order comes from the preferences, not the zone file
    return f"""
$TTL 60
@                 IN SOA ns.{ZONE} hostmaster.{ZONE} 1 60 60 600 60
@                 IN NS  ns.{ZONE}
ns                IN A   127.0.0.1
clinique          IN MX  30 mx-last.clinique
clinique          IN MX  20 mx.clinique
clinique          IN MX  10 mx-down.clinique
mx-down.clinique  IN A   127.0.0.2
mx.clinique       IN A   127.0.0.1
mx-last.clinique  IN A   127.0.0.3
implicit          IN A   127.0.0.9
nullmx            IN MX  0 .
sel1._domainkey.signing IN TXT {txt_strings(dkim_record)}
old._domainkey.signing  IN TXT "v=DKIM1; k=rsa; p="
"""


@pytest.fixture(scope="module")
def dkim_key() -> dkimlib.KeyPair:
    return dkimlib.generate_key()


@pytest.fixture(scope="module")
def dns_server(dkim_key: dkimlib.KeyPair) -> Iterator[ZoneServer]:
    server = ZoneServer({ZONE: zone_text(dkim_key.record)}).start()
    yield server
    server.stop()


def dns_config(tmp: Path, dns_server: ZoneServer) -> support.Config:
    return support.make_config(tmp, "sqlite:///unused.db", _pki_none(), dns={"nameservers": [dns_server.address]})


def _pki_none() -> support.TestPKI:
    return support.TestPKI(Path("/"), None, Path("/ca.pem"), Path("/s.pem"), Path("/s.key"))  # type: ignore[arg-type]


# --- the resolver alone ------------------------------------------------------------------------------------------


def test_nameserver_addresses_parse() -> None:
    assert resolver.parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert resolver.parse_nameserver("[::1]:53") == ("::1", 53)
    assert resolver.parse_nameserver("10.0.0.1") == ("10.0.0.1", 53)
    assert resolver.parse_nameserver("::1") == ("::1", 53)
    for bad in ("127.0.0.1:0", "127.0.0.1:x", "[::1", ":53"):
        with pytest.raises(resolver.ConfigError):
            resolver.parse_nameserver(bad)


async def test_mx_route_in_preference_order(dns_server: ZoneServer, tmp_path: Path) -> None:
    r = resolver.DnsResolver.for_config(dns_config(tmp_path, dns_server))
    hops = await r.route(B_DOMAIN)
    assert [(h.preference, h.name, h.address) for h in hops] == [
        (10, f"mx-down.{B_DOMAIN}", "127.0.0.2"),
        (20, B_HOST, "127.0.0.1"),
        (30, f"mx-last.{B_DOMAIN}", "127.0.0.3"),
    ]
    assert (f"{B_DOMAIN}.", "MX", "udp") in dns_server.queries


async def test_implicit_null_and_missing_mx(dns_server: ZoneServer, tmp_path: Path) -> None:
    r = resolver.DnsResolver.for_config(dns_config(tmp_path, dns_server))
    # RFC 5321 §5.1: no MX record, the domain itself
    assert [(h.name, h.address) for h in await r.route("implicit.dns.test")] == [("implicit.dns.test", "127.0.0.9")]
    with pytest.raises(resolver.NoRoute) as null:  # RFC 7505
        await r.route("nullmx.dns.test")
    assert null.value.permanent and null.value.status == "5.1.10"
    with pytest.raises(resolver.NoRoute) as gone:
        await r.route(GONE)
    assert gone.value.permanent and gone.value.status == "5.1.2"
    with pytest.raises(resolver.NoRoute) as refused:  # outside the server's zones: REFUSED, try again later
        await r.route("example.org")
    assert not refused.value.permanent and refused.value.status.startswith("4.")


# --- DKIM keys from DNS --------------------------------------------------------------------------------------------


@pytest.fixture
async def dkim_ctx(db_url: str, tmp_path: Path, pki: support.TestPKI, dns_server: ZoneServer) -> Iterator[Context]:
    cfg = support.make_config(tmp_path, db_url, pki, smtp={"dkim_dns": True}, dns={"nameservers": [dns_server.address]})
    ctx = Context.open(cfg)
    await TrustSpace(ctx).add(SIGNER, actor="test", dns=["CN=mx.signing.dns.test,O=S,C=FR"], dkim_signing=True)
    try:
        yield ctx  # type: ignore[misc]
    finally:
        await ctx.close()


def signed(key: dkimlib.KeyPair, selector: str) -> bytes:
    raw = message(f"lab@{SIGNER}", PRO_A, f"Resultats {marker()}")
    return dkimlib.sign(raw, domain=SIGNER, selector=selector, private_pem=key.private_pem)


async def test_dkim_key_from_dns_verifies_a_signed_message(
    dkim_ctx: Context, dkim_key: dkimlib.KeyPair, dns_server: ZoneServer
) -> None:
    verdict = await DkimVerifier(dkim_ctx).judge(parse_message(signed(dkim_key, "sel1")), SIGNER)
    [result] = verdict.results
    assert (result.status, result.domain, result.selector) == (dkimlib.Status.PASS, SIGNER, "sel1")
    assert verdict.refusal is None
    # the key came from DNS (our table has none), in one EDNS answer larger than 512 octets
    assert (f"sel1._domainkey.{SIGNER}.", "TXT", "udp") in dns_server.queries
    async with dkim_ctx.uow(readonly=True) as uow:
        assert await uow.dkim_keys.get(SIGNER, "sel1") is None


async def test_revoked_dkim_key_is_refused(dkim_ctx: Context, dkim_key: dkimlib.KeyPair) -> None:
    verdict = await DkimVerifier(dkim_ctx).judge(parse_message(signed(dkim_key, "old")), SIGNER)
    [result] = verdict.results
    assert result.status in (dkimlib.Status.PERMERROR, dkimlib.Status.FAIL)
    assert verdict.refusal == R.DKIM_REQUIRED
    # and a selector DNS does not know at all: no key, refused the same way
    verdict = await DkimVerifier(dkim_ctx).judge(parse_message(signed(dkim_key, "nosuch")), SIGNER)
    assert verdict.results[0].status is dkimlib.Status.PERMERROR and verdict.refusal == R.DKIM_REQUIRED


# --- two operators routed by MX ------------------------------------------------------------------------------------


class Recorder:
    """A TCP listener that only counts the connections it gets (an exchanger that must not be tried)."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port))
        self.sock.settimeout(0.2)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


async def setup_a(ctx: Context, b_mx: int) -> None:
    svc = AccountService(ctx)
    await svc.add_domain(A_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    await svc.create(PRO_A, AccountKind.PER, actor="test", password=support.PASSWORD, profession_code="10")
    trust = TrustSpace(ctx)
    # no MTA host: the route comes from DNS (the port stays the operator's)
    await trust.add(B_DOMAIN, actor="test", dns=[B_DN], mta_port=b_mx)
    await trust.add(GONE, actor="test", dns=["CN=mx.gone.dns.test,O=Gone,C=FR"], mta_port=b_mx)


async def setup_b(ctx: Context) -> None:
    svc = AccountService(ctx)
    await svc.add_domain(B_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    await svc.create(PRO_B, AccountKind.PER, actor="test", password=support.PASSWORD, profession_code="10")
    await TrustSpace(ctx).add(A_DOMAIN, actor="test", dns=[A_DN])


@pytest.fixture(scope="module")
def operators(
    dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory, dns_server: ZoneServer
) -> Iterator[tuple[ServerThread, ServerThread, Recorder]]:
    servers: list[ServerThread] = []
    b_mx = free_port()
    recorder = Recorder("127.0.0.3", b_mx)  # the last exchanger: reached only if the order were wrong
    try:
        for name, host, dn, extra in (
            ("b", B_HOST, B_DN, {"ports": {"mx": b_mx}}),
            ("a", A_HOST, A_DN, {"queue": {"mx_lookup": True, "poll_interval": 0.2, "connect_timeout": 5}}),
        ):
            tmp = tmp_path_factory.mktemp(f"dns-operator-{name}")
            issued = pki.ca.issue(dn, dns_names=(host, "localhost"), ip_addresses=("127.0.0.1",))
            issued.write(tmp / "cert.pem", tmp / "cert.key")
            cert, key = str(tmp / "cert.pem"), str(tmp / "cert.key")
            cfg = support.make_config(
                tmp,
                dbs.new(),
                pki,
                server={"hostname": host, "bind": "127.0.0.1"},
                tls={"cert": cert, "key": key, "client_cert": cert, "client_key": key},
                dns={"nameservers": [dns_server.address]},
                policy={"rate_professional_per_hour": 0},
                **extra,
            )
            servers.append(ServerThread(cfg).start())
        b, a = servers
        b.call(setup_b)
        a.call(setup_a, b_mx)
        yield a, b, recorder
    finally:
        for s in servers:
            s.stop()
        recorder.close()


def eventually(what: str, check: Callable[[], list[bytes]], timeout: float = WAIT) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    pytest.fail(f"{what}: nothing after {timeout} s")


def submit(a: ServerThread, pki: support.TestPKI, rcpt: str, raw: bytes) -> None:
    s = smtplib.SMTP("127.0.0.1", a.port("submission"), timeout=30, local_hostname="client.test")
    s.starttls(context=tls_client(pki))
    s.login(PRO_A, support.PASSWORD)
    assert s.sendmail(PRO_A, [rcpt], raw) == {}
    s.quit()


def test_delivery_falls_back_to_the_next_mx_when_the_first_refuses(
    operators: tuple[ServerThread, ServerThread, Recorder], pki: support.TestPKI, dns_server: ZoneServer
) -> None:
    a, b, last = operators
    tag = marker()
    submit(a, pki, PRO_B, message(PRO_A, PRO_B, f"Par MX {tag}"))
    [arrived] = eventually("the message at B", lambda: find(b, PRO_B, tag))
    msg = email.message_from_bytes(arrived, policy=email.policy.default)
    assert f"by {B_HOST}" in " ".join(str(msg["Received"]).split())
    assert (f"{B_DOMAIN}.", "MX", "udp") in dns_server.queries
    assert last.connections == 0  # preference 10 refused, 20 took it: 30 was never needed


def test_an_nxdomain_recipient_domain_bounces_at_once_with_a_dsn(
    operators: tuple[ServerThread, ServerThread, Recorder], pki: support.TestPKI
) -> None:
    a, _b, _last = operators
    tag = marker()
    submit(a, pki, f"dr.x@{GONE}", message(PRO_A, f"dr.x@{GONE}", f"Perdu {tag}"))
    [dsn] = eventually("the DSN at A", lambda: find(a, PRO_A, tag))
    report = email.message_from_bytes(dsn, policy=email.policy.default)
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    text = dsn.decode("utf-8", "replace")
    assert "Action: failed" in text and "Status: 5.1.2" in text and f"dr.x@{GONE}" in text

    async def queued(ctx: Context) -> int:
        async with ctx.uow(readonly=True) as uow:
            return (await uow.queue.depth())[0]

    assert a.call(queued) == 0  # not retried: the domain does not exist
