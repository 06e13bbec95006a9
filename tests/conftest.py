"""Fixtures shared by the whole suite.

The database fixtures are parametrised ``sqlite`` / ``postgresql``: every test
that asks for ``db_url`` (or ``config``, ``ctx``, ``server``...) runs on both.
PostgreSQL is the one at 127.0.0.1:5432 (trust auth, database ``test``); this
session creates its own database there and drops it at the end. When it does not
answer, the PostgreSQL half is skipped with a reason, except in CI
(``CI=true`` or ``MASANTE_REQUIRE_POSTGRES=1``), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests import support
from tests.harness.server import Databases, databases

PG_ADMIN_DSN = os.environ.get("MASANTE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("MASANTE_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> support.TestPKI:
    """One CA for the whole session, with a server certificate for localhost/127.0.0.1."""
    return support.TestPKI.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    asyncio.run(support.migrate_url(f"sqlite+aiosqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database for this session, migrated to head: its asyncpg DSN. Tests empty it
    (``support.pg_reset``) rather than migrate again; modules that need databases of their own call
    ``support.new_pg_database`` after asking for this fixture (which skips, or fails in CI, without PostgreSQL)."""
    try:
        dsn = support.new_pg_database(PG_ADMIN_DSN, "masante_test")
    except (OSError, support.PgUnavailable) as exc:
        if _postgres_required():
            pytest.fail(f"PostgreSQL is required here (CI) but unreachable at {PG_ADMIN_DSN}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_DSN}: {exc}")
    yield dsn
    support.drop_pg_database(PG_ADMIN_DSN, dsn)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dbs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    """Migrated databases for a module's servers (``tests.harness.Databases``): ``dbs.new()`` gives one."""
    yield from databases(request, tmp_path_factory.mktemp(f"dbs-{request.param}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The SQLAlchemy URL of an empty, migrated database (a fresh one for every test)."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "masante.db"
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    dsn: str = request.getfixturevalue("pg_database")
    asyncio.run(support.pg_reset(dsn))
    return support.sqlalchemy_pg_url(dsn)


@pytest.fixture
def config(db_url: str, tmp_path: Path, pki: support.TestPKI) -> support.Config:
    """A server configuration in ``tmp_path``: that database, a fresh KEK, the session PKI, ephemeral ports."""
    return support.make_config(tmp_path, db_url, pki)


@pytest.fixture
async def ctx(config: support.Config) -> AsyncIterator[support.Context]:
    context = support.Context.open(config)
    try:
        yield context
    finally:
        await context.close()
