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
    assert import_campaign(site, tmp_path, rng, kills=1, report=print) == []
