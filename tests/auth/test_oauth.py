"""Bearer tokens (SASL XOAUTH2, OAUTHBEARER; RFC 7628) on IMAP and submission, against a provider of our own.

The provider (``tests.auth.idp``) makes its keys here and serves its JWKS over
HTTPS on 127.0.0.1; the server is configured with ``[oauth] jwks_url``. Clients
are imaplib (AUTHENTICATE) and smtplib (AUTH, initial response), plus a raw
IMAP line for SASL-IR. Time is the server's FakeClock.
"""

from __future__ import annotations

import base64
import datetime as dt
import imaplib
import itertools
import json
import logging
import smtplib
import ssl
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from directory.accounts import AccountService
from directory.oauth import OauthConfigError, OauthSettings
from mailserver.clock import FakeClock
from mailserver.config import build, load
from mailserver.context import Context
from mailserver.store.models import Account, AccountKind
from tests import support
from tests.auth import idp as I
from tests.harness.server import Databases, ServerThread, start_server

HOST = "127.0.0.1"
TIMEOUT = 30
FAILED = "[AUTHENTICATIONFAILED] Invalid or expired token, or not for this mailbox"
SMTP_FAILED = (535, b"5.7.8 Authentication credentials invalid")
_numbers = itertools.count(100)


@pytest.fixture(scope="module")
def provider(pki: support.TestPKI) -> Iterator[I.IdP]:
    with I.IdP.serve(pki) as p:
        yield p


@pytest.fixture(scope="module")
def tls(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def _start(
    dbs: Databases, pki: support.TestPKI, tmp: Path, provider: I.IdP, *, jwks_url: str = "", **ports: int
) -> ServerThread:
    oauth = provider.settings(pki) | ({"jwks_url": jwks_url} if jwks_url else {})
    server = start_server(
        tmp,
        dbs.new(),
        pki,
        sections={"ports": {"mx": -1, **ports}, "oauth": oauth},
        clock=FakeClock(),
    )
    server.call(support.add_domains)
    return server


@pytest.fixture(scope="module")
def site(
    provider: I.IdP, dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    server = _start(dbs, pki, tmp_path_factory.mktemp("oauth"), provider)
    yield server
    server.stop()


@pytest.fixture
def srv(site: ServerThread) -> Iterator[ServerThread]:
    yield site
    forget_failures(site)


def forget_failures(server: ServerThread) -> None:
    """One test's refused tokens must not lock the next test's logins out (the login limits every door shares)."""
    server.reset_throttle()


def professional(server: ServerThread, kind: AccountKind = AccountKind.PER, rpps: str | None = None) -> Account:
    """A mailbox of a professional of its own (a fresh RPPS unless given): token login only."""
    n = next(_numbers)
    number = rpps or I.rpps(n)

    async def go(ctx: Context) -> Account:
        return await AccountService(ctx).create(
            f"{kind.value.lower()}.{n}@{support.PRO_DOMAIN}", kind, actor="test", rpps=number
        )

    return server.call(go)


def now(server: ServerThread) -> float:
    return server.clock().timestamp()


# --- clients ---------------------------------------------------------------------------------------------------


def imap_auth(
    server: ServerThread, tls: ssl.SSLContext, mechanism: str, message: bytes, ack: bytes = b"\x01"
) -> tuple[str, list[bytes]]:
    """imaplib's AUTHENTICATE: ("OK" or the NO text, the challenges the server sent)."""
    seen: list[bytes] = []

    def answer(challenge: bytes) -> bytes:
        seen.append(challenge)
        return message if len(seen) == 1 else ack

    m = imaplib.IMAP4_SSL(HOST, server.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    try:
        typ, _ = m.authenticate(mechanism, answer)
        return typ, seen
    except imaplib.IMAP4.error as exc:
        return str(exc), seen
    finally:
        m.shutdown()


def smtp_auth(
    server: ServerThread, tls: ssl.SSLContext, mechanism: str, message: bytes, ack: str = "\x01"
) -> tuple[int, bytes, list[bytes]]:
    """smtplib's AUTH with an initial response over STARTTLS: (code, text, the 334 challenges received)."""
    seen: list[bytes] = []

    def answer(challenge: bytes | None = None) -> str:
        if challenge is None:
            return message.decode()
        seen.append(challenge)
        return ack

    with smtplib.SMTP(HOST, server.port("submission"), timeout=TIMEOUT) as s:
        s.starttls(context=tls)
        s.ehlo()
        try:
            code, text = s.auth(mechanism, answer, initial_response_ok=True)
        except smtplib.SMTPAuthenticationError as exc:
            code, text = exc.smtp_code, exc.smtp_error
        return code, text, seen


def last_login(server: ServerThread, actor: str) -> Any:
    rows = [e for e in server.audit("login") if e.actor == actor]
    assert rows, f"no login audited for {actor}"
    return rows[-1]


# --- what is offered ----------------------------------------------------------------------------------------------


def test_bearer_mechanisms_are_advertised_after_tls_when_oauth_is_set(srv: ServerThread, tls: ssl.SSLContext) -> None:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    try:
        assert {"AUTH=PLAIN", "AUTH=XOAUTH2", "AUTH=OAUTHBEARER"} <= set(m.capabilities)
        assert "AUTH=EXTERNAL" not in m.capabilities  # no [tls] account_ca here
    finally:
        m.shutdown()
    with smtplib.SMTP(HOST, srv.port("submission"), timeout=TIMEOUT) as s:
        s.ehlo()
        assert "auth" not in s.esmtp_features  # not before TLS
        s.starttls(context=tls)
        s.ehlo()
        assert s.esmtp_features["auth"].split() == ["LOGIN", "OAUTHBEARER", "PLAIN", "XOAUTH2"]


# --- the matrix: each token accepted or refused, on both doors and both mechanisms ----------------------------------


Case = Callable[[ServerThread, I.IdP], tuple[str, str, str]]  # -> (mailbox, token, audited reason)


def _valid(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    return a.address, I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv))), "ok"


def _valid_es256(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    return a.address, I.token(p.key("ec-1"), I.claims("8" + str(a.rpps), now(srv))), "ok"


def _within_leeway(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    t = now(srv)
    return a.address, I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), t, exp=int(t) - 2)), "ok"


