"""``masante-admin queue`` and ``masante-admin dkim`` as an operator runs them, against a running server's store."""

from __future__ import annotations

import re
import subprocess

import pytest

from crypto import dkim as dkimlib
from directory.dkim import DkimKeys
from mailserver.clock import SystemClock
from mailserver.context import Context
from tests import support
from tests.smtp.conftest import OTHER, PRO, SIGNING, SIGNING_SELECTOR, site_fixture
from tests.smtp.harness import ServerThread, find, marker, message, submission

#: the system clock: masante-admin, another process, reads it too (``queue retry`` makes a message due "now")
site_server = site_fixture(queue={"first_retry": 3600}, config_on_disk=True, clock=SystemClock)


def admin(site: ServerThread, *args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """In this process (``support.run_admin``), or with ``process`` by the real console script."""
    return support.run_admin(*args, config=site.config.path, process=process)


def one_line_error(r: subprocess.CompletedProcess[str], contains: str) -> None:
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and contains in lines[0], r.stderr


def queue_ids(site: ServerThread, rcpt: str) -> list[str]:
    async def go(ctx: Context) -> list[str]:
        async with ctx.uow(readonly=True) as uow:
            return [q.id for q in await uow.queue.list() if q.rcpt_to == rcpt]

    return site.call(go)


def attempts(site: ServerThread, rcpt: str) -> list[int]:
    """The attempts made for each queued message to ``rcpt``."""

    async def go(ctx: Context) -> list[int]:
        async with ctx.uow(readonly=True) as uow:
            return [q.attempts for q in await uow.queue.list() if q.rcpt_to == rcpt and q.status.value == "queued"]

    return site.call(go)


@pytest.mark.slow
def test_queue_list_retry_delete(site: ServerThread, pki: support.TestPKI) -> None:
    tag = marker()
    rcpt = f"dr.chase.{tag[:6]}@{OTHER}"
    s = submission(site, pki, PRO)
    s.sendmail(PRO, [rcpt], message(PRO, rcpt, f"queued {tag}"))
    s.quit()
    site.settle()  # the first attempt fails (nothing listens); the next is an hour away
    assert attempts(site, rcpt) == [1]
    r = admin(site, "queue", "list", "--status", "queued", process=True)
    assert r.returncode == 0 and re.search(rf"{re.escape(rcpt)}\s+queued\s+1\s", r.stdout), r.stdout
    assert "cannot connect" in r.stdout
    [qid] = queue_ids(site, rcpt)

    r = admin(site, "queue", "retry", qid[:12])
    assert r.returncode == 0 and "1 message(s) due" in r.stdout
    site.settle()  # due now: the worker tries again at once, and fails again
    assert attempts(site, rcpt) == [2]
    one_line_error(admin(site, "queue", "retry", "ffffffffffff"), "no queued message ffffffffffff")

    r = admin(site, "queue", "delete", "--bounce", qid)
    assert r.returncode == 0 and "1 message(s) deleted and bounced" in r.stdout, r.stdout + r.stderr
    assert queue_ids(site, rcpt) == []
    [report] = find(site, PRO, f"queued {tag}")
    assert b"Action: failed" in report and b"deleted from the queue by the administrator" in report


@pytest.mark.slow
def test_dkim_keygen_prints_the_txt_record_and_signs_from_then_on(site: ServerThread) -> None:
    r = admin(site, "dkim", "keygen", support.PRO_DOMAIN, "--selector", "cli2026", process=True)
    assert r.returncode == 0, r.stderr
    m = re.fullmatch(rf'cli2026\._domainkey\.{re.escape(support.PRO_DOMAIN)}\. IN TXT \( (".*") \)\n', r.stdout)
    assert m, r.stdout
    record = "".join(re.findall(r'"([^"]*)"', m.group(1)))
    assert record.startswith("v=DKIM1; k=rsa; p=") and dkimlib.check_record(record) == record
    key_file = site.config.resolve(site.config.keys.dkim_dir) / support.PRO_DOMAIN / "cli2026.key"
    assert key_file.stat().st_mode & 0o077 == 0
    one_line_error(admin(site, "dkim", "keygen", support.PRO_DOMAIN, "--selector", "cli2026"), "cli2026")
    one_line_error(admin(site, "dkim", "keygen", "not-ours.test"), "not a local domain")

    async def sign_and_verify(ctx: Context) -> tuple[str, str]:
        from mailserver.message import parse_message
        from mailserver.smtp.signing import DkimSigner, DkimVerifier

        raw = message(PRO, "x@y.test", "signed")
        out = await DkimSigner(ctx).sign(parse_message(raw), support.PRO_DOMAIN)
        [result] = await DkimVerifier(ctx).verify(parse_message(out))
        return result.status.value, result.selector or ""

    assert site.call(sign_and_verify) == ("pass", "cli2026")


@pytest.mark.slow
def test_dkim_add_list_remove(site: ServerThread, signing_key: dkimlib.KeyPair) -> None:
    other = dkimlib.generate_key()
    r = admin(site, "dkim", "add", "operator.test", "s1", other.record)
    assert r.returncode == 0 and "key s1._domainkey.operator.test added" in r.stdout
    r = admin(site, "dkim", "list")
    assert r.returncode == 0 and f"{SIGNING_SELECTOR}._domainkey.{SIGNING}" in r.stdout
    assert "s1._domainkey.operator.test" in r.stdout
    one_line_error(admin(site, "dkim", "add", "operator.test", "s2", "v=DKIM1; p=bm90IGEga2V5"), "not a usable")

    async def listed(ctx: Context) -> list[str]:
        return [k.name for k in await DkimKeys(ctx).list("operator.test")]

    assert site.call(listed) == ["s1._domainkey.operator.test"]
    assert admin(site, "dkim", "remove", "operator.test", "s1").returncode == 0
    assert site.call(listed) == []
    one_line_error(admin(site, "dkim", "remove", "operator.test", "s1"), "no DKIM key")


def test_admin_help_lists_the_new_groups() -> None:
    r = support.run_admin("--help")
    assert "queue" in r.stdout and "dkim" in r.stdout
