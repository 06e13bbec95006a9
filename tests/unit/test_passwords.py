"""Password hashing: scrypt, self-describing, constant-time verification."""

import pytest

from crypto.passwords import PasswordHashError, hash_password, needs_rehash, verify_password


def test_hash_and_verify() -> None:
    h = hash_password("s3cret-é", log_n=12)
    assert h.startswith("$scrypt$ln=12,r=8,p=1$")
    assert "s3cret" not in h
    assert verify_password("s3cret-é", h)
    assert not verify_password("s3cret-e", h)
    assert hash_password("s3cret-é", log_n=12) != h  # salted


def test_missing_hash_never_verifies() -> None:
    assert not verify_password("anything", None)


def test_rehash_when_parameters_are_weaker() -> None:
    assert needs_rehash(hash_password("x", log_n=12), log_n=15)
    assert not needs_rehash(hash_password("x", log_n=12), log_n=12)


@pytest.mark.parametrize("bad", ["", "plain", "$bcrypt$x$y$z", "$scrypt$ln=x$a$b"])
def test_malformed_hash(bad: str) -> None:
    with pytest.raises(PasswordHashError):
        verify_password("x", bad)