def _org_of_the_professional(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    per = professional(srv)
    org = professional(srv, AccountKind.ORG, rpps=per.rpps)  # a service created for this professional
    return org.address, I.token(p.key("rsa-1"), I.claims("8" + str(per.rpps), now(srv))), "ok"


def _expired(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    t = now(srv)
    return a.address, I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), t - 400, exp=int(t) - 60)), "expired"


def _not_yet_valid(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    t = now(srv)
    tok = I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), t, nbf=int(t) + 60, exp=int(t) + 360))
    return a.address, tok, "not-yet-valid"


def _wrong_issuer(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    tok = I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv), iss="https://evil.test/realms/psc"))
    return a.address, tok, "issuer"


def _wrong_audience(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    return a.address, I.token(p.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv), aud="another-app")), "audience"


def _unknown_key(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    rogue = I.new_key("rogue-1")
    return a.address, I.token(rogue, I.claims("8" + str(a.rpps), now(srv))), "unknown-key"


def _known_kid_other_key(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    rogue = I.new_key("rsa-1")  # claims to be the provider's key
    return a.address, I.token(rogue, I.claims("8" + str(a.rpps), now(srv))), "signature"


def _alg_none(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    tok = I.forged({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, I.claims("8" + str(a.rpps), now(srv)), None)
    return a.address, tok, "algorithm"


def _hs256_with_public_key(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    header = {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}
    tok = I.forged(header, I.claims("8" + str(a.rpps), now(srv)), p.key("rsa-1").public_pem())
    return a.address, tok, "algorithm"


def _another_professionals_mailbox(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    mine, theirs = professional(srv), professional(srv)
    return theirs.address, I.token(p.key("rsa-1"), I.claims("8" + str(mine.rpps), now(srv))), "not-owner"


def _application_mailbox(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    per = professional(srv)
    app = professional(srv, AccountKind.APP, rpps=per.rpps)  # software: a certificate, not a person's token
    return app.address, I.token(p.key("rsa-1"), I.claims("8" + str(per.rpps), now(srv))), "kind-APP"


def _adeli_identity(srv: ServerThread, p: I.IdP) -> tuple[str, str, str]:
    a = professional(srv)
    return a.address, I.token(p.key("rsa-1"), I.claims("0751234567", now(srv))), "no-identity"


CASES: dict[str, Case] = {
    "valid": _valid,
    "valid-es256": _valid_es256,
    "exp-within-leeway": _within_leeway,
    "org-of-the-professional": _org_of_the_professional,
    "expired": _expired,
    "not-yet-valid": _not_yet_valid,
    "wrong-issuer": _wrong_issuer,
    "wrong-audience": _wrong_audience,
    "unknown-key": _unknown_key,
    "kid-of-the-provider-other-key": _known_kid_other_key,
    "alg-none": _alg_none,
    "hs256-public-key-as-secret": _hs256_with_public_key,
    "another-professionals-mailbox": _another_professionals_mailbox,
    "application-mailbox": _application_mailbox,
    "adeli-identity": _adeli_identity,
}


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("case", list(CASES))
def test_imap_authenticate(srv: ServerThread, provider: I.IdP, tls: ssl.SSLContext, case: str, mechanism: str) -> None:
    user, tok, why = CASES[case](srv, provider)
    message = I.xoauth2(user, tok) if mechanism == "XOAUTH2" else I.oauthbearer(user, tok)
    answer, challenges = imap_auth(srv, tls, mechanism, message, ack=b"" if mechanism == "XOAUTH2" else b"\x01")
    if why == "ok":
        assert (answer, challenges) == ("OK", [b""])
    else:
        # RFC 7628 §3.2.2: the JSON error as a challenge, the client's answer, then the failure
        assert (answer, challenges) == (FAILED, [b"", I.ERROR_CHALLENGE])
    row = last_login(srv, user)
    assert (row.outcome, row.detail.rsplit("; ", 1)[-1]) == ("ok" if why == "ok" else "fail", why)
    signature = tok.rsplit(".", 1)[1]
    assert tok not in row.detail and (not signature or signature not in row.detail)


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
@pytest.mark.parametrize("case", list(CASES))
def test_smtp_auth(srv: ServerThread, provider: I.IdP, tls: ssl.SSLContext, case: str, mechanism: str) -> None:
    user, tok, why = CASES[case](srv, provider)
    message = I.xoauth2(user, tok) if mechanism == "XOAUTH2" else I.oauthbearer(user, tok)
    code, text, challenges = smtp_auth(srv, tls, mechanism, message, ack="" if mechanism == "XOAUTH2" else "\x01")
    if why == "ok":
        assert (code, text, challenges) == (235, b"2.7.0 Authentication successful", [])
    else:
        assert ((code, text), challenges) == (SMTP_FAILED, [I.ERROR_CHALLENGE])
    assert last_login(srv, user).detail.endswith("; " + why)


def test_a_token_opens_a_session_that_works(srv: ServerThread, provider: I.IdP, tls: ssl.SSLContext) -> None:
    """After AUTHENTICATE XOAUTH2 the session is the mailbox's: SELECT INBOX sees the message delivered to it."""
    a = professional(srv)
    srv.deliver(a, support.make_message("x@hopital.test", a.address, "Bonjour", "Un message."))
    tok = I.token(provider.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv)))
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    try:
        assert m.authenticate("XOAUTH2", lambda _: I.xoauth2(a.address, tok))[0] == "OK"
        assert m.select("INBOX") == ("OK", [b"1"])
    finally:
        m.logout()


def test_sasl_ir_initial_response(srv: ServerThread, provider: I.IdP, tls: ssl.SSLContext) -> None:
    """RFC 4959: the token in the AUTHENTICATE line itself; a refusal still sends the JSON challenge first."""
    a = professional(srv)
    good = I.token(provider.key("ec-1"), I.claims("8" + str(a.rpps), now(srv)))
    bad = I.token(provider.key("ec-1"), I.claims("8" + str(a.rpps), now(srv), aud="nope"))
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    try:
        m.send(b"a1 AUTHENTICATE OAUTHBEARER " + base64.b64encode(I.oauthbearer(a.address, bad)) + b"\r\n")
        assert m.readline() == b"+ " + base64.b64encode(I.ERROR_CHALLENGE) + b"\r\n"
        m.send(b"AQ==\r\n")
        assert m.readline() == b"a1 NO " + FAILED.encode() + b"\r\n"
        forget_failures(srv)
        m.send(b"a2 AUTHENTICATE OAUTHBEARER " + base64.b64encode(I.oauthbearer(a.address, good)) + b"\r\n")
        assert m.readline().startswith(b"a2 OK [CAPABILITY IMAP4rev1")
    finally:
        m.shutdown()


def test_malformed_bearer_messages_are_bad(srv: ServerThread, tls: ssl.SSLContext) -> None:
    m = imaplib.IMAP4_SSL(HOST, srv.port("imaps"), ssl_context=tls, timeout=TIMEOUT)
    try:
        for i, (mech, msg, text) in enumerate(
            [
                ("XOAUTH2", b"user=a@b\x01auth=Basic abc\x01\x01", b"Only auth=Bearer <token> is accepted"),
                ("OAUTHBEARER", b"p=tls-unique,,\x01auth=Bearer abc\x01\x01", b"Channel binding is not offered here"),
                ("OAUTHBEARER", b"n,a=x@y,\x01auth=Bearer abc\x01", b"OAUTHBEARER expects its key=value fields"),
            ]
        ):
            m.send(f"b{i} AUTHENTICATE {mech} ".encode() + base64.b64encode(msg) + b"\r\n")
            line = m.readline()
            assert line.startswith(f"b{i} BAD ".encode()) and text in line, line
    finally:
        m.shutdown()


# --- the JWKS: fetched once, again once on an unknown kid, never per login ------------------------------------------


@pytest.fixture(params=["imap", "smtp"])
def fresh(
    request: pytest.FixtureRequest, dbs: Databases, pki: support.TestPKI, tmp_path: Path
) -> Iterator[tuple[ServerThread, I.IdP, str]]:
    """A provider and a server of their own, with one door only: every JWKS fetch is that door's."""
    door: str = request.param
    ports = {"submission": -1, "submissions": -1} if door == "imap" else {"imap": -1, "imaps": -1}
    with I.IdP.serve(pki) as p:
        server = _start(dbs, pki, tmp_path, p, **ports)
        try:
            yield server, p, door
        finally:
            server.stop()


def test_jwks_is_fetched_once_and_again_once_on_an_unknown_kid(
    fresh: tuple[ServerThread, I.IdP, str], tls: ssl.SSLContext
) -> None:
    server, p, door = fresh
    a = professional(server)

    def login(key: I.SigningKey) -> bool:
        tok = I.token(key, I.claims("8" + str(a.rpps), now(server)))
        forget_failures(server)
        if door == "imap":
            return imap_auth(server, tls, "XOAUTH2", I.xoauth2(a.address, tok), ack=b"")[0] == "OK"
        return smtp_auth(server, tls, "XOAUTH2", I.xoauth2(a.address, tok), ack="")[0] == 235

    assert p.hits == 0  # nothing is fetched before the first token
    assert all(login(p.key(k)) for k in ["rsa-1", "ec-1"] * 4)
    assert p.hits == 1

    # the provider rotates: a new key, published; the first token naming it makes one fetch
    server.advance(61)
    p.published.append(I.new_key("rsa-2"))
    assert login(p.key("rsa-2")) and login(p.key("rsa-2"))
    assert p.hits == 2

    # kids nobody published: at most one fetch a minute, however many logins name them
    ghost = I.new_key("ghost")
    assert not any(login(ghost) for _ in range(3))
    assert p.hits == 2
    server.advance(61)
    assert not any(login(ghost) for _ in range(3))
    assert p.hits == 3
    assert login(p.key("rsa-1"))
    assert p.hits == 3

    # past jwks_max_age (an hour) the next login fetches again, once
    server.advance(3601)
    assert login(p.key("rsa-1")) and login(p.key("ec-1"))
    assert p.hits == 4


@pytest.mark.parametrize("path", ["/moved", "/absent"])
def test_a_jwks_that_cannot_be_fetched_logs_nobody_in(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path, provider: I.IdP, tls: ssl.SSLContext, path: str
) -> None:
    """A redirect (here to http://) is not followed; a 404 is no JWKS: the login is refused, not crashed."""
    server = _start(dbs, pki, tmp_path, provider, jwks_url=provider.url.replace("/jwks", path), submission=-1)
    hits = provider.hits
    try:
        a = professional(server)
        tok = I.token(provider.key("rsa-1"), I.claims("8" + str(a.rpps), now(server)))
        assert imap_auth(server, tls, "OAUTHBEARER", I.oauthbearer(a.address, tok)) == (
            FAILED,
            [b"", I.ERROR_CHALLENGE],
        )
        assert last_login(server, a.address).detail.endswith("; jwks-unavailable")
        assert provider.hits == hits  # neither the clear-text copy nor anything else was read
    finally:
        server.stop()


# --- configuration ----------------------------------------------------------------------------------------------


def test_oauth_is_configured_from_the_environment(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path, tls: ssl.SSLContext
) -> None:
    """MASANTE_OAUTH_* set the [oauth] keys (``make run`` execs ``masante-server``, which reads them so);
    here with a JWKS file instead of a URL."""
    key = I.new_key("file-1", "ES256")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [key.jwk()]}))
    base = support.make_config(tmp_path, dbs.new(), pki, ports={"mx": -1, "imap": -1, "submissions": -1})
    base.path.write_text(base.to_toml())
    env = {
        "MASANTE_OAUTH_ISSUER": I.ISSUER,
        "MASANTE_OAUTH_AUDIENCE": I.AUDIENCE,
        "MASANTE_OAUTH_JWKS_FILE": "jwks.json",  # relative to the configuration's directory
        "MASANTE_OAUTH_LEEWAY": "3",
    }
    cfg = load(base.path, env=env)
    settings = OauthSettings.from_config(cfg)
    assert settings is not None
    assert (settings.issuer, settings.audience, settings.jwks_file, settings.leeway) == (
        I.ISSUER,
        I.AUDIENCE,
        jwks,
        dt.timedelta(seconds=3),
    )
    assert settings.identity_claim == "preferred_username"
    server = ServerThread(cfg, clock=FakeClock()).start()
    try:
        server.call(support.add_domains)
        a = professional(server)
        tok = I.token(key, I.claims("8" + str(a.rpps), now(server)))
        assert imap_auth(server, tls, "OAUTHBEARER", I.oauthbearer(a.address, tok)) == ("OK", [b""])
        assert smtp_auth(server, tls, "OAUTHBEARER", I.oauthbearer(a.address, tok))[:2] == (
            235,
            b"2.7.0 Authentication successful",
        )
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("oauth", "message"),
    [
        ({"issuer": I.ISSUER, "jwks_file": "k.json"}, "oauth.audience is required"),
        ({"audience": "x"}, "oauth.issuer is required"),
        ({"issuer": I.ISSUER, "audience": "x"}, "set exactly one of oauth.jwks_file and oauth.jwks_url"),
        (
            {"issuer": I.ISSUER, "audience": "x", "jwks_url": "http://127.0.0.1:8080/jwks"},
            "oauth.jwks_url must be an https:// URL",
        ),
        ({"issuer": I.ISSUER, "audience": "x", "jwks_file": "k.json", "leeway": -1}, "oauth.leeway"),
    ],
)
def test_an_incomplete_oauth_section_is_refused(oauth: dict[str, object], message: str, tmp_path: Path) -> None:
    cfg = build({"oauth": oauth}, {}, tmp_path / "masante.toml")
    with pytest.raises(OauthConfigError, match=message):
        OauthSettings.from_config(cfg)


def test_without_oauth_nothing_is_offered(tmp_path: Path) -> None:
    cfg = build(tomllib.loads(""), {}, tmp_path / "masante.toml")
    assert OauthSettings.from_config(cfg) is None


def test_tokens_reach_no_log_record(
    srv: ServerThread, provider: I.IdP, tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record of the server's loggers while a token is accepted and another refused, on both doors."""
    a = professional(srv)
    good = I.token(provider.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv)))
    bad = I.token(provider.key("rsa-1"), I.claims("8" + str(a.rpps), now(srv), aud="elsewhere"))
    with caplog.at_level(logging.DEBUG):
        for tok in (good, bad):
            imap_auth(srv, tls, "XOAUTH2", I.xoauth2(a.address, tok), ack=b"")
            smtp_auth(srv, tls, "OAUTHBEARER", I.oauthbearer(a.address, tok))
            forget_failures(srv)
    texts = [f"{r.getMessage()} {r.__dict__}" for r in caplog.records]
    assert any("smtp.auth" in t for t in texts) and any("imap.login" in t for t in texts)
    for tok in (good, bad):
        signature = tok.rsplit(".", 1)[1]
        assert not [t for t in texts if signature in t or base64.b64encode(tok.encode()).decode()[:40] in t]


