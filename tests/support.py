"""Helpers for the tests: test PKI, configurations, databases, accounts, raw SQL peeks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto.audit import AuditKey, write_audit_key_file
from crypto.envelope import Kek, write_key_file
from crypto.pki import CertificateAuthority, Issued
from directory.accounts import AccountService
from mailserver.config import Config, build
from mailserver.context import Context
from mailserver.store import migrate
from mailserver.store.db import Database
from mailserver.store.models import Account, AccountKind, Base, DomainKind

__all__ = ["Config", "Context", "TestPKI", "make_config"]

PRO_DOMAIN = "hopital.test"
PATIENT_DOMAIN = "patient.masante.fr"
PASSWORD = "correct horse battery staple"
PATIENT_INS = "279035121518989"
OTHER_INS = "185077505612323"


def tool(command: str, package: str | None = None) -> str:
    """The path of a Debian tool a test drives. Missing, the test skips with the install line, except in CI
    (``CI=true``), where a missing tool is a failure: CI installs every tool the suite needs."""
    path = shutil.which(command)
    if path is None:
        import pytest  # noqa: PLC0415 - the benchmarks import this module without pytest

        install = f"apt-get install -y {package or command}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{command} is required in CI ({install})")
        pytest.skip(f"{command} is not installed ({install})")
    return path


class PgUnavailable(Exception):
    pass


def sqlalchemy_pg_url(dsn: str) -> str:
    return "postgresql+asyncpg://" + dsn.split("://", 1)[1]


async def pg_admin(admin_dsn: str, statement: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise PgUnavailable(str(exc)) from exc
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def pg_reset(dsn: str) -> None:
    """Empty every table of a migrated database (fast, instead of migrating again)."""
    import asyncpg

    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
        await conn.execute("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, $1)", "0" * 64)
    finally:
        await conn.close()


def new_pg_database(admin_dsn: str, prefix: str) -> str:
    """Create a PostgreSQL database next to ``admin_dsn``, migrated to head: its DSN (PgUnavailable if none)."""
    import asyncio
    import os
    import uuid

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    asyncio.run(pg_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    dsn = pg_database_of(admin_dsn, name)
    asyncio.run(migrate_url(sqlalchemy_pg_url(dsn)))
    return dsn


def pg_database_of(dsn: str, name: str) -> str:
    """``dsn`` naming database ``name`` instead: its path replaced, its query (``?host=/var/run/postgresql``, a Unix
    socket) kept."""
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


def drop_pg_database(admin_dsn: str, dsn: str) -> None:
    import asyncio
    from urllib.parse import urlsplit

    name = urlsplit(dsn).path.lstrip("/")
    asyncio.run(pg_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def migrate_url(url: str) -> None:
    db = Database(url)
    try:
        await migrate.upgrade(db)
    finally:
        await db.dispose()


@dataclass
class TestPKI:
    """A CA and, signed by it, a server certificate for localhost and 127.0.0.1."""

    __test__ = False  # not a test class

    dir: Path
    ca: CertificateAuthority
    ca_file: Path
    server_cert: Path
    server_key: Path

    @classmethod
    def create(cls, d: Path) -> TestPKI:
        ca = CertificateAuthority.create("masante test CA")
        ca_file = d / "ca.pem"
        ca.write(ca_file, d / "ca.key")
        server = ca.issue("CN=localhost,O=masante test,C=FR", dns_names=("localhost",), ip_addresses=("127.0.0.1",))
        server.write(d / "server.pem", d / "server.key")
        return cls(d, ca, ca_file, d / "server.pem", d / "server.key")

    def issue_client(self, dn: str, directory: Path) -> tuple[Path, Path]:
        issued: Issued = self.ca.issue(dn, server=False, client=True)
        name = dn.split(",", 1)[0].split("=", 1)[1].replace(" ", "_")
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        issued.write(cert, key)
        return cert, key


def audit_env(config: Config) -> dict[str, str]:
    """The environment for a helper process that writes to ``config``'s database: its audit key and anchors,
    and its credential key (mailbox names and grants are found by digests under it)."""
    import os

    from crypto.credentials import load_or_create_credential_key

    credentials = config.resolve(config.keys.credential_key_file)
    load_or_create_credential_key(credentials)  # the server makes it on first use: both must hold the same
    return {
        **os.environ,
        "MASANTE_AUDIT_KEY_FILE": str(config.resolve(config.audit.key_file)),
        "MASANTE_AUDIT_ANCHOR_FILE": str(config.resolve(config.audit.anchor_file)),
        "MASANTE_CREDENTIAL_KEY": credentials.read_text(encoding="ascii").strip(),
    }


async def audit_caught_up(ctx: Context) -> None:
    """PostgreSQL: every audit entry committed so far is chained (its sealer works in the background); SQLite
    chains at commit."""
    async with ctx.uow(readonly=True) as uow:
        await uow.audit_log.caught_up()


def make_config(tmp_path: Path, db_url: str, pki: TestPKI, **sections: dict[str, object]) -> Config:
    """A Config (as if read from tmp_path/masante.toml) on ``db_url`` with ephemeral ports on 127.0.0.1."""
    kek_file = tmp_path / "keys" / "kek.key"
    if not kek_file.exists():
        write_key_file(kek_file, Kek.generate())
    audit_key_file = tmp_path / "keys" / "audit.key"
    if not audit_key_file.exists():
        write_audit_key_file(audit_key_file, AuditKey.generate())
    data: dict[str, dict[str, object]] = {
        "server": {"hostname": "localhost", "bind": "127.0.0.1"},
        "ports": {"mx": 0, "submission": 0, "submissions": 0, "imap": 0, "imaps": 0},
        "database": {"url": db_url.replace("+aiosqlite", "").replace("+asyncpg", "")},
        "keys": {"kek_file": str(kek_file), "dkim_dir": str(tmp_path / "keys" / "dkim")},
        "tls": {
            "cert": str(pki.server_cert),
            "key": str(pki.server_key),
            "ca": str(pki.ca_file),
            "trust_ca": str(pki.ca_file),
            "client_cert": str(pki.server_cert),
            "client_key": str(pki.server_key),
        },
        "security": {"scrypt_log_n": 12, "patient_second_factor": False},  # the demo's; tests turn it on
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return build(data, {}, tmp_path / "masante.toml")


async def add_domains(ctx: Context) -> None:
    svc = AccountService(ctx)
    await svc.add_domain(PRO_DOMAIN, DomainKind.PROFESSIONAL, actor="test")
    await svc.add_domain(PATIENT_DOMAIN, DomainKind.PATIENT, actor="test")


async def make_pro(
    ctx: Context, local: str = "dr.house", *, password: str = PASSWORD, kind: AccountKind = AccountKind.PER
) -> Account:
    return await AccountService(ctx).create(f"{local}@{PRO_DOMAIN}", kind, actor="test", password=password)


async def make_patient(ctx: Context, ins: str = PATIENT_INS, *, password: str = PASSWORD) -> Account:
    return await AccountService(ctx).create(
        f"{ins}@{PATIENT_DOMAIN}", AccountKind.PATIENT, actor="test", password=password
    )


def make_message(sender: str, rcpt: str, subject: str, body: str, **headers: str) -> bytes:
    """``tests.harness.message`` with LF line endings (as a file on disk has them)."""
    from tests.harness.messages import message

    return message(sender, rcpt, subject, body, crlf_endings=False, **headers)


#: the console script ``pip install`` made next to this interpreter (``python -c`` of its entry point without one)
_SCRIPT = Path(sys.executable).parent / "masante-admin"
ADMIN_SCRIPT: list[str] = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from admin_cli.main import main; main()"]
)


def admin_env(**extra: str) -> dict[str, str]:
    """This process's environment without its ``MASANTE_*`` variables, plus ``extra``: what ``masante-admin``
    sees when an operator runs it by hand (the default of ``run_admin``)."""
    import os

    return {**{k: v for k, v in os.environ.items() if not k.startswith("MASANTE_")}, **extra}


def run_admin(
    *args: str,
    config: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    text: bool = True,
    process: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[Any]:
    """``masante-admin [--config CONFIG] ARGS`` as a finished process: its exit code, standard output and error.

    ``env`` is its whole environment (``admin_env()`` by default). It runs in this process through click's
    ``CliRunner`` (no interpreter start-up, no imports again: a few milliseconds instead of seconds), with that
    environment, that standard input and its own standard streams; an exception escaping the command is printed
    to its standard error as the interpreter would (``Traceback ...``, exit code 1). ``process=True`` runs the
    real console script in a subprocess instead: keep one such test per command group, so the entry point and
    its exit codes stay tested for real. Never call it from a running event loop (the commands ``asyncio.run``):
    an async test runs it with ``asyncio.to_thread``."""
    import os

    wanted = dict(admin_env() if env is None else env)
    argv = [*(["--config", str(config)] if config is not None else []), *args]
    if process:
        return subprocess.run(
            [*ADMIN_SCRIPT, *argv],
            input=input,
            capture_output=True,
            text=text,
            env=wanted,
            timeout=timeout,
            check=False,
        )
    import traceback
    import warnings

    from click.testing import CliRunner

    from admin_cli import common
    from admin_cli.main import cli

    changes: dict[str, str | None] = {k: None for k in os.environ if k not in wanted}
    changes.update({k: v for k, v in wanted.items() if os.environ.get(k) != v})
    console_file = common.console._file  # ``--json`` sends the console to standard error, for that command only
    try:
        with warnings.catch_warnings():  # the interpreter's, not the suite's ``error``: as a process of its own
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            result = CliRunner(env=changes).invoke(cli, argv, input=input, prog_name="masante-admin")
    finally:
        common.console._file = console_file
    stderr = result.stderr_bytes or b""
    code = result.exit_code
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        assert result.exc_info is not None
        stderr += "".join(traceback.format_exception(*result.exc_info)).encode()
        code = 1
    out: bytes | str = result.stdout_bytes
    err: bytes | str = stderr
    if text:
        out, err = result.stdout_bytes.decode(), stderr.decode()
    return subprocess.CompletedProcess([*ADMIN_SCRIPT, *argv], code, out, err)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now, for a server a test starts a little later.

    Chosen at random below the kernel's ephemeral range (``ip_local_port_range``), then checked by binding it:
    a port ``bind(0)`` hands out lies in that range, where any outgoing connection of the machine (a PostgreSQL
    client's, another xdist worker's) can take it before the server binds it, which it did (EADDRINUSE at the
    start of tests/smtp/test_two_operators.py)."""
    import random
    import socket

    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))  # noqa: S311 - a port, not a secret
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # no room below the ephemeral range on this machine
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
