"""An identity provider of the tests' own: signing keys made here, a JWKS served over HTTPS on 127.0.0.1.

Invariants:
- ``IdP.serve(pki)`` starts an ``http.server`` in a daemon thread with the
  test CA's server certificate (127.0.0.1 is in its SAN), so the server under
  test fetches ``jwks_url`` over real HTTPS with ``jwks_ca_file`` = the test CA;
  leaving the ``with`` block shuts it down (and the thread ends with it).
- ``hits`` counts the GETs of the JWKS: what "fetched once" is measured by.
- ``token(...)`` signs with a key of the provider (RS256 or ES256); ``forged``
  builds the two classic attacks by hand (PyJWT refuses to make them):
  ``alg=none`` and HS256 keyed with the RSA public key's PEM.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from directory.identifiers import luhn_ok
from tests import support

ISSUER = "https://idp.test/realms/psc"
AUDIENCE = "masante-mail"


def rpps(n: int) -> str:
    """A valid RPPS number (11 digits, Luhn) made from ``n``."""
    base = f"1{n:09d}"
    return next(base + d for d in "0123456789" if luhn_ok(base + d))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def jwk(self) -> dict[str, Any]:
        algo = RSAAlgorithm if self.alg == "RS256" else ECAlgorithm
        out: dict[str, Any] = json.loads(algo.to_jwk(self.private.public_key()))
        out.update(kid=self.kid, use="sig", alg=self.alg)
        return out

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def new_key(kid: str, alg: str = "RS256") -> SigningKey:
    private = rsa.generate_private_key(65537, 2048) if alg == "RS256" else ec.generate_private_key(ec.SECP256R1())
    return SigningKey(kid, alg, private)


@dataclass
class IdP:
    published: list[SigningKey] = field(default_factory=list)
    hits: int = 0
    url: str = ""
    clear_url: str = ""

    def jwks(self) -> bytes:
        return json.dumps({"keys": [k.jwk() for k in self.published]}).encode()

    def key(self, kid: str) -> SigningKey:
        return next(k for k in self.published if k.kid == kid)

    @classmethod
    @contextlib.contextmanager
    def serve(cls, pki: support.TestPKI) -> Iterator[IdP]:
        idp = cls([new_key("rsa-1", "RS256"), new_key("ec-1", "ES256")])

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path == "/moved":  # a redirect to clear text: the server must not follow it
                    self.send_response(302)
                    self.send_header("Location", idp.clear_url)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != "/jwks":
                    self.send_error(404)
                    return
                idp.hits += 1
                body = idp.jwks()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(str(pki.server_cert), str(pki.server_key))
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        idp.url = f"https://127.0.0.1:{httpd.server_address[1]}/jwks"
        # the same keys in clear text, where /moved points: a JWKS the server must never take
        clear = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        idp.clear_url = f"http://127.0.0.1:{clear.server_address[1]}/jwks"
        threads = [
            threading.Thread(target=h.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for h in (httpd, clear)
        ]
        for t in threads:
            t.start()
        try:
            yield idp
        finally:
            for h in (httpd, clear):
                h.shutdown()
                h.server_close()
            for t in threads:
                t.join(10)

    def settings(self, pki: support.TestPKI) -> dict[str, object]:
        """The ``[oauth]`` section that trusts this provider."""
        return {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": self.url,
            "jwks_ca_file": str(pki.ca_file),
        }


def claims(national_id: str, now: float, **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:" + national_id,
        "preferred_username": national_id,
        "iat": int(now),
        "exp": int(now) + 300,
    }
    out.update(over)
    return {k: v for k, v in out.items() if v is not None}


def token(key: SigningKey, payload: dict[str, Any], *, kid: str | None = None) -> str:
    return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})


def forged(header: dict[str, Any], payload: dict[str, Any], secret: bytes | None) -> str:
    """A JWT made by hand: unsigned (``secret`` None, for alg=none) or HMAC-SHA256 keyed with ``secret``."""
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    if secret is None:
        return signing_input + "."
    return signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())


def xoauth2(user: str, tok: str) -> bytes:
    return f"user={user}\x01auth=Bearer {tok}\x01\x01".encode()


def oauthbearer(user: str, tok: str) -> bytes:
    return f"n,a={user},\x01host=127.0.0.1\x01port=993\x01auth=Bearer {tok}\x01\x01".encode()


#: the RFC 7628 §3.2.2 error a refused token is answered with, before base64
ERROR_CHALLENGE = json.dumps(
    {"status": "invalid_token", "openid-configuration": ISSUER + "/.well-known/openid-configuration"},
    separators=(",", ":"),
).encode()
