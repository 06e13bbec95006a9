"""``MetadataKey.seal_fixed``: a keyword seals the same every time for one account, apart for two, and opens
only as sealed (``mailserver.flags`` compares these tokens in SQL)."""

from __future__ import annotations

import pytest

from crypto.credentials import CredentialKey
from crypto.envelope import DecryptionFailed
from crypto.metadata import MetadataKey
from mailserver.flags import FlagCodec, open_keyword, seal_keyword


def test_a_fixed_seal_is_equal_for_one_binding_and_apart_for_another() -> None:
    key = MetadataKey(CredentialKey.generate())
    one = key.seal_fixed(b"Diabete", kind="keyword", bound_to=b"1")
    assert one == key.seal_fixed(b"Diabete", kind="keyword", bound_to=b"1")
    assert one != key.seal_fixed(b"Diabete", kind="keyword", bound_to=b"2")
    assert one != key.seal_fixed(b"diabete", kind="keyword", bound_to=b"1")
    assert b"Diabete" not in one
    assert key.open_fixed(one, kind="keyword", bound_to=b"1") == b"Diabete"
    for wrong in ({"kind": "mailbox", "bound_to": b"1"}, {"kind": "keyword", "bound_to": b"2"}):
        with pytest.raises(DecryptionFailed):
            key.open_fixed(one, **wrong)  # type: ignore[arg-type]
    with pytest.raises(DecryptionFailed):
        MetadataKey(CredentialKey.generate()).open_fixed(one, kind="keyword", bound_to=b"1")
    with pytest.raises(DecryptionFailed):
        key.open_fixed(one[:-1] + bytes([one[-1] ^ 1]), kind="keyword", bound_to=b"1")


def test_the_codec_seals_keywords_only_and_reads_back_what_it_wrote() -> None:
    key = MetadataKey(CredentialKey.generate())
    codec = FlagCodec(lambda: key, 7)
    stored = codec.encode(["\\Seen", "$MDNSent", "$Label1", "Diabete", "Diabete"])
    words = stored.split()
    assert words == sorted(words) and len(words) == 4
    assert {"\\Seen", "$MDNSent"} <= set(words) and "Diabete" not in stored and "Label1" not in stored
    assert codec.decode(stored) == {"\\Seen", "$MDNSent", "$Label1", "Diabete"}
    assert FlagCodec(lambda: key, 7).decode(stored) == codec.decode(stored)  # a fresh codec: no cache
    assert codec.encode(["\\Flagged"]) == "\\Flagged"
    token = seal_keyword(key, 7, "Diabete")
    assert open_keyword(key, 7, token) == "Diabete"
    with pytest.raises(DecryptionFailed):
        open_keyword(key, 8, token)  # another account's token does not open here
