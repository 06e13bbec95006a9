"""SASL PLAIN (RFC 4616), XOAUTH2, OAUTHBEARER (RFC 7628) and EXTERNAL (RFC 4422 appendix A), decoded once
for every protocol: IMAP AUTHENTICATE and SMTP AUTH.

Invariants:
- Pure: bytes or base64 text in, ``PlainCredentials`` out, or a ``SaslError``
  subclass saying why not. No I/O, no protocol framing (the caller reads the
  response line, answers ``+``/``334`` and turns an error into BAD/501/535).
- The message is ``[authzid] NUL authcid NUL passwd`` (RFC 4616 §2): exactly two
  NULs, each field UTF-8 without NUL, authcid and passwd of 1 to 255 octets,
  authzid of at most 255 octets (empty: act as the authcid).
- ``PlainCredentials.__repr__`` never shows the password.
- The base64 of an initial response is strict (RFC 4648 §4 alphabet, padding);
  ``=`` alone is an empty response (RFC 4954 §4, RFC 4959 §3).
- Bearer messages (XOAUTH2, OAUTHBEARER) are bounded by ``MAX_BEARER`` octets;
  ``BearerCredentials.__repr__`` never shows the token. Only the ``Bearer``
  scheme is read; OAUTHBEARER's channel binding (``p=``) is refused (we offer
  no ``-PLUS`` mechanism), ``y`` and ``n`` are accepted.
- A failed bearer login answers the RFC 7628 §3.2.2 JSON error
  (``bearer_error``) as a challenge; the client's answer to it (``%x01``, or an
  empty line from XOAUTH2 clients) is read and ignored, then the failure is
  sent (``NO [AUTHENTICATIONFAILED]``, ``535 5.7.8``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass

#: RFC 4616 §2: ``authzid = 1*SAFE``, ``authcid = 1*SAFE``, ``passwd = 1*SAFE``, each at most 255 octets
MAX_FIELD = 255
#: The most a PLAIN response can hold: three full fields and the two NULs
MAX_MESSAGE = 3 * MAX_FIELD + 2
#: The most a bearer message (XOAUTH2, OAUTHBEARER) can hold: a JWT of a few kilobytes and its framing
MAX_BEARER = 8192
#: The most an EXTERNAL response (an authorisation identity) can hold
MAX_EXTERNAL = 320


class SaslError(ValueError):
    """A SASL response that cannot be used; ``text`` is a sentence for the client."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NotBase64(SaslError):
    """The response is not strict base64 (RFC 4648 §4)."""


class MalformedPlain(SaslError):
    """The decoded response is not ``[authzid] NUL authcid NUL passwd`` within its bounds."""


@dataclass(frozen=True, slots=True)
class PlainCredentials:
    """One PLAIN response: who acts (``authzid``, empty for "myself"), who logs in, and the secret."""

    authzid: str
    authcid: str
    password: str

    def __repr__(self) -> str:
        return f"PlainCredentials(authzid={self.authzid!r}, authcid={self.authcid!r}, password='***')"

    @property
    def acts_as_another(self) -> bool:
        """An authzid that names someone other than the authcid (we never allow proxy authorisation)."""
        return bool(self.authzid) and self.authzid != self.authcid


def decode_base64(text: str | bytes, *, limit: int = MAX_MESSAGE, what: str = "PLAIN") -> bytes:
    """The octets of a SASL response as sent on the wire; ``=`` (or nothing) is empty. Raises NotBase64."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    if raw in (b"", b"="):
        return b""
    if len(raw) > 4 * ((limit + 2) // 3):
        raise NotBase64(f"The response is too long for {what}")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise NotBase64("The response is not base64") from None


def _field(data: bytes, what: str, *, required: bool) -> str:
    if required and not data:
        raise MalformedPlain(f"The {what} is empty")
    if len(data) > MAX_FIELD:
        raise MalformedPlain(f"The {what} is longer than {MAX_FIELD} octets")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedPlain(f"The {what} is not UTF-8") from None


def parse_plain(message: bytes) -> PlainCredentials:
    """RFC 4616 §2 ``message = [authzid] UTF8NUL authcid UTF8NUL passwd``. Raises MalformedPlain."""
    if len(message) > MAX_MESSAGE:
        raise MalformedPlain("The PLAIN response is too long")
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise MalformedPlain("PLAIN expects authzid NUL user NUL password")
    authzid, authcid, passwd = parts
    return PlainCredentials(
        _field(authzid, "authorisation identity", required=False),
        _field(authcid, "user name", required=True),
        _field(passwd, "password", required=True),
    )


def decode_plain(text: str | bytes) -> PlainCredentials:
    """A base64 PLAIN response (IMAP AUTHENTICATE, SMTP AUTH initial response) to credentials."""
    return parse_plain(decode_base64(text))


# --- bearer tokens: XOAUTH2 and OAUTHBEARER (RFC 7628) -------------------------------------------------------------


class MalformedBearer(SaslError):
    """The decoded response is not an XOAUTH2 or OAUTHBEARER message."""


@dataclass(frozen=True, slots=True)
class BearerCredentials:
    """One bearer response: the mailbox asked for (``authzid``, empty if none was named) and the token."""

    authzid: str
    token: str

    def __repr__(self) -> str:
        return f"BearerCredentials(authzid={self.authzid!r}, token='***')"


#: RFC 6750 §2.1 ``b64token``: the characters a bearer token may hold
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*\Z")


def _token(auth: str) -> str:
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise MalformedBearer("Only auth=Bearer <token> is accepted")
    token = token.strip(" ")
    if not _B64TOKEN.match(token):
        raise MalformedBearer("The bearer token holds characters a token cannot (RFC 6750)")
    return token


def _text(data: bytes) -> str:
    if len(data) > MAX_BEARER:
        raise MalformedBearer("The bearer message is too long")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedBearer("The bearer message is not UTF-8") from None


def _pairs(fields: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for f in fields:
        key, eq, value = f.partition("=")
        if not eq or not key:
            raise MalformedBearer("Expected key=value fields separated by ^A")
        out.setdefault(key.lower() if key.lower() == "auth" else key, value)
    return out


def parse_xoauth2(message: bytes) -> BearerCredentials:
    """Google's XOAUTH2: ``user=<address>^Aauth=Bearer <token>^A^A``. Raises MalformedBearer."""
    text = _text(message)
    if not text.endswith("\x01\x01"):
        raise MalformedBearer("XOAUTH2 expects user=...^Aauth=Bearer ...^A^A")
    fields = _pairs(text[:-2].split("\x01"))
    if "user" not in fields or "auth" not in fields:
        raise MalformedBearer("XOAUTH2 expects user=...^Aauth=Bearer ...^A^A")
    return BearerCredentials(fields["user"], _token(fields["auth"]))


