"""``trust sync`` against a local HTTPS mirror (aiohttp, the test PKI): what swaps in, what is refused.

Lists come from the synthetic whitelist generator: 100 domains, then 95 (5%
removed: within the default 10%), then 50 (half removed: refused without
``--force``). Every refusal leaves the trust space as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from crypto.pki import CertificateAuthority
from crypto.tls import server_context
from directory.sync import SyncError, WhitelistSync
from directory.trust import Operator, TrustSpace
from tests import support
from tests.data.generate import write_whitelist

LIST = "/pub/listeblanchemssante.xml"


class Mirror:
    """An HTTPS server publishing what a test puts in ``files`` (path -> body); anything else is 404."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.files: dict[str, bytes] = {}
        self.tls = server_context(cert, key)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def serve(self, request: web.Request) -> web.Response:
        body = self.files.get(request.path)
        return web.Response(body=body) if body is not None else web.Response(status=404)

    async def start(self) -> Mirror:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.serve)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.tls)
        await site.start()
        self.port = int(self.runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}{LIST}"

    def publish(self, data: bytes, *, checksum: str | None = "good") -> None:
        self.files[LIST] = data
        self.files.pop(LIST + ".sha256", None)
        if checksum == "good":
            self.files[LIST + ".sha256"] = f"{hashlib.sha256(data).hexdigest()}  listeblanchemssante.xml\n".encode()
        elif checksum is not None:
            self.files[LIST + ".sha256"] = checksum.encode()


def whitelist(tmp: Path, n: int) -> bytes:
    path = tmp / f"list-{n}.xml"
    write_whitelist(path, n)
    return path.read_bytes()


@pytest.fixture
async def mirror(pki: support.TestPKI) -> AsyncIterator[Mirror]:
    m = await Mirror(pki.server_cert, pki.server_key).start()
    yield m
    await m.stop()


async def state(ctx: support.Context) -> list[Operator]:
    return await TrustSpace(ctx).list()


async def test_a_good_list_swaps_in_and_is_kept(
    ctx: support.Context, mirror: Mirror, pki: support.TestPKI, tmp_path: Path
) -> None:
    sync = WhitelistSync(ctx)
    first = whitelist(tmp_path, 100)
    mirror.publish(first)
    r = await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    assert r.plan.applied and len(r.plan.added) == 102 and r.checksum_checked
    assert r.kept == ctx.config.base_dir / "whitelist" / "listeblanchemssante.xml"
    assert r.kept.read_bytes() == first

    second = whitelist(tmp_path, 95)
    mirror.publish(second, checksum=None)  # a mirror without a checksum file
    r = await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    assert r.plan.applied and len(r.plan.removed) == 5 and not r.checksum_checked
    assert r.removed_share == pytest.approx(5 / 102)
    assert len(await state(ctx)) == 97
    assert r.kept.read_bytes() == second
    assert [h.kind for h in await TrustSpace(ctx).history()][:2] == ["import", "import"]


async def test_a_shrunken_list_is_refused_unless_forced(
    ctx: support.Context, mirror: Mirror, pki: support.TestPKI, tmp_path: Path
) -> None:
    sync = WhitelistSync(ctx)
    full = whitelist(tmp_path, 100)
    mirror.publish(full)
    await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    before = await state(ctx)

    mirror.publish(whitelist(tmp_path, 50))  # well formed, checksum right, half the domains gone
    with pytest.raises(SyncError, match=r"would remove 50 of 102 whitelisted domains \(49%.*--force"):
        await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    assert await state(ctx) == before
    assert (ctx.config.base_dir / "whitelist" / "listeblanchemssante.xml").read_bytes() == full

    r = await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file, force=True)
    assert r.plan.applied and len(await state(ctx)) == 52


