"""Crash consistency (issue 14 point 11, issue 10's durable acknowledgements): SIGKILL at seeded moments.

The short form of ``make bench-crash`` (``tests.crash.campaign``): on each database, a real
``masante-server`` under 20 SMTP submission clients and 10 IMAP clients (APPEND, STORE, EXPUNGE) is
killed twice at a number of acknowledgements drawn from a seeded generator and restarted on the same
store; every message that got ``250`` is there once, every APPEND ``OK`` too, ``audit verify`` passes,
and the outbound queue resumes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import support
from tests.crash.campaign import Campaign, Sink, make_site
from tests.harness.server import Databases

SEED = 20261202


@pytest.mark.slow
def test_sigkill_under_smtp_and_imap_load_loses_and_duplicates_nothing(
    dbs: Databases, pki: support.TestPKI, tmp_path: Path
) -> None:
    with Sink(pki) as sink:
        site = make_site(tmp_path, dbs.new(), pki, sink.port)
        campaign = Campaign(site, SEED, smtp_clients=20, imap_clients=10)
        problems = campaign.run(kills=2, sink=sink, report=print)
    assert problems == []
    assert all(r.submitted and r.appended for r in campaign.rounds), "both loads were acknowledged before each kill"
