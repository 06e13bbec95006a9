"""Envelope encryption at rest (AES-256-GCM).

Invariants:
- Every owner (an account, a queued message) has its own 256-bit data key. Data
  keys are stored only wrapped by a key-encryption key (KEK); a KEK never touches
  the database.
- A wrapped key names the KEK that wrapped it (``kid``) and is bound, as GCM
  associated data, to its owner id: a wrapped key copied onto another account
  does not unwrap.
- A sealed object (a message body, its derived metadata) is bound, as associated
  data, to its owner and to its own object id and purpose: a ciphertext moved
  to another row, another account or another column does not decrypt.
- Destroying a data key (crypto-shredding) is the only way to make data
  unreadable, and it is final.

Formats (version byte first so that a future format can coexist):
    wrapped key  = b"K" 0x01 | kid (8 bytes) | nonce (12) | AES-GCM(data key) (32 + 16)
    sealed object = b"S" 0x01 | nonce (12) | AES-GCM(plaintext) (n + 16)
(``seal`` writes a sealed object into one buffer it allocates once: the format is unchanged.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KID_BYTES = 8
_WRAP_MAGIC = b"K\x01"
_SEAL_MAGIC = b"S\x01"


class CryptoError(Exception):
    """Base class: something about keys or ciphertext is wrong."""


class KeyNotFound(CryptoError):
    """The wrapped key names a KEK this keyring does not hold."""


class DecryptionFailed(CryptoError):
    """The ciphertext, its associated data or the key does not match."""


class KeyDestroyed(CryptoError):
    """The owner's data key was destroyed (crypto-shredding): the data is gone."""


class KekFileError(CryptoError):
    """The key file is missing, unreadable or malformed."""


def kid_of(key: bytes) -> bytes:
    """A KEK's public identifier: the first 8 bytes of SHA-256 over a fixed label and the key."""
    return hashlib.sha256(b"masante/kek-id\x00" + key).digest()[:KID_BYTES]


K = TypeVar("K")