async def test_a_bad_checksum_or_a_cut_list_is_refused(
    ctx: support.Context, mirror: Mirror, pki: support.TestPKI, tmp_path: Path
) -> None:
    sync = WhitelistSync(ctx)
    mirror.publish(whitelist(tmp_path, 100))
    await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    before = await state(ctx)

    mirror.publish(whitelist(tmp_path, 99), checksum="0" * 64 + "  listeblanchemssante.xml\n")
    with pytest.raises(SyncError, match="does not match its published checksum"):
        await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    mirror.publish(whitelist(tmp_path, 99), checksum="not a digest\n")
    with pytest.raises(SyncError, match="no SHA-256 digest"):
        await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    data = whitelist(tmp_path, 99)
    mirror.publish(data[: len(data) // 2])  # cut short at the source, its checksum of the cut bytes
    with pytest.raises(SyncError, match=f"{mirror.url} is not a complete whitelist"):
        await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    mirror.files.clear()
    with pytest.raises(SyncError, match="not found"):
        await sync.sync(actor="t", url=mirror.url, ca_file=pki.ca_file)
    with pytest.raises(SyncError, match="https"):
        await sync.sync(actor="t", url=mirror.url.replace("https:", "http:"), ca_file=pki.ca_file)
    assert await state(ctx) == before


async def test_a_wrong_certificate_is_refused(ctx: support.Context, tmp_path: Path, pki: support.TestPKI) -> None:
    other = CertificateAuthority.create("not the mirror's CA")
    other.issue("CN=localhost,O=impostor,C=FR", dns_names=("localhost",)).write(tmp_path / "i.pem", tmp_path / "i.key")
    impostor = await Mirror(tmp_path / "i.pem", tmp_path / "i.key").start()
    try:
        impostor.publish(whitelist(tmp_path, 100))
        with pytest.raises(SyncError, match="certificate does not verify"):
            await WhitelistSync(ctx).sync(actor="t", url=impostor.url, ca_file=pki.ca_file)
    finally:
        await impostor.stop()
    assert await state(ctx) == []


async def test_the_cli_refuses_in_one_line_with_a_non_zero_exit(
    config: support.Config, mirror: Mirror, pki: support.TestPKI, tmp_path: Path
) -> None:
    config.path.write_text(config.to_toml(), encoding="utf-8")

    async def admin(*args: str) -> tuple[int, str, str]:  # in a thread: this loop serves the mirror meanwhile
        env = {"PATH": "/usr/bin:/bin", "MASANTE_WHITELIST_CA_FILE": str(pki.ca_file)}
        r = await asyncio.to_thread(support.run_admin, *args, config=config.path, env=env)
        return r.returncode, r.stdout, r.stderr

    mirror.publish(whitelist(tmp_path, 100))
    code, out, err = await admin("trust", "sync", "--url", mirror.url)
    assert code == 0, err
    assert "102 domains, +102 -0" in out and "checksum verified" in out

    mirror.publish(whitelist(tmp_path, 50))
    code, out, err = await admin("trust", "sync", "--url", mirror.url)
    assert code != 0 and "Traceback" not in err
    [line] = err.strip().splitlines()
    assert line.startswith("error: ") and "would remove 50 of 102" in line and "--force" in line

    code, out, err = await admin("trust", "sync", "--url", mirror.url, "--force")
    assert code == 0, err and "-50" in out


# --- the server's own daily sync (mailserver.trustsync) ------------------------------------------------------


async def test_the_server_syncs_daily_on_its_clock_and_a_failure_changes_nothing(
    db_url: str, mirror: Mirror, pki: support.TestPKI, tmp_path: Path
) -> None:
    from mailserver.clock import FakeClock
    from mailserver.trustsync import RETRY, TrustSyncScheduler

    config = support.make_config(
        tmp_path, db_url, pki, whitelist={"url": mirror.url, "ca_file": str(pki.ca_file), "sync_every": 24}
    )
    clock = FakeClock()
    ctx = support.Context.open(config, clock=clock)
    assert TrustSyncScheduler.wanted(ctx)
    scheduler = TrustSyncScheduler(ctx, poll=3600)  # woken by settle(), never by the real clock
    mirror.publish(whitelist(tmp_path, 100))
    await scheduler.start()
    try:
        await scheduler.settle()  # no import yet: due at once
        assert scheduler.runs == 1 and len(await state(ctx)) == 102

        mirror.publish(whitelist(tmp_path, 95))
        clock.advance(23 * 3600)
        await scheduler.settle()
        assert scheduler.runs == 1 and len(await state(ctx)) == 102  # not due yet

        clock.advance(3600 + 1)
        await scheduler.settle()
        assert scheduler.runs == 2 and len(await state(ctx)) == 97  # the day's list swapped in

        mirror.publish(whitelist(tmp_path, 50))  # cut short: half the domains gone
        clock.advance(24 * 3600 + 1)
        await scheduler.settle()
        assert scheduler.runs == 3 and len(await state(ctx)) == 97  # refused, nothing changed (no --force here)

        mirror.publish(whitelist(tmp_path, 95)[:-200], checksum=None)  # truncated: not well formed
        clock.advance(RETRY - 10)
        await scheduler.settle()
        assert scheduler.runs == 3  # a failure is retried an hour later, not at once
        clock.advance(20)
        await scheduler.settle()
        assert scheduler.runs == 4 and len(await state(ctx)) == 97
    finally:
        await scheduler.stop()
        await ctx.close()


async def test_no_url_no_scheduler(config: support.Config) -> None:
    from mailserver.trustsync import TrustSyncScheduler

    ctx = support.Context.open(config)
    try:
        assert not TrustSyncScheduler.wanted(ctx)  # the default configuration syncs only by hand
    finally:
        await ctx.close()
