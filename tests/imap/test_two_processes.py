"""Two ``masante-server`` processes on one database serve the same mailboxes (issue 10 point 7).

Each process has its own ports (``tests.crash.campaign.another_process``: one database, one set of
keys, one anchor file). A message submitted through one process wakes an IDLE client of the other:
on PostgreSQL by ``NOTIFY`` (``mailserver.notify.PgListener``), on SQLite by the datagram the first
sends the second (``SiblingRelay``; the SQLite sites here look for changes by polling only once an
hour, so the wake-up is the relay's). Clients APPENDing to one mailbox through both at once get UIDs
that are unique and increase for each client, and the mailbox holds exactly those: on SQLite the two
processes' group writers take turns through the lock file (``store.writerlock``). (The store-level
form, two writers without servers, is ``tests/store/test_concurrency.py``.)
"""

from __future__ import annotations

import asyncio
import imaplib
import shutil
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import support
from tests.crash.campaign import (
    APPENDER,
    APPENDUID,
    PRO,
    TIMEOUT,
    ServerProcess,
    Site,
    _contents,
    another_process,
    make_site,
    with_context,
)
from tests.harness.messages import message

APPENDS = 15  # per client
CLIENTS = 3  # per process


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two(
    request: pytest.FixtureRequest, pki: support.TestPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Site, Site]]:
    """Two servers on one database (each test uses an account of its own)."""
    tmp = tmp_path_factory.mktemp(f"two-{request.param}")
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp / "masante.db")
        first = make_site(tmp, f"sqlite+aiosqlite:///{tmp / 'masante.db'}", pki, None)
        first.config.server.change_poll_interval = 3600.0  # a wake-up across the two is the relay's, not the poll's
        first.config.path.write_text(first.config.to_toml())
    else:
        pg_database: str = request.getfixturevalue("pg_database")
        asyncio.run(support.pg_reset(pg_database))
        first = make_site(tmp, support.sqlalchemy_pg_url(pg_database), pki, None)
    second = another_process(first, "second")
    servers = [ServerProcess(first.cfg), ServerProcess(second.cfg)]
    try:
        for s in servers:
            s.start()
        yield first, second
        assert [s.stop() for s in servers] == [0, 0]
    finally:
        for s in servers:
            s.ensure_dead()


def login(site: Site, user: str) -> imaplib.IMAP4_SSL:
    c = imaplib.IMAP4_SSL("127.0.0.1", site.imaps, ssl_context=site.tls(), timeout=TIMEOUT)
    c.login(user, support.PASSWORD)
    c.select("INBOX")
    return c


@pytest.mark.slow
def test_a_delivery_through_one_process_wakes_idle_in_the_other(two: tuple[Site, Site]) -> None:
    first, second = two
    watcher = login(second, APPENDER)
    watcher.send(b"i1 IDLE\r\n")
    assert watcher.readline().startswith(b"+ ")
    with smtplib.SMTP("127.0.0.1", first.submission, timeout=TIMEOUT, local_hostname="client.test") as s:
        s.starttls(context=first.tls())
        s.login(PRO, support.PASSWORD)
        s.sendmail(PRO, [APPENDER], message(PRO, APPENDER, "through the first", "Bonjour.\n"))
    assert watcher.readline() == b"* 1 EXISTS\r\n"  # within the socket's timeout, pushed by the second
    if two[0].config.database.url.startswith("sqlite"):
        assert two[1].config.server.change_poll_interval == 3600.0
    watcher.send(b"DONE\r\n")
    while not (line := watcher.readline()).startswith(b"i1 "):
        assert line.startswith(b"* "), line
    assert line.startswith(b"i1 OK"), line
    watcher.logout()


@pytest.mark.slow
def test_concurrent_appends_through_both_processes_get_unique_increasing_uids(two: tuple[Site, Site]) -> None:
    uids: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def client(site: Site, tag: str) -> None:
        try:
            c = login(site, PRO)
            got = uids.setdefault(tag, [])
            for i in range(APPENDS):
                typ, data = c.append("INBOX", "", None, message(PRO, PRO, f"{tag}-{i}", "x\n"))
                m = APPENDUID.search(data[0] or b"")
                assert typ == "OK" and m is not None, data
                got.append(int(m.group(1)))
            c.logout()
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    threads = [
        threading.Thread(target=client, args=(site, f"{n}.{k}")) for n, site in enumerate(two) for k in range(CLIENTS)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT)
    assert errors == []
    everything = [u for got in uids.values() for u in got]
    assert len(everything) == 2 * CLIENTS * APPENDS
    for tag, got in uids.items():
        assert got == sorted(got), f"the UIDs of client {tag} do not increase: {got}"
    assert len(set(everything)) == len(everything), "a UID was given twice"
    stored = with_context(two[0], lambda ctx: _contents(ctx, PRO))
    assert sorted(m.uid for m in stored) == sorted(everything)
    assert sorted(everything) == list(range(1, len(everything) + 1))  # and no gap, on one mailbox
