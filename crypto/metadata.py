"""Metadata at rest that is health data by itself: lookups by keyed digest, contents sealed.

Who writes to whom is health data: a patient's conversation grant names the
professional treating them. Such a row keeps no readable address:

- a *digest* (HMAC-SHA256 under a key derived for lookups, label
  ``masante/metadata-digest/v1``) of what the row is looked up by, so equality
  lookups and unique constraints still work in SQL, and a copy of the database
  does not let anyone test a guessed address offline;
- a *sealed* copy (AES-256-GCM under a key derived for sealing, label
  ``masante/metadata-seal/v1``, bound to its digest and its kind) of what must
  be read back, e.g. the list of a patient's contacts;
- a *fixed seal* (``seal_fixed``) where the sealed value itself must be compared
  in SQL (an IMAP keyword in a message's flags): deterministic, the nonce being
  a keyed digest (label ``masante/metadata-siv/v1``) of the plaintext, its kind
  and binding (the SIV construction), so equal values seal equal and nothing
  but that equality shows; opening checks the nonce again.

Both keys derive from the credential key (``crypto.credentials``), which is
kept beside the KEK, never in the database. The parts of a digest are joined
with NUL, which no address holds, so ``("a", "bc")`` and ``("ab", "c")`` differ.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.credentials import CredentialKey
from crypto.envelope import DecryptionFailed

_DIGEST_LABEL = b"masante/metadata-digest/v1"
_SEAL_LABEL = b"masante/metadata-seal/v1"
_SIV_LABEL = b"masante/metadata-siv/v1"
_MAGIC = b"M1"
_NONCE = 12
DIGEST_BYTES = 32


class MetadataKey:
    """Digests and seals one kind of metadata (``kind`` keeps the kinds apart: a grant's digest is no name's)."""

    __slots__ = ("_aead", "_digest_key", "_siv_key")

    def __init__(self, credential_key: CredentialKey) -> None:
        self._digest_key = hmac.new(credential_key.key, _DIGEST_LABEL, hashlib.sha256).digest()
        self._siv_key = hmac.new(credential_key.key, _SIV_LABEL, hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(credential_key.key, _SEAL_LABEL, hashlib.sha256).digest())

    def __repr__(self) -> str:
        return "MetadataKey(...)"

    def digest(self, kind: str, *parts: str) -> bytes:
        text = "\0".join((kind, *parts)).encode()
        return hmac.new(self._digest_key, text, hashlib.sha256).digest()

    def seal(self, plaintext: bytes, *, kind: str, bound_to: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _MAGIC + nonce + self._aead.encrypt(nonce, plaintext, kind.encode() + b"\0" + bound_to)

    def open(self, sealed: bytes, *, kind: str, bound_to: bytes) -> bytes:
        if len(sealed) < 2 + _NONCE + 16 or sealed[:2] != _MAGIC:
            raise DecryptionFailed(f"a {kind} row is not sealed metadata")
        try:
            return self._aead.decrypt(sealed[2 : 2 + _NONCE], sealed[2 + _NONCE :], kind.encode() + b"\0" + bound_to)
        except InvalidTag:
            raise DecryptionFailed(f"a {kind} row does not open under this credential key") from None

    def seal_fixed(self, plaintext: bytes, *, kind: str, bound_to: bytes) -> bytes:
        """``plaintext`` sealed the same way every time (for these ``kind`` and ``bound_to``): nonce and ciphertext."""
        aad = kind.encode() + b"\0" + bound_to
        nonce = self._synthetic_nonce(plaintext, aad)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open_fixed(self, sealed: bytes, *, kind: str, bound_to: bytes) -> bytes:
        aad = kind.encode() + b"\0" + bound_to
        if len(sealed) < _NONCE + 16:
            raise DecryptionFailed(f"a {kind} value is not sealed metadata")
        try:
            plaintext = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], aad)
        except InvalidTag:
            raise DecryptionFailed(f"a {kind} value does not open under this credential key") from None
        if not hmac.compare_digest(self._synthetic_nonce(plaintext, aad), sealed[:_NONCE]):
            raise DecryptionFailed(f"a {kind} value was not sealed by seal_fixed")
        return plaintext

    def _synthetic_nonce(self, plaintext: bytes, aad: bytes) -> bytes:
        framed = len(aad).to_bytes(4, "big") + aad + plaintext
        return hmac.new(self._siv_key, framed, hashlib.sha256).digest()[:_NONCE]
