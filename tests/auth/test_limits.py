"""A rate limit that is one (issue 12 point 5) and caps on connections per source (issue 14 point 2).

Real IMAP and SMTP sockets on 127.0.0.1; attackers and clean clients come from other loopback addresses
(``127.0.0.x`` as source address), so each test has addresses of its own. Time moves only with the
server's ``FakeClock``.
"""

from __future__ import annotations

import asyncio
import imaplib
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from directory.auth import Authenticator
from directory.limits import account_key, peer_key
from mailserver import metrics
from mailserver.clock import FakeClock
from mailserver.context import Context
from mailserver.store.models import Account
from tests import support
from tests.harness.server import ServerThread, server_fixture

HOST = "127.0.0.1"
TIMEOUT = 30
PER_ACCOUNT = 5
PER_SOURCE = 10
BASE = 60
UNAUTHENTICATED = 55  # above the 50 connections of the attack
PER_ACCOUNT_CONNECTIONS = 3


def domains(server: ServerThread, request: pytest.FixtureRequest) -> None:
    server.call(support.add_domains)


limits_server = server_fixture(
    domains,
    name="limits_server",
    ports={"mx": -1, "submissions": -1},
    limits={
        "login_failures_per_account": PER_ACCOUNT,
        "login_failures_per_source": PER_SOURCE,
        "lockout_base": BASE,
        "lockout_max": 8 * BASE,
        "connections_per_source": UNAUTHENTICATED + 10,
        "unauthenticated_per_source": UNAUTHENTICATED,
        "connections_per_account": PER_ACCOUNT_CONNECTIONS,
    },
)


@pytest.fixture
def srv(limits_server: ServerThread) -> Iterator[ServerThread]:
    limits_server.reset_throttle()
    yield limits_server
    limits_server.reset_throttle()


