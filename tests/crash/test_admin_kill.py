"""A SIGKILL during ``masante-admin keys rotate`` or ``trust import`` leaves consistent data (issue 14 point 11).

The short form of ``make bench-crash`` (``tests.crash.admin``): once per command and database, at a
moment drawn from a seeded generator; the rerun completes; every message still decrypts; the trust
space is the old list or the new one, never a mix; the audit chain verifies.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests import support
from tests.crash.admin import import_campaign, populate, rotation_campaign
from tests.crash.campaign import make_site
from tests.harness.server import Databases

SEED = 20261202


@pytest.mark.slow
def test_a_kill_during_keys_rotate_or_trust_import_leaves_consistent_data(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path
) -> None:
    site = make_site(tmp_path, dbs.new(), pki, None)
    populate(site)
    rng = random.Random(SEED)
    assert rotation_campaign(site, rng, kills=1, report=print) == []
    # lists of a few hundred domains: enough for a transaction a kill can cut (make bench-crash imports larger)
    assert import_campaign(site, tmp_path, rng, kills=1, report=print, lists=((400, 1), (300, 2))) == []


#: a process that dies (SIGKILL) after creating the key file it writes and before writing a byte of it:
#: the narrowest moment of a kill during ``keys rotate`` (its ``.next``) or ``init`` (the KEK, the audit key)
DIES_WRITING = """
import os, signal, sys
from pathlib import Path
from crypto import audit, envelope
os.fdopen = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "kek":
    envelope.write_key_file(Path(sys.argv[2]), envelope.Kek.generate())
else:
    audit.write_audit_key_file(Path(sys.argv[2]), audit.AuditKey.generate())
"""


@pytest.mark.parametrize("kind", ["kek", "audit"])
def test_a_kill_while_writing_a_key_file_leaves_no_empty_key(tmp_path: Path, kind: str) -> None:
    """The key file is whole or absent: an empty ``kek.key.next`` would stop the server from starting
    (``load_keyring`` reads it) and every rerun of ``keys rotate``."""
    import subprocess
    import sys

    from crypto.audit import AuditKey, load_audit_key, write_audit_key_file
    from crypto.envelope import Kek, load_keyring, pending_path, write_key_file

    kek_file = tmp_path / "kek.key"
    write_key_file(kek_file, Kek.generate())
    target = pending_path(kek_file) if kind == "kek" else tmp_path / "audit.key"
    r = subprocess.run([sys.executable, "-c", DIES_WRITING, kind, str(target)], timeout=60, check=False)
    assert r.returncode == -9
    assert not target.exists()
    if kind == "kek":
        assert len(load_keyring(kek_file).kids) == 1  # what the server and the rerun load
    else:
        write_audit_key_file(target, AuditKey.generate())  # `masante-admin init` again: it makes the key
        load_audit_key(target)
