"""The audit key: what makes the audit chain and its anchors unforgeable by whoever can write the database.

Invariants:
- One 256-bit secret, kept beside the KEK (``[audit] key_file``, 0600, or
  ``MASANTE_AUDIT_KEY`` in base64), never in the database: an attacker who can
  rewrite rows cannot recompute their MACs.
- Two keys are derived from it, one per purpose (RFC 2104 HMAC-SHA256 as the
  PRF, a fixed label each), so a chain link can never be replayed as an anchor
  signature or the reverse.
- Generated once by ``masante-admin init``; a missing file is an error, never a
  silent new key (a new key would make every keyed entry look altered).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from crypto.envelope import KekFileError, key_from_text, key_to_text, write_new_secret

AUDIT_KEY_BYTES = 32
_CHAIN_LABEL = b"masante/audit-chain/v1"
_ANCHOR_LABEL = b"masante/audit-anchor/v1"
_ID_LABEL = b"masante/audit-key-id\x00"


@dataclass(frozen=True, slots=True)
class AuditKey:
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != AUDIT_KEY_BYTES:
            raise KekFileError(f"an audit key has {AUDIT_KEY_BYTES} bytes, this one has {len(self.key)}")

    @classmethod
    def generate(cls) -> AuditKey:
        return cls(secrets.token_bytes(AUDIT_KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, origin: str) -> AuditKey:
        return key_from_text(cls, text, origin=origin)

    def to_text(self) -> str:
        return key_to_text(self.key)

    @property
    def kid(self) -> str:
        """A public identifier of the key (16 hex digits), to tell keys apart in messages."""
        return hashlib.sha256(_ID_LABEL + self.key).hexdigest()[:16]

    @property
    def chain_key(self) -> bytes:
        """The key of the chain's links (HMAC-SHA256 over previous hash and entry)."""
        return hmac.new(self.key, _CHAIN_LABEL, hashlib.sha256).digest()

    @property
    def anchor_key(self) -> bytes:
        """The key that signs the checkpoints written outside the database."""
        return hmac.new(self.key, _ANCHOR_LABEL, hashlib.sha256).digest()


def write_audit_key_file(path: Path, key: AuditKey) -> None:
    """Write the audit key readable by its owner only (0600), never over an existing file, whole or not at all."""
    write_new_secret(path, key.to_text())


def load_audit_key(path: Path, env_value: str | None = None) -> AuditKey:
    """The audit key from ``MASANTE_AUDIT_KEY`` (base64) if given, else from its file."""
    if env_value:
        return AuditKey.from_text(env_value, origin="MASANTE_AUDIT_KEY")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KekFileError(f"audit key file {path} does not exist (run `masante-admin init`)") from None
    except OSError as exc:
        raise KekFileError(f"audit key file {path} cannot be read: {exc.strerror}") from None
    return AuditKey.from_text(text, origin=str(path))
