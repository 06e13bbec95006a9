"""``masante-admin vault list`` and ``vault export`` as an operator runs them, against a running server's store."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from mailserver import vault as V
from mailserver.clock import SystemClock
from tests import support
from tests.directory.messages import CDA, xdm_zip
from tests.smtp.conftest import PATIENT, PRO, site_fixture
from tests.smtp.harness import ServerThread, submission
from tests.vault.test_filing import IMAGING, PDF, imap, package_message
from tests.vault.test_upload import append, upload

site_server = site_fixture(config_on_disk=True, clock=SystemClock)


def admin(site: ServerThread, *args: str, process: bool = False) -> subprocess.CompletedProcess[str]:
    """In this process (``support.run_admin``), or with ``process`` by the real console script."""
    return support.run_admin(*args, config=site.config.path, env=support.admin_env(COLUMNS="240"), process=process)


def test_list_and_export_every_document_with_its_hash(site: ServerThread, pki: support.TestPKI, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex
    package = xdm_zip(support.PATIENT_INS, documents=[(CDA, {}), (PDF, IMAGING)])
    with submission(site, pki, PRO) as s:
        s.sendmail(PRO, [PATIENT], package_message(marker, package))
    mine = PDF + marker.encode()
    with imap(site, pki) as m:
        assert append(m, "Documents/Autres", upload(marker, [("ma-radio.pdf", "application/pdf", mine)]))[0] == "OK"

    listed = admin(site, "vault", "list", support.PATIENT_INS)
    assert listed.returncode == 0, listed.stderr
    rows = [line for line in listed.stdout.splitlines() if "│" in line or "|" in line]
    assert any("Resultats" in r and "11502-2" in r and "Gregory HOUSE" in r for r in rows), listed.stdout
    assert any("Imagerie" in r and "18748-4" in r for r in rows), listed.stdout
    assert any("Autres" in r and "patient" in r and str(len(mine)) in r for r in rows), listed.stdout

    out = tmp_path / "export"
    exported = admin(site, "vault", "export", support.PATIENT_INS, str(out))
    assert exported.returncode == 0, exported.stderr
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert index["patient"] == PATIENT
    by_hash = {d["hash"]: d for d in index["documents"]}
    for data, folder in ((CDA, "Documents/Resultats"), (PDF, "Documents/Imagerie"), (mine, "Documents/Autres")):
        entry = by_hash[f"sha256:{hashlib.sha256(data).hexdigest()}"]
        assert entry["folder"] == folder and entry["size"] == len(data)
        assert (out / entry["file"]).read_bytes() == data
    for d in index["documents"]:  # every file listed is there and is what the index says
        assert f"sha256:{hashlib.sha256((out / d['file']).read_bytes()).hexdigest()}" == d["hash"]
    assert [e for e in site.audit("vault.export") if e.actor.startswith("admin:")]
    assert [e for e in site.audit("vault.list") if e.actor.startswith("admin:")]

    again = admin(site, "vault", "export", support.PATIENT_INS, str(out))
    assert again.returncode != 0 and "Traceback" not in again.stderr and again.stderr.startswith("error: ")


def test_an_unknown_patient_is_one_line(site: ServerThread) -> None:
    r = admin(site, "vault", "list", support.OTHER_INS, process=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and r.stderr.startswith("error: "), r.stderr


def test_export_reports_its_progress_and_refuses_to_overwrite(tmp_path: Path) -> None:
    docs = [
        V.Entry(
            folder=f"Documents/{folder}",
            uid=uid,
            title=f"doc {uid}",
            type="11502-2",
            author="Gregory HOUSE",
            date="20261201",
            source="lab",
            filename=f"doc{uid}.pdf",
            content_type="application/pdf",
            hash=f"sha256:{hashlib.sha256(data).hexdigest()}",
            data=data,
        )
        for uid, folder, data in ((1, "Resultats", PDF), (2, "Imagerie", PDF + b"2"), (3, "Autres", CDA))
    ]
    steps: list[tuple[int, int]] = []
    when = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)

    index = V.export(docs, tmp_path, patient=PATIENT, when=when, progress=lambda d, t: steps.append((d, t)))

    assert steps == [(1, 3), (2, 3), (3, 3)]  # what the CLI's bar shows, one step per document written
    assert len(json.loads(index.read_text(encoding="utf-8"))["documents"]) == 3
    with pytest.raises(FileExistsError):
        V.export(docs, tmp_path, patient=PATIENT, when=when)
