"""The credential key: app passwords and one-time codes kept as keyed hashes, so they verify in microseconds.

Invariants:
- One 256-bit secret, kept beside the KEK (``[keys] credential_key_file``,
  0600, or ``MASANTE_CREDENTIAL_KEY`` in base64), never in the database: a copy
  of the database does not let anyone test guesses offline.
- An app password is 160 random bits (``secrets``), shown as 32 lower-case
  base32 letters in four groups; what is stored is HMAC-SHA256 under a key
  derived for that purpose (label ``masante/app-password/v1``). A one-time code
  is hashed under another derived key, bound to its enrolment id, so a code's
  hash cannot be replayed as another's.
- Created on first use (linked into place, so two processes agree on one key): a key lost
  makes every app password fail closed, it never opens anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from crypto.envelope import KekFileError, key_from_text, key_to_text

CREDENTIAL_KEY_BYTES = 32
APP_PASSWORD_BYTES = 20  # 160 bits
_APP_LABEL = b"masante/app-password/v1"
_CODE_LABEL = b"masante/one-time-code/v1"
_SHAPE = re.compile(r"^[a-z2-7]{32}$")


@dataclass(frozen=True, slots=True)
class CredentialKey:
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != CREDENTIAL_KEY_BYTES:
            raise KekFileError(f"a credential key has {CREDENTIAL_KEY_BYTES} bytes, this one has {len(self.key)}")

    @classmethod
    def generate(cls) -> CredentialKey:
        return cls(secrets.token_bytes(CREDENTIAL_KEY_BYTES))

    def _derived(self, label: bytes) -> bytes:
        return hmac.new(self.key, label, hashlib.sha256).digest()

    def app_password_digest(self, password: str) -> bytes:
        """The stored form of an app password (its normalised letters under the derived key)."""
        return hmac.new(self._derived(_APP_LABEL), normalize_app_password(password).encode(), hashlib.sha256).digest()

    def code_digest(self, binding: str, code: str) -> bytes:
        """The stored form of a one-time code, bound to ``binding`` (an enrolment's id)."""
        return hmac.new(self._derived(_CODE_LABEL), f"{binding}\0{code}".encode(), hashlib.sha256).digest()


def new_app_password() -> str:
    """160 random bits as ``abcd...-....-....-....`` (four groups of eight base32 letters)."""
    letters = base64.b32encode(secrets.token_bytes(APP_PASSWORD_BYTES)).decode("ascii").lower()
    return "-".join(letters[i : i + 8] for i in range(0, 32, 8))


def normalize_app_password(text: str) -> str:
    """What a person types, without the dashes and spaces, lower-case."""
    return text.replace("-", "").replace(" ", "").lower()


def looks_like_app_password(text: str) -> bool:
    return bool(_SHAPE.match(normalize_app_password(text)))


def new_code(digits: int = 6) -> str:
    return f"{secrets.randbelow(10**digits):0{digits}d}"


def load_or_create_credential_key(path: Path, env_value: str | None = None) -> CredentialKey:
    """The key from ``MASANTE_CREDENTIAL_KEY`` if given, else from its file, created (0600) if missing."""
    if env_value:
        return key_from_text(CredentialKey, env_value, origin="MASANTE_CREDENTIAL_KEY")
    try:
        return key_from_text(CredentialKey, path.read_text(encoding="ascii"), origin=str(path))
    except FileNotFoundError:
        pass
    key = CredentialKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key_to_text(key.key))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # atomic and never over an existing key: complete or absent for every reader
    except FileExistsError:  # another process made it meanwhile: use theirs
        return key_from_text(CredentialKey, path.read_text(encoding="ascii"), origin=str(path))
    finally:
        tmp.unlink()
    return key
