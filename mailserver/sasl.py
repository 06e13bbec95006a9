"""SASL PLAIN (RFC 4616), decoded once for every protocol: IMAP AUTHENTICATE and SMTP AUTH.

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
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

#: RFC 4616 §2: ``authzid = 1*SAFE``, ``authcid = 1*SAFE``, ``passwd = 1*SAFE``, each at most 255 octets
MAX_FIELD = 255
#: The most a PLAIN response can hold: three full fields and the two NULs
MAX_MESSAGE = 3 * MAX_FIELD + 2


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


def decode_base64(text: str | bytes) -> bytes:
    """The octets of a SASL response as sent on the wire; ``=`` (or nothing) is empty. Raises NotBase64."""
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    raw = raw.strip()
    if raw in (b"", b"="):
        return b""
    if len(raw) > 4 * ((MAX_MESSAGE + 2) // 3):
        raise NotBase64("The response is too long for PLAIN")
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
