"""``masante-admin trust|directory|patient|retention|account create-pro`` as an operator runs them (SQLite).

In this process (``support.run_admin``), but for one command of each group, run by the real console script.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests import support
from tests.data import generate as G

DATA = Path(__file__).parent.parent / "data"
WHITELIST = DATA / "listeblanchemssante-synthetic.xml"  # the real one is imported in test_trust.py


def admin(
    config: Path, *args: str, stdin: str | None = None, process: bool = False
) -> subprocess.CompletedProcess[str]:
    return support.run_admin(*args, config=config, input=stdin, process=process)


def ok(config: Path, *args: str, stdin: str | None = None, process: bool = False) -> str:
    r = admin(config, *args, stdin=stdin, process=process)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


def one_line_error(r: subprocess.CompletedProcess[str], contains: str) -> None:
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and contains in lines[0], r.stderr


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("demo") / "var" / "masante.toml"
    ok(cfg, "init", "--demo")
    return cfg


@pytest.mark.slow
def test_trust_space_commands(demo: Path, tmp_path: Path) -> None:
    out = ok(demo, "trust", "import", str(WHITELIST), "--dry-run", "--show", "2")
    assert "2602 domain(s) would be added" in out and "dry run: nothing was changed" in out
    assert "3 manual entries kept" in out  # the demo's own domains
    r = admin(demo, "trust", "import", str(WHITELIST), process=True)
    assert r.returncode == 0 and "2602 domain(s) were added" in r.stdout and "previous version is kept" in r.stdout
    assert "warning: entry 21: 'secretariat@not-a-domain.mssante.fr' skipped: not a domain name" in r.stderr

    cut = tmp_path / "cut.xml"
    cut.write_bytes(WHITELIST.read_bytes()[:200_000])
    one_line_error(admin(demo, "trust", "import", str(cut)), "not a complete whitelist")

    exported = tmp_path / "export.xml"
    ok(demo, "trust", "export", "-o", str(exported))
    again = ok(demo, "trust", "import", str(exported), "--dry-run")
    assert "0 domain(s) would be added" in again and "0 domain(s) would be removed" in again

    ok(demo, "trust", "add", "nouvel-operateur.fr", "--dn", "CN=mx.nouvel-operateur.fr,C=FR", "--mta-port", "2525")
    assert "suspended" in ok(demo, "trust", "suspend", "nouvel-operateur.fr")
    listed = ok(demo, "trust", "list", "--suspended")
    assert "nouvel-operateur.fr" in listed and "nouvel-operateur.fr:2525" in listed and "1 domain(s)" in listed
    # back to the demo's 3 manual entries, as before the import (a change made since is undone too)
    assert "3 domains restored" in ok(demo, "trust", "rollback", "--yes")
    assert "3 domain(s)" in ok(demo, "trust", "list")


@pytest.mark.slow
def test_directory_accounts_patients_and_retention(demo: Path, tmp_path: Path) -> None:
    ps, mss = (
        DATA / "PS_LibreAcces_Personne_activite_synthetic.txt",
        DATA / "Extraction_Correspondance_MSSante_synthetic.txt",
    )
    r = admin(demo, "directory", "import", str(ps), process=True)
    assert r.returncode == 0 and "professionals  30" in r.stdout and "2 line(s) rejected, 1 warning(s)" in r.stdout
    assert "warning: line 32: RPPS '10000000307' has a wrong check digit (Luhn)" in r.stderr
    assert "nothing changed" in ok(demo, "directory", "import", str(ps))
    ok(demo, "directory", "import", str(mss))
    found = ok(demo, "directory", "search", "--profession", "pharmacien", "--city", "nantes")
    assert "louis.bernard@pharmacie-centrale.mssante.fr" in found and "2 result(s)" in found
    assert "pharmacie@clinique.demo.masante.fr" in found  # the demo's own pharmacist (init --demo)
    one_line_error(admin(demo, "directory", "search", "--id", "10000000019"), "wrong check digit")

    out = ok(
        demo,
        "account",
        "create-pro",
        "--rpps",
        G.MARTIN,
        "--address",
        "j.martin@hopital.demo.masante.fr",
        "--no-password",
    )
    assert "created (PER) for Jeanne MARTIN" in out and "Médecin" in out
    one_line_error(
        admin(
            demo,
            "account",
            "create-pro",
            "--rpps",
            G.rpps(999),
            "--address",
            "x@hopital.demo.masante.fr",
            "--no-password",
        ),
        "is not in the directory",
    )

    ins = "295109912611193"
    assert f"{ins}@patient.masante.fr opened" in ok(demo, "patient", "open", ins)
    one_line_error(admin(demo, "patient", "open", "295109912611194"), "wrong key: 94 given, 93 expected")
    listing = tmp_path / "ins.txt"
    listing.write_text("\n".join(["# new patients", "253072A07300443", "253072B07300470", "bad", ins]) + "\n")
    r = admin(demo, "patient", "open", "--file", str(listing), process=True)
    assert r.returncode == 0 and "2 patient mailbox(es) opened, 1 already open, 1 invalid line(s)" in r.stdout
    assert "warning: line 4: INS 'bad' must have 15 characters" in r.stderr
    assert "is opposed" in ok(demo, "patient", "oppose", ins)
    assert "data kept until" in ok(demo, "patient", "close", "253072A07300443")
    assert "0 mailbox key(s) destroyed" in ok(demo, "retention", "run", process=True)
    assert "key is destroyed" in ok(demo, "patient", "close", "253072B07300470", "--erase", "--yes")
    assert "key destroyed" in ok(demo, "patient", "show", "253072B07300470")
