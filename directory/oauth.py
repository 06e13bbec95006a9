"""Bearer tokens of an OpenID Connect provider (Pro Santé Connect): a JWT checked against the provider's JWKS.

Invariants:
- Off unless ``[oauth] issuer`` is set (``OauthSettings.from_config`` returns
  None); set, it needs ``audience`` and exactly one of ``jwks_file`` /
  ``jwks_url``, or the server does not start (``OauthConfigError`` names the key).
  ``jwks_url`` is HTTPS only: the keys decide who logs in, a clear-text fetch
  would let the network choose them.
- A token is accepted only if: its header's ``alg`` is RS256 or ES256 (never
  ``none``, never HMAC: a public key used as an HMAC secret opens nothing),
  its ``kid`` names a key of the JWKS of the matching type (RSA for RS256,
  EC P-256 for ES256, and the key's own ``alg`` if it states one), the
  signature verifies, ``iss`` and ``aud`` are the configured ones, ``exp`` is
  present and not past, ``nbf`` if present is reached (both with ``leeway``
  seconds, on the context's clock), and the identity claim is a national
  professional id ``8`` + RPPS.
- The JWKS is read once and kept: again only when a token names a ``kid`` it
  does not hold (at most once per ``REFETCH_INTERVAL`` on the clock, so a
  stream of made-up kids costs one fetch a minute, not one per login) or when
  it is older than ``jwks_max_age``. Concurrent logins share one fetch.
- Nothing here logs or keeps a token; a refusal is a short reason
  (``BearerRefused.reason``: ``expired``, ``issuer``...) that the caller audits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from crypto.tls import client_context
from directory.errors import InvalidIdentifier
from directory.identifiers import IdType, parse_national_id
from mailserver.config import Config, ConfigError

log = logging.getLogger("masante.oauth")

#: the signature algorithms accepted, and the key type each needs
ALGORITHMS: Mapping[str, str] = {"RS256": "RSA", "ES256": "EC"}
#: the shortest time between two fetches of the JWKS caused by unknown kids
REFETCH_INTERVAL = dt.timedelta(seconds=60)
#: the largest JWKS document read
MAX_JWKS = 1024 * 1024
FETCH_TIMEOUT = 10.0
#: PyJWT checks signature, iss and aud; exp and nbf are checked on the injected clock, not on time.time()
_DECODE_OPTIONS: Any = {"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_nbf": False, "verify_iat": False}


class OauthConfigError(ConfigError):
    """``[oauth]`` is set but cannot be used; the message names the key."""


class BearerRefused(Exception):
    """A token that does not log in; ``reason`` is a short word for the audit log and the metrics."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OauthSettings:
    issuer: str
    audience: str
    jwks_file: Path | None
    jwks_url: str | None
    jwks_ca_file: Path | None
    jwks_max_age: dt.timedelta
    identity_claim: str
    leeway: dt.timedelta

    @classmethod
    def from_config(cls, config: Config) -> OauthSettings | None:
        o = config.oauth
        if not o.issuer:
            if o.audience or o.jwks_file or o.jwks_url:
                raise OauthConfigError("oauth.issuer is required when [oauth] is set (MASANTE_OAUTH_ISSUER)")
            return None
        if not o.audience:
            raise OauthConfigError("oauth.audience is required with oauth.issuer (MASANTE_OAUTH_AUDIENCE)")
        if bool(o.jwks_file) == bool(o.jwks_url):
            raise OauthConfigError("set exactly one of oauth.jwks_file and oauth.jwks_url")
        if o.jwks_url and not o.jwks_url.lower().startswith("https://"):
            raise OauthConfigError(f"oauth.jwks_url must be an https:// URL, not {o.jwks_url!r}")
        if not o.identity_claim:
            raise OauthConfigError("oauth.identity_claim cannot be empty")
        if o.leeway < 0 or o.leeway > 300:
            raise OauthConfigError("oauth.leeway is seconds between 0 and 300")
        return cls(
            issuer=o.issuer,
            audience=o.audience,
            jwks_file=config.resolve(Path(o.jwks_file)) if o.jwks_file else None,
            jwks_url=o.jwks_url or None,
            jwks_ca_file=config.resolve(Path(o.jwks_ca_file)) if o.jwks_ca_file else None,
            jwks_max_age=dt.timedelta(seconds=max(60, o.jwks_max_age)),
            identity_claim=o.identity_claim,
            leeway=dt.timedelta(seconds=o.leeway),
        )

    @property
    def openid_configuration(self) -> str:
        """Where the provider describes itself (OpenID Connect Discovery §4), for the RFC 7628 error."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a valid token names: the national professional id and its RPPS."""

    national_id: str
    rpps: str


