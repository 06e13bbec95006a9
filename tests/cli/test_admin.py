"""``masante-admin`` as an operator runs it: one readable line on every error.

The commands run in this process (``support.run_admin``); one test per command group here runs the real
console script in a process of its own (``process=True``), for the entry point and its exit codes.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests import support


def admin(
    *args: str,
    config: Path | None = None,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess[str]:
    return support.run_admin(*args, config=config, input=stdin, env=support.admin_env(**(env or {})), process=process)


def assert_one_line_error(r: subprocess.CompletedProcess[str], contains: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert contains in lines[0], r.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo server directory made by ``init --demo`` (SQLite)."""
    cfg = tmp_path_factory.mktemp("demo") / "var" / "masante.toml"
    r = admin("init", "--demo", config=cfg)
    assert r.returncode == 0, r.stderr
    return cfg


def test_init_demo_prints_accounts_ports_and_ca(demo: Path) -> None:
    r = admin("init", "--demo", config=demo, process=True)  # a second run keeps everything
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for expected in (
        "dr.martin@hopital.demo.masante.fr",
        "279035121518989@patient.masante.fr",
        "demo-password",
        "2993",
        "2143",
        "2587",
        "2465",
        "2525",
        str(demo.parent / "tls" / "ca.pem"),
    ):
        assert expected in out
    assert "created" not in out  # nothing was created the second time
    assert (demo.parent / "keys" / "kek.key").stat().st_mode & 0o077 == 0
    text = demo.read_text()
    assert 'bind = "127.0.0.1"' in text and "imaps = 2993" in text
    keys = admin("dkim", "list", config=demo).stdout  # the demo domains sign what they send
    assert "._domainkey.hopital.demo.masante.fr" in keys and "._domainkey.patient.masante.fr" in keys


def test_second_init_keeps_data_and_passwords(tmp_path: Path) -> None:
    cfg = tmp_path / "masante.toml"
    assert admin("init", "--demo", config=cfg, env={"MASANTE_DEMO_PASSWORD": "first"}).returncode == 0
    hash_before = (
        sqlite3.connect(tmp_path / "masante.db").execute("select password_hash from accounts order by id").fetchall()
    )
    assert admin("init", "--demo", config=cfg, env={"MASANTE_DEMO_PASSWORD": "second"}).returncode == 0
    hash_after = (
        sqlite3.connect(tmp_path / "masante.db").execute("select password_hash from accounts order by id").fetchall()
    )
    assert hash_before == hash_after and len(hash_after) == 2


def test_domain_and_account_lifecycle(demo: Path) -> None:
    r = admin("domain", "add", "cabinet.test", config=demo, process=True)
    assert r.returncode == 0 and "cabinet.test added" in r.stdout
    r = admin(
        "account",
        "create",
        "secretariat@cabinet.test",
        "--kind",
        "ORG",
        "--password-stdin",
        config=demo,
        stdin="pw-123\n",
        process=True,
    )
    assert r.returncode == 0, r.stderr
    listing = admin("account", "list", "--domain", "cabinet.test", config=demo).stdout
    assert "secretariat@cabinet.test" in listing and "ORG" in listing and "active" in listing
    assert admin("account", "disable", "secretariat@cabinet.test", config=demo).returncode == 0
    assert "disabled" in admin("account", "list", "--domain", "cabinet.test", config=demo).stdout
    r = admin("account", "close", "secretariat@cabinet.test", config=demo)
    assert r.returncode == 0 and "data kept until" in r.stdout
    r = admin("account", "close", "secretariat@cabinet.test", "--erase", "--yes", config=demo)
    assert r.returncode == 0 and "key is destroyed" in r.stdout
    assert "key destroyed" in admin("account", "list", "--domain", "cabinet.test", config=demo).stdout
    assert "cabinet.test" in admin("domain", "list", config=demo).stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ("account", "create", "x@nowhere.test", "--kind", "PER", "--password-stdin"),
            "pw\n",
            "nowhere.test is not a local domain",
        ),
        (
            ("account", "create", "123456789012345@patient.masante.fr", "--kind", "PATIENT", "--password-stdin"),
            "pw\n",
            "wrong key",
        ),
        (
            ("account", "create", "dr.martin@hopital.demo.masante.fr", "--kind", "PER", "--password-stdin"),
            "pw\n",
            "already exists",
        ),
        (("account", "create", "not-an-address", "--kind", "PER", "--password-stdin"), "pw\n", "not an address"),
        (("account", "disable", "ghost@hopital.demo.masante.fr"), None, "no account ghost@"),
        (("domain", "add", "hopital.demo.masante.fr"), None, "already exists"),
        (("domain", "add", "not a domain"), None, "is not a domain name"),
        (("account", "list", "--domain", "nowhere.test"), None, "not a local domain"),
    ],
)
def test_bad_input_is_one_clear_line(demo: Path, args: tuple[str, ...], stdin: str | None, message: str) -> None:
    assert_one_line_error(admin(*args, config=demo, stdin=stdin), message)