def test_sasl_bearer_decoders() -> None:
    from mailserver import sasl

    assert sasl.parse_oauthbearer(b"n,a=x=2Cy=3Dz@b.test,\x01auth=Bearer t0k.e-n\x01\x01").authzid == "x,y=z@b.test"
    assert sasl.parse_oauthbearer(b"y,,\x01host=h\x01auth=bearer abc\x01\x01") == sasl.BearerCredentials("", "abc")
    assert repr(sasl.parse_xoauth2(b"user=u@b\x01auth=Bearer secret\x01\x01")) == (
        "BearerCredentials(authzid='u@b', token='***')"
    )
    for bad in (
        b"n,a=x=41@b,\x01auth=Bearer abc\x01\x01",  # =41 is no saslname escape
        b"n,a=x@b\x01auth=Bearer abc\x01\x01",  # the GS2 header ends with a comma
        b"n,,\x01auth=Bearer a b\x01\x01",  # a space in the token
        b"n,,\x01host=h\x01\x01",  # no auth
    ):
        with pytest.raises(sasl.MalformedBearer):
            sasl.parse_oauthbearer(bad)
    for bad in (b"user=u@b\x01auth=Bearer abc\x01", b"auth=Bearer abc\x01\x01", b"user=u\x01auth=Bearer\x01\x01"):
        with pytest.raises(sasl.MalformedBearer):
            sasl.parse_xoauth2(bad)
    with pytest.raises(sasl.NotBase64, match="too long for XOAUTH2"):
        sasl.decode_bearer("XOAUTH2", "A" * 20000)