@pytest.fixture
def tls(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


class SourcedIMAP(imaplib.IMAP4_SSL):
    """IMAPS from a chosen loopback source address."""

    def __init__(self, source: str, port: int, tls: ssl.SSLContext) -> None:
        self.source = source
        super().__init__(HOST, port, ssl_context=tls, timeout=TIMEOUT)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = socket.create_connection((HOST, self.port), timeout, source_address=(self.source, 0))
        return self.ssl_context.wrap_socket(sock, server_hostname=HOST)  # type: ignore[attr-defined,no-any-return]


def imap_login(m: imaplib.IMAP4, user: str, password: str) -> str:
    """``ok``, ``failed`` (AUTHENTICATIONFAILED) or the refusal's text (``[UNAVAILABLE] ...``)."""
    try:
        m.login(user, password)
        return "ok"
    except imaplib.IMAP4.error as exc:
        text = str(exc)
        return "failed" if "AUTHENTICATIONFAILED" in text else text


def smtp_login(srv: ServerThread, tls: ssl.SSLContext, source: str, user: str, password: str) -> tuple[int, str]:
    s = smtplib.SMTP(HOST, srv.port("submission"), timeout=TIMEOUT, source_address=(source, 0))
    try:
        s.starttls(context=tls)
        s.ehlo("client.test")
        s.user, s.password = user, password  # one AUTH PLAIN: ``login`` would try LOGIN after a failure
        try:
            code, text = s.auth("PLAIN", s.auth_plain)
        except smtplib.SMTPResponseException as exc:
            code, text = exc.smtp_code, exc.smtp_error
        return code, text.decode() if isinstance(text, bytes) else str(text)
    finally:
        s.close()


def tries_through(srv: ServerThread, tls: ssl.SSLContext, source: str, users: list[str], tries: int) -> list[str]:
    """One connection from ``source``: ``tries`` wrong passwords per user in turn; each answer."""
    m = SourcedIMAP(source, srv.port("imaps"), tls)
    try:
        return [imap_login(m, users[i % len(users)], f"wrong-{i}") for i in range(tries)]
    finally:
        m.shutdown()


def test_fifty_parallel_connections_get_no_more_tries_than_one_and_a_clean_address_logs_in(
    srv: ServerThread, tls: ssl.SSLContext
) -> None:
    victim, other = srv.make_pro("victim"), srv.make_pro("other")
    # one connection, one account: the threshold, then refusals at once
    alone = tries_through(srv, tls, "127.0.0.4", [other.address], 8)
    one = alone.count("failed")
    assert one == PER_ACCOUNT
    assert all("[UNAVAILABLE]" in a and "try again in 1 minute" in a for a in alone[one:])

    # fifty connections from one address, at once, on the victim and on unknown names
    through: list[str] = []
    lock = threading.Lock()
    ready, first_round = threading.Barrier(51), threading.Barrier(51)

    def attacker(i: int) -> None:
        m = SourcedIMAP("127.0.0.2", srv.port("imaps"), tls)
        try:
            ready.wait(TIMEOUT)
            name = victim.address if i % 2 else f"guess{i}@{support.PRO_DOMAIN}"
            for k in range(4):
                answer = imap_login(m, name, f"guess-{i}-{k}")
                with lock:
                    through.append(answer)
                if k == 0:
                    first_round.wait(TIMEOUT)
        finally:
            m.shutdown()

    threads = [threading.Thread(target=attacker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    ready.wait(TIMEOUT)
    first_round.wait(TIMEOUT)  # 50 guesses at once are answered; the victim is locked out; 150 more come
    probe = SourcedIMAP("127.0.0.2", srv.port("imaps"), tls)
    try:  # from the attacking address, even the right password is refused now
        assert "[UNAVAILABLE]" in imap_login(probe, victim.address, support.PASSWORD)
    finally:
        probe.shutdown()
    # during the attack, the victim from an address of her own: in at once
    started = time.monotonic()
    owner = SourcedIMAP("127.0.0.3", srv.port("imaps"), tls)
    try:
        assert imap_login(owner, victim.address, support.PASSWORD) == "ok"
    finally:
        owner.shutdown()
    # not slept on: the old throttle slept 8 s here (its cap, the account having failed 5 times from anywhere)
    assert time.monotonic() - started < 8
    for t in threads:
        t.join(TIMEOUT)
    assert len(through) == 200
    failed = through.count("failed")
    assert failed <= 2 * one  # no more than one connection gets, within a small factor
    assert all(a == "failed" or "[UNAVAILABLE]" in a for a in through)


def test_clients_behind_one_address_logging_in_at_once_all_get_in(srv: ServerThread, tls: ssl.SSLContext) -> None:
    """A hospital behind one address at 8 am: more logins in flight than the failure threshold, none failing.
    Attempts in flight are not failures: past the threshold they wait for a result, they are not refused."""
    users = [srv.make_pro(f"nat{i}") for i in range(12)]
    answers: list[str] = []
    lock = threading.Lock()
    at_once = threading.Barrier(2 * len(users))

    def client(i: int) -> None:
        m = SourcedIMAP("127.0.0.5", srv.port("imaps"), tls)
        try:
            at_once.wait(TIMEOUT)
            answer = imap_login(m, users[i // 2].address, support.PASSWORD)
            with lock:
                answers.append(answer)
        finally:
            m.shutdown()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(2 * len(users))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert answers == ["ok"] * (2 * len(users))  # 24 > PER_SOURCE logins at once from 127.0.0.5
    # and the address is as clean as before: a guess is still counted from zero
    assert tries_through(srv, tls, "127.0.0.5", [users[0].address], PER_ACCOUNT).count("failed") == PER_ACCOUNT


def test_imap_and_smtp_share_the_counters(srv: ServerThread, tls: ssl.SSLContext) -> None:
    pro = srv.make_pro()
    m = SourcedIMAP("127.0.0.7", srv.port("imaps"), tls)
    try:
        assert [imap_login(m, pro.address, "wrong") for _ in range(3)] == ["failed"] * 3
    finally:
        m.shutdown()
    for _ in range(PER_ACCOUNT - 3):
        assert smtp_login(srv, tls, "127.0.0.7", pro.address, "wrong")[0] == 535
    # the right password now: refused at once on both doors, with a sentence
    code, text = smtp_login(srv, tls, "127.0.0.7", pro.address, support.PASSWORD)
    assert code == 454 and text.startswith("4.7.0 Too many failed logins") and "try again in" in text
    m = SourcedIMAP("127.0.0.7", srv.port("imaps"), tls)
    try:
        answer = imap_login(m, pro.address, support.PASSWORD)
    finally:
        m.shutdown()
    assert "[UNAVAILABLE] Too many failed logins" in answer


def _lockouts(scope: str) -> float:
    return metrics.REGISTRY.get_sample_value("masante_login_lockouts_total", {"scope": scope}) or 0.0


def test_the_lockout_window_grows_and_ends_with_the_clock(srv: ServerThread, tls: ssl.SSLContext) -> None:
    """An address guessing names: locked for ``BASE``, then for twice as long; the clock ends each window."""
    pro = srv.make_pro()
    m = SourcedIMAP("127.0.0.8", srv.port("imaps"), tls)
    names = iter(f"guess{i}@{support.PRO_DOMAIN}" for i in range(100))
    before = _lockouts("source")
    try:
        assert [imap_login(m, next(names), "wrong") for _ in range(PER_SOURCE)] == ["failed"] * PER_SOURCE
        assert "from your address: try again in 1 minute" in imap_login(m, pro.address, support.PASSWORD)
        srv.advance(BASE - 5)
        assert "[UNAVAILABLE]" in imap_login(m, pro.address, support.PASSWORD)
        srv.advance(10)  # the first window is over: tries again, and a second lockout is twice as long
        assert [imap_login(m, next(names), "wrong") for _ in range(PER_SOURCE)] == ["failed"] * PER_SOURCE
        assert "try again in 2 minutes" in imap_login(m, pro.address, support.PASSWORD)
        srv.advance(BASE + 5)
        assert "[UNAVAILABLE]" in imap_login(m, pro.address, support.PASSWORD)
        srv.advance(BASE)
        assert imap_login(m, pro.address, support.PASSWORD) == "ok"
    finally:
        m.shutdown()
    assert _lockouts("source") == before + 2


def test_lockouts_are_audited_with_the_name_escaped(srv: ServerThread, tls: ssl.SSLContext) -> None:
    name = "evil\r\n\x1b[2J\x7f@hopital.test"  # (PLAIN cannot carry a NUL in a name)
    for _ in range(PER_ACCOUNT):
        assert smtp_login(srv, tls, "127.0.0.9", name, "wrong")[0] == 535
    entries = [e for e in srv.audit("login.lockout") if "127.0.0.9" in (e.detail or "")]
    assert len(entries) == 1
    entry = entries[0]
    assert entry.outcome == "locked" and entry.actor == "evil\\r\\n\\x1b[2j\\x7f@hopital.test"  # lower-cased
    assert not any(ch in entry.actor + entry.object_id + (entry.detail or "") for ch in "\r\n\x00\x1b")
    assert "smtp from 127.0.0.9; account; 5 failures; locked 60 s (lockout 1)" == entry.detail


def _open_plain(port: int, source: str) -> tuple[socket.socket, bytes]:
    s = socket.create_connection((HOST, port), TIMEOUT, source_address=(source, 0))
    return s, s.recv(4096)


def test_the_connection_cap_per_source_refuses_the_next_connection(srv: ServerThread) -> None:
    held: list[socket.socket] = []
    try:
        for _ in range(UNAUTHENTICATED):
            s, greeting = _open_plain(srv.port("imap"), "127.0.0.10")
            held.append(s)
            assert greeting.startswith(b"* OK")
        s, greeting = _open_plain(srv.port("imap"), "127.0.0.10")
        assert greeting.startswith(b"* BYE [UNAVAILABLE] Too many connections not logged in from your address (55)")
        assert s.recv(100) == b""  # and closed
        s.close()
        # another address is not concerned; SMTP shares the count for this one
        other, greeting = _open_plain(srv.port("imap"), "127.0.0.11")
        other.close()
        assert greeting.startswith(b"* OK")
        s, greeting = _open_plain(srv.port("submission"), "127.0.0.10")
        assert greeting.startswith(b"421 4.7.0 Too many connections not logged in from your address")
        s.close()
        # one closed: room again
        held.pop().close()
        for _ in range(100):  # the server sees the close when its loop runs: wait on it, not on a clock
            s, greeting = _open_plain(srv.port("submission"), "127.0.0.10")
            s.close()
            if greeting.startswith(b"220"):
                break
            srv.call(lambda: _tick())
        assert greeting.startswith(b"220")
    finally:
        for s in held:
            s.close()


def test_logged_in_connections_do_not_count_against_the_lower_unauthenticated_cap(
    srv: ServerThread, tls: ssl.SSLContext
) -> None:
    pro = srv.make_pro()
    logged = [SourcedIMAP("127.0.0.13", srv.port("imaps"), tls) for _ in range(2)]
    held: list[socket.socket] = []
    try:
        for m in logged:
            assert imap_login(m, pro.address, support.PASSWORD) == "ok"
        for _ in range(UNAUTHENTICATED):  # all of them, beside the two logged in
            s, greeting = _open_plain(srv.port("imap"), "127.0.0.13")
            held.append(s)
            assert greeting.startswith(b"* OK")
        s, greeting = _open_plain(srv.port("imap"), "127.0.0.13")
        s.close()
        assert greeting.startswith(b"* BYE [UNAVAILABLE] Too many connections not logged in")
    finally:
        for s in held:
            s.close()
        for m in logged:
            m.shutdown()


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0)


def test_the_connection_cap_per_account(srv: ServerThread, tls: ssl.SSLContext) -> None:
    pro: Account = srv.make_pro()
    sessions = [SourcedIMAP("127.0.0.12", srv.port("imaps"), tls) for _ in range(PER_ACCOUNT_CONNECTIONS + 1)]
    try:
        for m in sessions[:-1]:
            assert imap_login(m, pro.address, support.PASSWORD) == "ok"
        answer = imap_login(sessions[-1], pro.address, support.PASSWORD)
        assert "[LIMIT] Too many open connections to this account (3)" in answer
        # SMTP counts in the same cap: AUTH is refused, the session stays open
        code, text = smtp_login(srv, tls, "127.0.0.12", pro.address, support.PASSWORD)
        assert (code, text) == (454, "4.7.0 Too many open connections to this account (3): close one and try again")
        sessions[0].logout()
        sessions = sessions[1:]
        for _ in range(100):  # the server releases the place when the session's task ends: wait on it
            answer = imap_login(sessions[-1], pro.address, support.PASSWORD)
            if answer == "ok":
                break
            srv.call(lambda: _tick())
        assert answer == "ok"
    finally:
        for m in sessions:
            m.shutdown()


async def test_two_authenticators_on_one_database_share_counts(config: support.Config) -> None:
    """Two processes on one PostgreSQL (two contexts, each its own engine and Authenticator) see one count;
    on SQLite, two in one process do (the one process that serves the file)."""
    clock = FakeClock()
    a, b = Context.open(config, clock=clock), Context.open(config, clock=clock)
    try:
        await support.add_domains(a)
        pro = await support.make_pro(a)
        first, second = Authenticator(a), Authenticator(b)
        for i in range(PER_ACCOUNT):
            auth = first if i % 2 else second
            assert (await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.1.1.1")).refusal is None
        for auth in (first, second):
            result = await auth.authenticate(pro.address, support.PASSWORD, protocol="smtp", peer="10.1.1.1")
            assert result.refusal is not None
    finally:
        await a.close()
        await b.close()


async def test_logins_at_once_on_postgresql_share_the_counters_transactions(config: support.Config) -> None:
    """On PostgreSQL the guards and records waiting in a process run in batches, one transaction each: twenty
    logins at once from one address no longer queue on the address's row twenty times over, twice (each holding
    a pooled connection while it waited: p50 300-440 ms for 40 at once); and the counts come out as one by one."""
    ctx = Context.open(config, clock=FakeClock())
    try:
        if not ctx.db.is_postgresql:
            pytest.skip("SQLite counts in the memory of the one process that serves the file")
        await support.add_domains(ctx)
        pros = [await support.make_pro(ctx, f"burst{i}") for i in range(4)]
        auth = Authenticator(ctx)
        for pro in pros:  # the cache warm: no hash in a thread to spread the logins out
            assert (await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.2.2.2")).ok
        locks: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "FROM login_counters" in statement and "FOR UPDATE" in statement:
                locks.append(statement)

        event.listen(ctx.db.engine.sync_engine, "before_cursor_execute", count)
        try:
            results = await asyncio.gather(
                *(
                    auth.authenticate(pros[i % 4].address, support.PASSWORD, protocol="imap", peer="10.2.2.2")
                    for i in range(20)
                )
            )
        finally:
            event.remove(ctx.db.engine.sync_engine, "before_cursor_execute", count)
        assert all(r.ok for r in results)
        assert len(locks) < 20  # one by one: 40, a guard and a record each
        async with ctx.uow(readonly=True) as uow:
            source = await uow.login_counters.get(peer_key("10.2.2.2"))
        assert source is not None and source.failures == 0  # every success gave its count back
        # and a guess from there is counted from zero, up to the threshold
        for _ in range(PER_ACCOUNT):
            assert not (await auth.authenticate(pros[0].address, "wrong", protocol="imap", peer="10.2.2.2")).ok
        refused = await auth.authenticate(pros[0].address, support.PASSWORD, protocol="imap", peer="10.2.2.2")
        assert refused.refusal is not None and refused.refusal.startswith("Too many failed logins on this account")
    finally:
        await ctx.close()


async def test_a_success_gives_back_its_own_count_and_clears_the_accounts(config: support.Config) -> None:
    """What a success leaves in the counters, one login at a time (on PostgreSQL a batch of successes alone gives
    their counts back in one statement): the address keeps its failures, the account's are forgotten."""
    ctx = Context.open(config, clock=FakeClock())
    try:
        await support.add_domains(ctx)
        pro = await support.make_pro(ctx, "giveback")
        auth = Authenticator(ctx)
        for _ in range(3):
            assert not (await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.4.4.4")).ok
        assert (await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.4.4.4")).ok
        if ctx.db.is_postgresql:
            async with ctx.uow(readonly=True) as uow:
                source = await uow.login_counters.get(peer_key("10.4.4.4"))
                account = await uow.login_counters.get(account_key(pro.address))
            assert source is not None and account is not None
            assert (source.failures, account.failures) == (3, 0)
        # the same, as a client sees it: the account's count starts again from zero, five more tries before it is
        # refused from this address
        answers = [
            (await auth.authenticate(pro.address, "wrong", protocol="imap", peer="10.4.4.4")).refusal
            for _ in range(PER_ACCOUNT)
        ]
        assert answers == [None] * PER_ACCOUNT
        refused = await auth.authenticate(pro.address, support.PASSWORD, protocol="imap", peer="10.4.4.4")
        assert refused.refusal is not None and "on this account" in refused.refusal
    finally:
        await ctx.close()