def test_missing_configuration(tmp_path: Path) -> None:
    assert_one_line_error(admin("domain", "list", config=tmp_path / "absent.toml", process=True), "masante-admin init")
    r = admin("domain", "list", env={"MASANTE_CONFIG": str(tmp_path / "env.toml")})
    assert_one_line_error(r, "env.toml not found")


def test_missing_kek(demo: Path, tmp_path: Path) -> None:
    r = admin("account", "list", config=demo, env={"MASANTE_KEYS_KEK_FILE": str(tmp_path / "gone.key")})
    assert_one_line_error(r, "gone.key does not exist")


def test_help_on_every_command() -> None:
    for args in (
        ["--help"],
        ["init", "--help"],
        ["db", "upgrade", "--help"],
        ["domain", "add", "--help"],
        ["domain", "list", "--help"],
        ["account", "create", "--help"],
        ["account", "list", "--help"],
        ["account", "disable", "--help"],
        ["account", "close", "--help"],
        ["keys", "rotate", "--help"],
        ["audit", "verify", "--help"],
        ["audit", "tail", "--help"],
    ):
        r = admin(*args)
        assert r.returncode == 0 and "Usage:" in r.stdout, args


def test_keys_rotate_and_audit(demo: Path) -> None:
    kek = demo.parent / "keys" / "kek.key"
    before = kek.read_text()
    r = admin("keys", "rotate", config=demo, process=True)
    assert r.returncode == 0 and "re-wrapped" in r.stdout, r.stderr
    assert kek.read_text() != before and kek.stat().st_mode & 0o077 == 0
    assert admin("account", "list", config=demo).returncode == 0
    r = admin("audit", "verify", config=demo)
    assert r.returncode == 0 and "intact" in r.stdout
    assert "keys.rotate" in admin("audit", "tail", "-n", "3", config=demo).stdout


def test_audit_verify_reports_tampering(tmp_path: Path) -> None:
    cfg = tmp_path / "masante.toml"
    assert admin("init", "--demo", config=cfg).returncode == 0
    with sqlite3.connect(tmp_path / "masante.db") as db:
        db.execute("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 2")
    r = admin("audit", "verify", config=cfg, process=True)
    assert r.returncode == 1 and "broken at entry 2" in r.stderr and "Traceback" not in r.stderr


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    cfg = tmp_path / "masante.toml"
    cfg.write_text('[database]\nurl = "sqlite:///fresh.db"\n')
    env = {"MASANTE_KEK": "A" * 43 + "="}
    r = admin("db", "current", config=cfg, env=env)
    assert r.returncode == 0 and "needs `masante-admin db upgrade`" in r.stdout
    r = admin("db", "upgrade", config=cfg, env=env, process=True)
    assert r.returncode == 0 and "upgraded from empty" in r.stdout
    assert "already at revision" in admin("db", "upgrade", config=cfg, env=env).stdout


def test_json_output_of_a_list_for_scripts(demo: Path) -> None:
    r = admin("--json", "account", "list", config=demo)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    by_address = {row["address"]: row for row in rows}
    assert by_address["dr.martin@hopital.demo.masante.fr"]["kind"] == "PER"
    assert all(set(row) == {"address", "kind", "status", "name"} for row in rows)
    r = admin("--json", "trust", "list", config=demo)
    assert r.returncode == 0 and isinstance(json.loads(r.stdout), list), r.stderr


def test_shell_completion(demo: Path) -> None:
    script = admin("completion", "bash", config=demo)
    assert script.returncode == 0 and "_masante_admin_completion()" in script.stdout
    env = support.admin_env(COMP_WORDS="masante-admin tru", COMP_CWORD="1", _MASANTE_ADMIN_COMPLETE="bash_complete")
    r = subprocess.run(support.ADMIN_SCRIPT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert "plain,trust" in r.stdout.splitlines(), r.stdout + r.stderr