def _saslname(value: str) -> str:
    """RFC 5801 §4 ``saslname``: ``=2C`` is a comma, ``=3D`` an equals sign; nothing else may follow ``=``."""
    if re.search(r"=(?!2C|3D)", value):
        raise MalformedBearer("The authorisation identity has a bad escape (=2C or =3D only)")
    return value.replace("=2C", ",").replace("=3D", "=")


def parse_oauthbearer(message: bytes) -> BearerCredentials:
    """RFC 7628 §3.1: ``gs2-header ^A *(key=value ^A) ^A`` with ``gs2-header = (n|y) , [a=authzid] ,``."""
    text = _text(message)
    header, sep, rest = text.partition("\x01")
    parts = header.split(",")
    if not sep or len(parts) != 3 or parts[2] != "" or not rest.endswith("\x01"):
        raise MalformedBearer("OAUTHBEARER expects n,a=<address>,^Aauth=Bearer <token>^A^A")
    flag, authz = parts[0], parts[1]
    if flag.startswith("p="):
        raise MalformedBearer("Channel binding is not offered here")
    if flag not in ("n", "y"):
        raise MalformedBearer("OAUTHBEARER's GS2 header starts with n or y")
    if authz and not authz.startswith("a="):
        raise MalformedBearer("OAUTHBEARER's authorisation identity is a=<address>")
    kvs = rest[:-1].split("\x01")
    if not kvs or kvs[-1] != "":
        raise MalformedBearer("OAUTHBEARER expects its key=value fields to end with ^A^A")
    fields = _pairs(kvs[:-1])
    if "auth" not in fields:
        raise MalformedBearer("OAUTHBEARER expects auth=Bearer <token>")
    return BearerCredentials(_saslname(authz[2:]) if authz else "", _token(fields["auth"]))


def decode_bearer(mechanism: str, text: str | bytes) -> BearerCredentials:
    """A base64 XOAUTH2 or OAUTHBEARER response to credentials. Raises a SaslError."""
    data = decode_base64(text, limit=MAX_BEARER, what=mechanism)
    return parse_xoauth2(data) if mechanism == "XOAUTH2" else parse_oauthbearer(data)


def bearer_error(*, openid_configuration: str | None = None, scope: str | None = None) -> bytes:
    """The RFC 7628 §3.2.2 error challenge (JSON, before base64): ``{"status":"invalid_token",...}``."""
    body: dict[str, str] = {"status": "invalid_token"}
    if scope:
        body["scope"] = scope
    if openid_configuration:
        body["openid-configuration"] = openid_configuration
    return json.dumps(body, separators=(",", ":")).encode()


#: RFC 7628 §3.2.3: what the client sends back after an error challenge
BEARER_ERROR_ACK = b"\x01"


# --- EXTERNAL (RFC 4422 appendix A) ------------------------------------------------------------------------------


def decode_external(text: str | bytes) -> str:
    """EXTERNAL's only field, the authorisation identity (empty: the account the certificate is bound to)."""
    data = decode_base64(text, limit=MAX_EXTERNAL, what="EXTERNAL")
    if b"\x00" in data:
        raise MalformedPlain("The authorisation identity holds a NUL")
    return _field(data, "authorisation identity", required=False)
