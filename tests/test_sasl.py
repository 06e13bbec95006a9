"""SASL PLAIN (RFC 4616) alone: one decoder for IMAP AUTHENTICATE and SMTP AUTH (mailserver.sasl)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver import sasl


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_plain_with_and_without_authzid() -> None:
    creds = sasl.decode_plain(b64(b"\0joe@example.org\0s3cret"))
    assert creds == sasl.PlainCredentials("", "joe@example.org", "s3cret")
    assert not creds.acts_as_another
    assert "s3cret" not in repr(creds)
    assert not sasl.decode_plain(b64(b"joe@example.org\0joe@example.org\0pw")).acts_as_another
    assert sasl.decode_plain(b64(b"boss@example.org\0joe@example.org\0pw")).acts_as_another


def test_utf8_fields_are_kept() -> None:
    creds = sasl.parse_plain("\0élodie@exemple.fr\0mot de passe é".encode())
    assert creds.authcid == "élodie@exemple.fr" and creds.password == "mot de passe é"


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"joe\0pw", "authzid NUL user NUL password"),
        (b"\0joe\0pw\0more", "authzid NUL user NUL password"),
        (b"\0\0pw", "user name is empty"),
        (b"\0joe\0", "password is empty"),
        (b"\0jo\xffe\0pw", "user name is not UTF-8"),
        (b"\0joe\0\xc3", "password is not UTF-8"),
        (b"\0" + b"j" * 256 + b"\0pw", "longer than 255"),
        (b"z" * 256 + b"\0joe\0pw", "authorisation identity is longer"),
        (b"\0joe\0" + b"p" * 800, "too long"),
    ],
)
def test_malformed_plain_is_refused_with_a_reason(message: bytes, why: str) -> None:
    with pytest.raises(sasl.MalformedPlain, match=why):
        sasl.parse_plain(message)


def test_bounds_are_inclusive() -> None:
    creds = sasl.parse_plain(b"a" * 255 + b"\0" + b"u" * 255 + b"\0" + b"p" * 255)
    assert len(creds.authcid) == len(creds.password) == 255


def test_base64_is_strict_and_equals_is_empty() -> None:
    assert sasl.decode_base64("=") == b"" and sasl.decode_base64("") == b""
    assert sasl.decode_base64(b"  AGpvZQBwdw==\r\n") == b"\0joe\0pw"
    for text in ("####", "AGpvZQBwdw", "AGpv ZQBwdw==", "é"):
        with pytest.raises(sasl.NotBase64):
            sasl.decode_base64(text)
    with pytest.raises(sasl.NotBase64, match="too long"):
        sasl.decode_base64("A" * 5000)
    with pytest.raises(sasl.MalformedPlain):
        sasl.decode_plain("=")  # an empty response is not a PLAIN message


@given(st.binary(max_size=1200))
def test_any_bytes_decode_or_raise_a_sasl_error(data: bytes) -> None:
    for attempt in (
        lambda: sasl.parse_plain(data),
        lambda: sasl.decode_plain(data),
        lambda: sasl.decode_plain(b64(data)),
    ):
        try:
            creds = attempt()
        except sasl.SaslError as exc:
            assert exc.text
        else:
            assert 0 < len(creds.authcid.encode()) <= sasl.MAX_FIELD
            assert 0 < len(creds.password.encode()) <= sasl.MAX_FIELD


@given(
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=60),
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=60),
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=60),
)
def test_round_trip(authzid: str, authcid: str, password: str) -> None:
    raw = f"{authzid}\0{authcid}\0{password}".encode()
    assert sasl.decode_plain(b64(raw)) == sasl.PlainCredentials(authzid, authcid, password)