def key_from_text(make: Callable[[bytes], K], text: str, *, origin: str) -> K:
    """A key as kept in a key file or variable, base64 on one line, built by ``make`` (which checks its
    length); ``KekFileError`` naming ``origin`` when it is not one."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KekFileError(f"{origin}: not base64 ({exc})") from None
    try:
        return make(raw)
    except KekFileError as exc:
        raise KekFileError(f"{origin}: {exc}") from None


def key_to_text(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii") + "\n"


@dataclass(frozen=True, slots=True)
class Kek:
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_BYTES:
            raise KekFileError(f"a key-encryption key has {KEY_BYTES} bytes, this one has {len(self.key)}")

    @property
    def kid(self) -> bytes:
        return kid_of(self.key)

    @classmethod
    def generate(cls) -> Kek:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str, *, origin: str) -> Kek:
        return key_from_text(cls, text, origin=origin)

    def to_text(self) -> str:
        return key_to_text(self.key)


def _wrap_aad(owner: str) -> bytes:
    return b"masante/account-key/v1\x00" + owner.encode("utf-8")


def _seal_aad(owner: str, object_id: str, purpose: str) -> bytes:
    return b"masante/" + purpose.encode() + b"/v1\x00" + owner.encode() + b"\x00" + object_id.encode()


class Keyring:
    """The KEKs this process holds: one current (used to wrap), others only to unwrap.

    Several KEKs are held during and after an interrupted rotation; each wrapped
    key names its KEK, so reading never guesses.
    """

    def __init__(self, current: Kek, others: Iterable[Kek] = ()) -> None:
        self.current = current
        self._by_kid = {k.kid: k for k in (*others, current)}

    @property
    def kids(self) -> list[str]:
        return sorted(k.hex() for k in self._by_kid)

    def wrap(self, data_key: bytes, *, owner: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        ct = AESGCM(self.current.key).encrypt(nonce, data_key, _wrap_aad(owner))
        return _WRAP_MAGIC + self.current.kid + nonce + ct

    def unwrap(self, wrapped: bytes | None, *, owner: str) -> bytes:
        if wrapped is None:
            raise KeyDestroyed(f"the data key of {owner} was destroyed")
        if len(wrapped) != 2 + KID_BYTES + NONCE_BYTES + KEY_BYTES + 16 or wrapped[:2] != _WRAP_MAGIC:
            raise DecryptionFailed(f"the wrapped key of {owner} is malformed")
        kid = wrapped[2 : 2 + KID_BYTES]
        kek = self._by_kid.get(kid)
        if kek is None:
            raise KeyNotFound(f"the key of {owner} is wrapped by KEK {kid.hex()}, which is not loaded")
        nonce = wrapped[2 + KID_BYTES : 2 + KID_BYTES + NONCE_BYTES]
        try:
            return AESGCM(kek.key).decrypt(nonce, wrapped[2 + KID_BYTES + NONCE_BYTES :], _wrap_aad(owner))
        except InvalidTag:
            raise DecryptionFailed(f"the wrapped key does not belong to {owner}") from None

    def rewrap(self, wrapped: bytes, *, owner: str) -> bytes:
        """The same data key, wrapped under the current KEK (rotation: bodies stay as they are)."""
        return self.wrap(self.unwrap(wrapped, owner=owner), owner=owner)

    @staticmethod
    def wrapped_kid(wrapped: bytes) -> str:
        return wrapped[2 : 2 + KID_BYTES].hex()


class DataKey:
    """One owner's data key, unwrapped: seals and opens that owner's objects."""

    __slots__ = ("_aead", "owner")

    def __init__(self, key: bytes, *, owner: str) -> None:
        if len(key) != KEY_BYTES:
            raise CryptoError("a data key has 32 bytes")
        self._aead = AESGCM(key)
        self.owner = owner

    def __repr__(self) -> str:
        return f"DataKey(owner={self.owner!r})"

    @staticmethod
    def generate() -> bytes:
        return secrets.token_bytes(KEY_BYTES)

    def seal(self, plaintext: bytes, *, object_id: str, purpose: str = "body") -> bytearray:
        """The sealed object, written once into one buffer (no concatenation: a 49 MB body is one copy, not
        two; ``bytes(...)`` over it would be a second). A ``bytearray``, typed so: read like bytes and taken
        as bytes by both database drivers (buffer protocol), but mutable and not hashable, so a caller that
        keys on it or keeps it past the row converts it itself."""
        nonce = os.urandom(NONCE_BYTES)
        head = len(_SEAL_MAGIC) + NONCE_BYTES
        out = bytearray(head + len(plaintext) + TAG_BYTES)
        out[:head] = _SEAL_MAGIC + nonce
        self._aead.encrypt_into(nonce, plaintext, _seal_aad(self.owner, object_id, purpose), memoryview(out)[head:])
        return out

    def open(self, sealed: bytes, *, object_id: str, purpose: str = "body") -> bytes:
        if len(sealed) < 2 + NONCE_BYTES + 16 or sealed[:2] != _SEAL_MAGIC:
            raise DecryptionFailed(f"object {object_id} of {self.owner} is not a sealed object")
        nonce = bytes(sealed[2 : 2 + NONCE_BYTES])
        body = memoryview(sealed)[2 + NONCE_BYTES :]  # not a slice: a large body is not copied before it is opened
        try:
            return self._aead.decrypt(nonce, body, _seal_aad(self.owner, object_id, purpose))
        except InvalidTag:
            raise DecryptionFailed(f"object {object_id} does not decrypt as {purpose} of {self.owner}") from None


# --- key files -----------------------------------------------------------------------------------------


def write_new_secret(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, readable by its owner only (0600), fsync'd, never over an existing file
    (``FileExistsError``). Whole or absent whatever happens: written under a temporary name beside it, then
    linked into place, so that a process killed while writing leaves no empty or partial key behind."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_key_file(path: Path, kek: Kek) -> None:
    """Write a KEK file readable by its owner only (0600), never over an existing file, whole or not at all."""
    write_new_secret(path, kek.to_text())


def read_key_file(path: Path) -> Kek:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KekFileError(f"key file {path} does not exist (run `masante-admin init`)") from None
    except OSError as exc:
        raise KekFileError(f"key file {path} cannot be read: {exc.strerror}") from None
    return Kek.from_text(text, origin=str(path))


def pending_path(kek_file: Path) -> Path:
    """Where a rotation puts the next KEK until every wrapped key uses it."""
    return kek_file.with_name(kek_file.name + ".next")


def load_keyring(kek_file: Path, env_value: str | None = None) -> Keyring:
    """The keyring from ``MASANTE_KEK`` (base64) if given, else from the key file.

    A ``<file>.next`` left by an interrupted rotation is loaded too, so that keys
    already rewrapped under it still open.
    """
    if env_value:
        return Keyring(Kek.from_text(env_value, origin="MASANTE_KEK"))
    current = read_key_file(kek_file)
    nxt = pending_path(kek_file)
    others = [read_key_file(nxt)] if nxt.exists() else []
    return Keyring(current, others)