def _parse_jwks(data: bytes, where: str) -> dict[str, jwt.PyJWK]:
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BearerRefused("jwks-unreadable") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        log.warning("oauth.jwks-unreadable", extra={"fields": {"source": where, "why": "no keys list"}})
        raise BearerRefused("jwks-unreadable")
    out: dict[str, jwt.PyJWK] = {}
    for k in keys:
        if not isinstance(k, dict) or not isinstance(k.get("kid"), str) or k.get("use", "sig") != "sig":
            continue
        if k.get("kty") not in ALGORITHMS.values():
            continue
        try:
            out[k["kid"]] = jwt.PyJWK(k)
        except (jwt.exceptions.PyJWKError, jwt.exceptions.InvalidKeyError):
            log.warning("oauth.jwks-key-skipped", extra={"fields": {"source": where, "kid": k["kid"][:64]}})
    return out


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is then an HTTPError: the fetch fails


class JwksCache:
    """The provider's signing keys by ``kid``, read from a file or fetched over HTTPS (see the module's rules)."""

    def __init__(self, settings: OauthSettings, clock: Callable[[], dt.datetime]) -> None:
        self.settings, self.clock = settings, clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at: dt.datetime | None = None
        self._tried_at: dt.datetime | None = None
        self._lock = asyncio.Lock()
        #: how many times the keys were read (tests count them; so may a metric)
        self.fetches = 0

    def _read(self) -> bytes:
        s = self.settings
        if s.jwks_file is not None:
            with s.jwks_file.open("rb") as f:
                return f.read(MAX_JWKS + 1)
        # https only, and no redirect: a 3xx could point to http:// and let the network choose the keys
        opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=client_context(s.jwks_ca_file)), _NoRedirect()
        )
        req = urllib.request.Request(s.jwks_url or "", headers={"Accept": "application/json"})  # noqa: S310 - https only
        with opener.open(req, timeout=FETCH_TIMEOUT) as resp:
            return bytes(resp.read(MAX_JWKS + 1))

    async def _load(self) -> None:
        now = self.clock()
        self._tried_at = now
        self.fetches += 1
        where = str(self.settings.jwks_file or self.settings.jwks_url)
        try:
            data = await asyncio.to_thread(self._read)
        except (OSError, urllib.error.URLError, ValueError) as exc:
            log.warning("oauth.jwks-unavailable", extra={"fields": {"source": where, "error": type(exc).__name__}})
            raise BearerRefused("jwks-unavailable") from None
        if len(data) > MAX_JWKS:
            raise BearerRefused("jwks-unreadable")
        self._keys = _parse_jwks(data, where)
        self._loaded_at = now
        log.info("oauth.jwks-loaded", extra={"fields": {"source": where, "keys": len(self._keys)}})

    async def key(self, kid: str) -> jwt.PyJWK:
        async with self._lock:
            now = self.clock()
            stale = self._loaded_at is None or now - self._loaded_at > self.settings.jwks_max_age
            unknown = kid not in self._keys
            may_refetch = self._tried_at is None or now - self._tried_at >= REFETCH_INTERVAL
            if (stale or unknown) and may_refetch:
                await self._load()
            found = self._keys.get(kid)
        if found is None:
            raise BearerRefused("unknown-key")
        return found


class BearerVerifier:
    """Checks a bearer token and says whom it names (``Identity``), or raises ``BearerRefused``."""

    def __init__(self, settings: OauthSettings, clock: Callable[[], dt.datetime]) -> None:
        self.settings, self.clock = settings, clock
        self.jwks = JwksCache(settings, clock)

    async def verify(self, token: str) -> Identity:
        s = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.exceptions.DecodeError:
            raise BearerRefused("malformed") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise BearerRefused("algorithm")
        if not isinstance(kid, str) or not kid:
            raise BearerRefused("no-key-id")
        key = await self.jwks.key(kid)
        if key.key_type != ALGORITHMS[alg] or key.algorithm_name != alg:
            raise BearerRefused("algorithm")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=s.audience,
                issuer=s.issuer,
                options={
                    "require": ["exp", "iss", "aud"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.exceptions.InvalidSignatureError:
            raise BearerRefused("signature") from None
        except jwt.exceptions.InvalidIssuerError:
            raise BearerRefused("issuer") from None
        except jwt.exceptions.InvalidAudienceError:
            raise BearerRefused("audience") from None
        except jwt.exceptions.MissingRequiredClaimError:
            raise BearerRefused("missing-claim") from None
        except jwt.exceptions.InvalidAlgorithmError:
            raise BearerRefused("algorithm") from None
        except jwt.exceptions.InvalidTokenError:
            raise BearerRefused("malformed") from None
        now = self.clock()
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise BearerRefused("missing-claim")
        if now >= dt.datetime.fromtimestamp(exp, dt.UTC) + s.leeway:
            raise BearerRefused("expired")
        if nbf is not None:
            if not isinstance(nbf, int | float) or isinstance(nbf, bool):
                raise BearerRefused("malformed")
            if now + s.leeway < dt.datetime.fromtimestamp(nbf, dt.UTC):
                raise BearerRefused("not-yet-valid")
        subject = claims.get(s.identity_claim)
        if not isinstance(subject, str):
            raise BearerRefused("no-identity")
        try:
            pid = parse_national_id(subject)
        except InvalidIdentifier:
            raise BearerRefused("no-identity") from None
        if pid.type is not IdType.RPPS:
            raise BearerRefused("no-identity")  # mailboxes are bound to RPPS numbers (directory.annuaire)
        return Identity(pid.national_id, pid.value)
