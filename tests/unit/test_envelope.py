"""Envelope encryption: per-owner data keys wrapped by a KEK; every ciphertext bound to its place."""

import base64
import stat
from pathlib import Path

import pytest

from crypto.envelope import (
    DataKey,
    DecryptionFailed,
    Kek,
    KekFileError,
    KeyDestroyed,
    KeyNotFound,
    Keyring,
    load_keyring,
    pending_path,
    read_key_file,
    write_key_file,
)


def test_wrap_round_trip_and_owner_binding() -> None:
    ring = Keyring(Kek.generate())
    dk = DataKey.generate()
    wrapped = ring.wrap(dk, owner="account:1")
    assert ring.unwrap(wrapped, owner="account:1") == dk
    assert dk not in wrapped
    with pytest.raises(DecryptionFailed):
        ring.unwrap(wrapped, owner="account:2")  # a wrapped key copied to another account


def test_unwrap_needs_the_kek_that_wrapped() -> None:
    a, b = Kek.generate(), Kek.generate()
    wrapped = Keyring(a).wrap(DataKey.generate(), owner="account:1")
    with pytest.raises(KeyNotFound, match=a.kid.hex()):
        Keyring(b).unwrap(wrapped, owner="account:1")
    rewrapped = Keyring(b, [a]).rewrap(wrapped, owner="account:1")
    assert Keyring.wrapped_kid(rewrapped) == b.kid.hex()
    assert Keyring(b).unwrap(rewrapped, owner="account:1") == Keyring(a).unwrap(wrapped, owner="account:1")


def test_destroyed_key() -> None:
    with pytest.raises(KeyDestroyed):
        Keyring(Kek.generate()).unwrap(None, owner="account:1")


def test_sealed_object_is_bound_to_owner_object_and_purpose() -> None:
    raw = DataKey.generate()
    key = DataKey(raw, owner="account:1")
    sealed = key.seal(b"marker-123 bonjour", object_id="blob:a")
    assert b"marker-123" not in sealed
    assert key.open(sealed, object_id="blob:a") == b"marker-123 bonjour"
    with pytest.raises(DecryptionFailed):
        key.open(sealed, object_id="blob:b")  # moved to another row
    with pytest.raises(DecryptionFailed):
        key.open(sealed, object_id="blob:a", purpose="meta")  # moved to another column
    with pytest.raises(DecryptionFailed):
        DataKey(raw, owner="account:2").open(sealed, object_id="blob:a")  # same key bytes, other owner
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        key.open(tampered, object_id="blob:a")


def test_seal_is_randomised() -> None:
    key = DataKey(DataKey.generate(), owner="account:1")
    assert key.seal(b"x", object_id="o") != key.seal(b"x", object_id="o")


def test_key_file_is_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "kek.key"
    kek = Kek.generate()
    write_key_file(path, kek)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path).key == kek.key
    with pytest.raises(FileExistsError):
        write_key_file(path, Kek.generate())


def test_bad_key_material_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "kek.key"
    p.write_text("not base64 !!!")
    with pytest.raises(KekFileError, match="not base64"):
        read_key_file(p)
    p.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(KekFileError, match="32 bytes"):
        read_key_file(p)
    with pytest.raises(KekFileError, match="does not exist"):
        read_key_file(tmp_path / "absent.key")


def test_keyring_from_environment_wins(tmp_path: Path) -> None:
    kek = Kek.generate()
    ring = load_keyring(tmp_path / "absent.key", kek.to_text())
    assert ring.current.kid == kek.kid


def test_keyring_loads_an_interrupted_rotation(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    old, new = Kek.generate(), Kek.generate()
    write_key_file(path, old)
    write_key_file(pending_path(path), new)
    wrapped_new = Keyring(new).wrap(DataKey.generate(), owner="account:9")
    ring = load_keyring(path)
    assert ring.current.kid == old.kid
    assert len(ring.unwrap(wrapped_new, owner="account:9")) == 32


def test_a_body_sealed_in_one_buffer_keeps_the_format_and_old_bodies_still_open() -> None:
    """``seal`` writes magic, nonce, ciphertext and tag into one buffer it allocates once (issue 14 point 3): the
    stored format is the one of the earlier code, which concatenated them."""
    import os as _os

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from crypto.envelope import DataKey, _seal_aad

    raw_key = DataKey.generate()
    key = DataKey(raw_key, owner="account:1")
    plaintext = _os.urandom(3 * 2**20 + 7)
    sealed = key.seal(plaintext, object_id="blob:x")
    assert len(sealed) == 2 + 12 + len(plaintext) + 16 and sealed[:2] == b"S\x01"
    assert key.open(sealed, object_id="blob:x") == plaintext
    nonce = _os.urandom(12)  # as the earlier code sealed: encrypt, then concatenate
    earlier = b"S\x01" + nonce + AESGCM(raw_key).encrypt(nonce, plaintext, _seal_aad("account:1", "blob:x", "body"))
    assert key.open(earlier, object_id="blob:x") == plaintext
