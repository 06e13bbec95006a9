"""The trust space on both databases: manual entries, whitelist imports (atomic swap, dry run, previous version)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from directory.errors import InvalidState, OperatorExists, UnknownOperator
from directory.trust import TrustSpace
from directory.whitelist import WhitelistError
from mailserver.store.models import OperatorStatus
from tests import support
from tests.data.generate import write_whitelist

DATA = Path(__file__).parent.parent / "data"
SYNTHETIC = DATA / "listeblanchemssante-synthetic.xml"
REAL = Path("/work/shared/data/listeblanchemssante-2025-03-13.xml")


def edited(tmp_path: Path, name: str, *edits: tuple[str, str]) -> Path:
    text = SYNTHETIC.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


async def test_manual_entries(ctx: support.Context) -> None:
    t = TrustSpace(ctx)
    op = await t.add("Clinique.MSSante.fr", actor="t", dns=["CN=mx,O=C,C=FR", "CN=mx, O=C, C=FR"], mta_port=2525)
    assert op.domain == "clinique.mssante.fr" and op.dns == ("CN=mx,O=C,C=FR",)  # one DN, written twice
    assert op.source == "manual" and op.active and op.lists("cn=MX,o=c,c=fr")
    with pytest.raises(OperatorExists, match="trust set"):
        await t.add("clinique.mssante.fr", actor="t")
    with pytest.raises(InvalidState, match="between 1 and 65535"):
        await t.add("x.fr", actor="t", mta_port=70000)
    op = await t.update("clinique.mssante.fr", actor="t", mta_host="mx2.clinique.fr", add_dns=["CN=mx2,O=C,C=FR"])
    assert (op.mta_host, op.mta_port, len(op.dns)) == ("mx2.clinique.fr", 2525, 2)
    op = await t.update("clinique.mssante.fr", actor="t", remove_dns=["cn=mx2, o=c, c=fr"], clear_endpoint=True)
    assert (op.mta_host, op.mta_port, op.dns) == (None, None, ("CN=mx,O=C,C=FR",))
    with pytest.raises(InvalidState, match="not listed"):
        await t.update("clinique.mssante.fr", actor="t", remove_dns=["CN=other"])
    await t.set_status("clinique.mssante.fr", OperatorStatus.SUSPENDED, actor="t")
    assert (await t.lookup("CLINIQUE.mssante.fr")).status is OperatorStatus.SUSPENDED  # type: ignore[union-attr]
    assert await t.domains_listing("CN=mx,O=C,C=FR") == []  # suspended
    assert await t.domains_listing("CN=mx,O=C,C=FR", active_only=False) == ["clinique.mssante.fr"]
    await t.remove("clinique.mssante.fr", actor="t")
    assert await t.lookup("clinique.mssante.fr") is None
    with pytest.raises(UnknownOperator):
        await t.remove("clinique.mssante.fr", actor="t")


async def test_import_then_import_again_changes_nothing(ctx: support.Context) -> None:
    t = TrustSpace(ctx)
    plan = await t.import_whitelist(SYNTHETIC, actor="t")
    assert plan.applied and (plan.entries, plan.domains) == (3030, 2602)
    assert len(plan.added) == 2602 and not plan.removed and not plan.changed
    assert [r.name for r in plan.rejected] == ["secretariat@not-a-domain.mssante.fr"]
    ops = {o.domain: o for o in await t.list()}
    assert len(ops) == 2602
    assert ops["upper-case.mssante.fr"].source == "whitelist"
    assert len(ops["patient.mssante.fr"].dns) == 2
    assert ops["etab00001.mssante.fr"].listed_at == dt.datetime(2024, 2, 2, 10, 0, tzinfo=dt.UTC)
    assert ops["etab00001.mssante.fr"].responsible_contact == "01 02 03 04 05, responsable@operateur.example"
    again = await t.import_whitelist(SYNTHETIC, actor="t")
    assert (len(again.added), len(again.removed), len(again.changed), again.unchanged) == (0, 0, 0, 2602)


async def test_dry_run_shows_adds_removes_and_changes_and_changes_nothing(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    await t.import_whitelist(SYNTHETIC, actor="t")
    newer = edited(
        tmp_path,
        "newer.xml",
        ("<Nom>etab00001.mssante.fr</Nom>", "<Nom>nouveau.mssante.fr</Nom>"),  # one gone, one new
        ("ÉTABLISSEMENT DE SANTÉ N°2 &amp;", "RENOMMÉ N°2 &amp;"),  # a description changed
        ("CN=mta0.operateur0.fr,OU=300000000000000", "CN=mta0-new.operateur0.fr,OU=300000000000000"),  # DNs
    )
    before = await t.list()
    plan = await t.import_whitelist(newer, actor="t", dry_run=True)
    assert not plan.applied
    assert plan.added == ["nouveau.mssante.fr"] and plan.removed == ["etab00001.mssante.fr"]
    changes = {c.domain: c.what for c in plan.changed}
    assert changes["etab00002.mssante.fr"] == ("description",)
    assert all(w == ("certificates",) for d, w in changes.items() if d != "etab00002.mssante.fr")
    assert len(changes) > 10
    assert await t.list() == before  # nothing moved
    assert await t.history() and len(await t.history()) == 1
    applied = await t.import_whitelist(newer, actor="t")
    assert (applied.added, applied.removed, len(applied.changed)) == (plan.added, plan.removed, len(plan.changed))
    assert await t.lookup("etab00001.mssante.fr") is None and await t.lookup("nouveau.mssante.fr") is not None


async def test_local_settings_survive_imports(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    await t.add("etab00003.mssante.fr", actor="t", dns=["CN=old,C=FR"], mta_host="relay.example", mta_port=2525)
    await t.add("our.domain.test", actor="t", dns=["CN=localhost,C=FR"])  # not in the whitelist
    plan = await t.import_whitelist(SYNTHETIC, actor="t")
    assert {c.domain: c.what for c in plan.changed}["etab00003.mssante.fr"][:2] == ("adopted", "description")
    assert plan.kept_manual == ["our.domain.test"]
    op = await t.lookup("etab00003.mssante.fr")
    assert op is not None and (op.mta_host, op.mta_port, op.source) == ("relay.example", 2525, "whitelist")
    assert not op.lists("CN=old,C=FR") and len(op.dns) >= 1  # the whitelist's certificates
    await t.set_status("etab00004.mssante.fr", OperatorStatus.SUSPENDED, actor="t")
    await t.update("etab00005.mssante.fr", actor="t", dkim_signing=True)
    await t.import_whitelist(edited(tmp_path, "next.xml", ("N°4 &amp;", "N°4 bis &amp;")), actor="t")
    assert (await t.lookup("etab00004.mssante.fr")).status is OperatorStatus.SUSPENDED  # type: ignore[union-attr]
    assert (await t.lookup("etab00005.mssante.fr")).dkim_signing  # type: ignore[union-attr]
    assert await t.lookup("our.domain.test") is not None


async def test_an_unusable_file_leaves_the_trust_space_as_it_was(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    await t.import_whitelist(SYNTHETIC, actor="t")
    before = await t.list()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(SYNTHETIC.read_bytes()[:500_000])
    with pytest.raises(WhitelistError, match="not a complete whitelist"):
        await t.import_whitelist(cut, actor="t")
    assert await t.list() == before
    assert len(await t.history()) == 1


async def test_rollback_restores_the_previous_version(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    with pytest.raises(InvalidState, match="nothing to roll back"):
        await t.rollback(actor="t")
    await t.add("manual.test", actor="t", dns=["CN=m,C=FR"], mta_port=2525)
    first = await t.list()
    small = tmp_path / "small.xml"
    write_whitelist(small, 50)
    await t.import_whitelist(small, actor="t")
    second = await t.list()
    await t.rollback(actor="t")
    assert await t.list() == first
    op = await t.lookup("manual.test")
    assert op is not None and op.mta_port == 2525
    await t.rollback(actor="t")  # undoing the undo
    assert await t.list() == second
    kinds = [h.kind for h in await t.history()]
    assert kinds == ["rollback", "rollback", "import"]


async def test_only_a_few_previous_versions_are_kept(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    small = tmp_path / "small.xml"
    write_whitelist(small, 30)
    for _ in range(5):
        await t.import_whitelist(small, actor="t")
    assert [h.restorable for h in await t.history()] == [True, True, True, False, False]


@pytest.mark.slow
@pytest.mark.skipif(not REAL.exists(), reason=f"{REAL} is not here")
async def test_the_real_whitelist(ctx: support.Context) -> None:
    """The national list of 2025-03-13: 6,554 entries, one malformed name, swapped in one transaction."""
    t = TrustSpace(ctx)
    await t.add("patient.mssante.fr", actor="t", dns=["CN=test,C=FR"], mta_host="mx.test", mta_port=2525)
    dry = await t.import_whitelist(REAL, actor="t", dry_run=True)
    assert (dry.entries, len(dry.added), [c.domain for c in dry.changed]) == (6554, 5000, ["patient.mssante.fr"])
    plan = await t.import_whitelist(REAL, actor="t")
    assert [r.name for r in plan.rejected] == ["sessad@ase.ditepbeziers.mssante.fr"]
    ops = await t.list()
    assert len(ops) == 5001 and sum(len(o.dns) for o in ops) == 6532  # duplicates of (domain, DN) folded
    mes = await t.lookup("patient.mssante.fr")
    assert mes is not None and (mes.mta_host, mes.mta_port) == ("mx.test", 2525) and len(mes.dns) == 2
    assert await t.lookup("UC-CMP.mssante.fr") is not None
    assert await t.domains_listing("CN=smtps2.ens.atos-infogerance.fr, OU=318003502400041, O=CNAM, ST=Paris (75), C=FR")
    assert (await t.import_whitelist(REAL, actor="t", dry_run=True)).unchanged == 5001
    await t.rollback(actor="t")
    assert [o.domain for o in await t.list()] == ["patient.mssante.fr"]


async def test_export_is_importable(ctx: support.Context, tmp_path: Path) -> None:
    t = TrustSpace(ctx)
    await t.import_whitelist(SYNTHETIC, actor="t")
    out = tmp_path / "export.xml"
    out.write_bytes(await t.export())
    plan = await t.import_whitelist(out, actor="t", dry_run=True)
    assert (len(plan.added), len(plan.removed), len(plan.changed)) == (0, 0, 0)
