"""A vault APPEND past the patient's vault quota gets NO [OVERQUOTA] with the reason; nothing is stored."""

from __future__ import annotations

import uuid

from tests import support
from tests.smtp.conftest import site_fixture
from tests.smtp.harness import ServerThread
from tests.vault.test_filing import PDF, imap, search
from tests.vault.test_upload import append, upload

site_server = site_fixture(limits={"vault_quota": 4000})


def test_an_upload_past_the_vault_quota_is_refused(site: ServerThread, pki: support.TestPKI) -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with imap(site, pki) as m:
        assert append(m, "Documents/Autres", upload(first, [("a.pdf", "application/pdf", PDF * 20)]))[0] == "OK"
        typ, text = append(m, "Documents/Imagerie", upload(second, [("b.pdf", "application/pdf", PDF * 40)]))
        assert typ == "NO" and text.startswith(b"[OVERQUOTA] The vault is full") and b"of 4000 bytes" in text
        assert not search(m, "Documents/Imagerie", "HEADER", "Message-ID", second)
        assert append(m, "INBOX", upload(second, [("b.pdf", "application/pdf", PDF * 40)]))[0] == "OK"
