"""SEARCH on the decoded header fields reads the sealed metadata without decoding its envelope (issue 10
point 4: CPU on the event loop); SORT, which orders by it, still decodes it."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

from mailserver.message.imap import Envelope
from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, imaps, message


def test_search_subject_leaves_the_envelope_undecoded_and_sort_decodes_it(
    srv: ServerThread, tls_client: ssl.SSLContext, user: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    for subject in ("alpha report", "beta", "alpha again"):
        srv.deliver(user, message("lab@lab.test", user.address, subject))
    decoded: list[Any] = []
    of_value = Envelope.of_value.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Envelope], v: Any) -> Envelope:
        decoded.append(v)
        return of_value(cls, v)  # type: ignore[no-any-return]

    monkeypatch.setattr(Envelope, "of_value", classmethod(counting))
    m = imaps(srv, tls_client, user)
    try:
        m.select("INBOX")
        typ, data = m.uid("SEARCH", "SUBJECT", "alpha")
        assert typ == "OK" and data[0].split() == [b"1", b"3"], data
        typ, data = m.uid("SEARCH", "FROM", "lab@lab.test", "SENTSINCE", "1-Jan-2000")
        assert typ == "OK" and data[0].split() == [b"1", b"2", b"3"], data
        assert decoded == []
        typ, data = m.uid("SORT", "(SUBJECT)", "UTF-8", "ALL")
        assert typ == "OK" and data[0].split() == [b"3", b"1", b"2"], data
        assert len(decoded) == 3
    finally:
        m.logout()
