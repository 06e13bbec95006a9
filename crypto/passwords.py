"""Password and app-password hashing with scrypt (memory-hard), from `cryptography`.

Stored form (self-describing, so parameters can be raised later and old hashes still verify):
    $scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, base64>$<hash, base64>
Verification is constant-time (``Scrypt.verify``); an unknown user is checked
against a dummy hash so that timing does not reveal which accounts exist.
"""

from __future__ import annotations

import base64
import binascii
import functools
import secrets

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

DEFAULT_LOG_N = 15  # N = 32768, r = 8: 32 MiB per hash
R = 8
P = 1
SALT_BYTES = 16
HASH_BYTES = 32


class PasswordHashError(ValueError):
    """A stored hash that this module cannot read."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode().rstrip("=")


def _unb64(s: str) -> bytes:
    return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)


def hash_password(password: str, *, log_n: int = DEFAULT_LOG_N) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = Scrypt(salt=salt, length=HASH_BYTES, n=2**log_n, r=R, p=P).derive(password.encode("utf-8"))
    return f"$scrypt$ln={log_n},r={R},p={P}${_b64(salt)}${_b64(digest)}"


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes]:
    try:
        empty, scheme, params, salt, digest = stored.split("$")
        if empty or scheme != "scrypt":
            raise ValueError
        p = dict(kv.split("=", 1) for kv in params.split(","))
        return int(p["ln"]), int(p["r"]), int(p["p"]), _unb64(salt), _unb64(digest)
    except (ValueError, KeyError, binascii.Error):
        raise PasswordHashError("not a $scrypt$ password hash") from None


def verify_password(password: str, stored: str | None) -> bool:
    """True if ``password`` matches ``stored``; a missing hash costs the same time and fails."""
    known = stored is not None
    log_n, r, p, salt, digest = _parse(stored if stored is not None else _dummy_hash())
    try:
        Scrypt(salt=salt, length=len(digest), n=2**log_n, r=r, p=p).verify(password.encode("utf-8"), digest)
    except InvalidKey:
        return False
    return known


def needs_rehash(stored: str, *, log_n: int = DEFAULT_LOG_N) -> bool:
    return _parse(stored)[0] < log_n


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))
