"""Fixtures for the operations tests: a whole server with its HTTPS service, on both databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crypto import dkim as dkimlib
from tests import support
from tests.smtp.conftest import free_port, start_site
from tests.smtp.harness import Databases, ServerThread, databases


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dbs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    yield from databases(request, tmp_path_factory.mktemp(f"ops-{request.param}"))


@pytest.fixture(scope="module")
def site(dbs: Databases, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """The usual SMTP test site (two professionals, a patient), with ``ports.web`` on."""
    record = dkimlib.generate_key().record
    server = start_site(tmp_path_factory.mktemp("site"), dbs.new(), pki, record, free_port(), ports={"web": 0})
    yield server
    server.stop()
