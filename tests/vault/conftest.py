"""The vault tests run on the usual SMTP site (``tests.smtp.conftest``): a professional, a patient, both doors."""

from __future__ import annotations

from tests.smtp.conftest import signing_key, site, site_fixture, unreachable_port

__all__ = ["signing_key", "site", "site_server", "unreachable_port"]

site_server = site_fixture()
