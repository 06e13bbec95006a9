"""The directory of professionals: importing the Annuaire Santé extractions, searching them, creating pro accounts."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from directory.accounts import AccountService
from directory.annuaire import (
    DirectoryFileError,
    DirectoryImporter,
    DirectorySearch,
    Query,
    UnknownProfessional,
    create_pro_account,
)
from directory.errors import AccountExists, InvalidIdentifier, InvalidState
from mailserver.store.models import AccountKind, Activity, DomainKind, Professional, PublishedMailbox
from tests import support
from tests.data import generate as G

DATA = Path(__file__).parent.parent / "data"
PS = DATA / "PS_LibreAcces_Personne_activite_synthetic.txt"
MSS = DATA / "Extraction_Correspondance_MSSante_synthetic.txt"


async def counts(ctx: support.Context) -> tuple[int, int, int]:
    async with ctx.uow(readonly=True) as uow:
        return (
            await uow.directory.count(Professional),
            await uow.directory.count(Activity),
            await uow.directory.count(PublishedMailbox),
        )


async def test_import_gives_the_expected_rows_and_twice_changes_nothing(ctx: support.Context) -> None:
    imp = DirectoryImporter(ctx)
    seen: list[tuple[int, int, int]] = []
    r = await imp.import_file(PS, actor="t", progress=lambda done, total, lines: seen.append((done, total, lines)))
    assert (r.format, r.lines, r.rejected, r.warnings) == ("PS_LibreAcces_Personne_activite", 33, 2, 1)
    assert [(c.added, c.updated, c.unchanged) for c in r.counts.values()] == [(30, 0, 0), (31, 0, 0)]
    assert [p.line for p in r.problems] == [32, 33, 34]
    assert "wrong check digit (Luhn)" in r.problems[0].reason
    assert "does not match" in r.problems[1].reason
    assert "FINESS site left out" in r.problems[2].reason
    assert seen[-1] == (PS.stat().st_size, PS.stat().st_size, 33)
    again = await imp.import_file(PS, actor="t")
    assert not again.changed
    assert [(c.added, c.updated, c.unchanged) for c in again.counts.values()] == [(0, 0, 30), (0, 0, 31)]
    m = await imp.import_file(MSS, actor="t")
    assert (m.lines, m.rejected) == (23, 3) and (m.counts["mailboxes"].added, m.counts["mailboxes"].updated) == (20, 0)
    assert not (await imp.import_file(MSS, actor="t")).changed
    assert await counts(ctx) == (30, 31, 20)
    async with ctx.uow(readonly=True) as uow:
        martin = await uow.directory.professional("8" + G.MARTIN)
        adeli = await uow.directory.professional("0" + G.ADELI)
        acts = await uow.directory.activities_of(["8" + G.MARTIN])
        box = await uow.directory.mailbox("Louis.Bernard@Pharmacie-Centrale.mssante.fr")
        corsica = await uow.directory.activities_of(["8" + G.rpps(4)])
        bad_finess = await uow.directory.activities_of(["8" + G.rpps(33)])
    assert martin is not None and (martin.last_name, martin.first_name, martin.profession_code) == (
        "MARTIN",
        "Jeanne",
        "10",
    )
    assert adeli is not None and (adeli.id_type, adeli.identifier, adeli.last_name) == ("0", G.ADELI, "LEFÈVRE")
    assert sorted(a.city or "" for a in acts) == ["LYON", "PARIS"]
    assert box is not None and (box.kind, box.national_id, box.profession_code, box.city) == (
        "PER",
        "8" + G.PHARMA,
        "21",
        "NANTES",
    )
    assert corsica[0].finess_site == "2A0000017"  # Corsican FINESS: form only
    assert bad_finess[0].finess_site is None


async def test_a_changed_row_is_updated(ctx: support.Context, tmp_path: Path) -> None:
    imp = DirectoryImporter(ctx)
    await imp.import_file(PS, actor="t")
    moved = tmp_path / "ps.txt"
    moved.write_text(
        PS.read_text(encoding="utf-8").replace("|MARTIN|Jeanne|10|", "|MARTIN|Jeanne-Marie|10|"), encoding="utf-8"
    )
    r = await imp.import_file(moved, actor="t")
    assert (r.counts["professionals"].updated, r.counts["professionals"].added) == (1, 0)
    async with ctx.uow(readonly=True) as uow:
        p = await uow.directory.professional("8" + G.MARTIN)
    assert p is not None and p.first_name == "Jeanne-Marie"


async def test_columns_are_found_by_name(ctx: support.Context, tmp_path: Path) -> None:
    """A newer file puts its columns in another order and adds some: same rows."""
    lines = PS.read_text(encoding="utf-8").splitlines()
    rows = [line.split("|") for line in lines]
    order = list(reversed(range(len(rows[0]))))
    shuffled = tmp_path / "PS_LibreAcces_Personne_activite_202611.txt"
    shuffled.write_text(
        "\n".join("|".join([*(r[i] if i < len(r) else "" for i in order), "extra"]) for r in rows) + "\n",
        encoding="utf-8-sig",  # with a byte order mark, as some exports have
    )
    r = await DirectoryImporter(ctx).import_file(shuffled, actor="t")
    assert (r.counts["professionals"].added, r.counts["activities"].added, r.rejected) == (30, 31, 2)
    again = await DirectoryImporter(ctx).import_file(PS, actor="t")
    assert not again.changed  # the same data, whatever the column order


async def test_a_zip_extraction(ctx: support.Context, tmp_path: Path) -> None:
    z = tmp_path / "PS_LibreAcces.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
        f.write(PS, "PS_LibreAcces_Personne_activite_202611230000.txt")
    r = await DirectoryImporter(ctx).import_file(z, actor="t")
    assert r.counts["professionals"].added == 30


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "is empty"),
        ("a|b|c\n1|2|3\n", "unknown file"),
        ("Type d'identifiant PP|Identifiant PP\n8|10001045367\n", r"column\(s\) 'Identification nationale PP'"),
        ("Type de BAL|Identifiant PP\nPER|1\n", "unknown file"),
    ],
)
async def test_files_that_are_not_extractions(ctx: support.Context, tmp_path: Path, content: str, why: str) -> None:
    p = tmp_path / "f.txt"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DirectoryFileError, match=why):
        await DirectoryImporter(ctx).import_file(p, actor="t")
    assert await counts(ctx) == (0, 0, 0)


async def test_bad_lines_are_reported_not_fatal(ctx: support.Context, tmp_path: Path) -> None:
    lines = MSS.read_bytes().splitlines(keepends=True)
    p = tmp_path / "mss.txt"
    p.write_bytes(b"".join([*lines[:3], b"PER|\xff\xfe@x.fr|8|1\n", b"\n", *lines[3:6]]))
    r = await DirectoryImporter(ctx).import_file(p, actor="t")
    assert (r.counts["mailboxes"].added, r.rejected) == (5, 1)
    assert r.problems[0].line == 4 and r.problems[0].reason == "not UTF-8"


async def imported(ctx: support.Context) -> DirectorySearch:
    imp = DirectoryImporter(ctx)
    await imp.import_file(PS, actor="t")
    await imp.import_file(MSS, actor="t")
    return DirectorySearch(ctx)


async def test_search(ctx: support.Context) -> None:
    s = await imported(ctx)

    async def names(**q: str) -> list[str]:
        return [h.name for h in await s.search(Query(**q))]

    martin = await s.search(Query(name="martin jeanne"))
    assert [(h.name, h.identifier, h.profession) for h in martin] == [
        ("Docteur Jeanne MARTIN", f"RPPS {G.MARTIN}", "Médecin")
    ]
    assert martin[0].mailboxes == ("jeanne.martin@medecin.mssante.fr",)
    assert len(martin[0].places) == 2 and any("75013 PARIS" in p for p in martin[0].places)
    assert await names(name="JEANNE  Martin") == ["Docteur Jeanne MARTIN"]  # any order, any case
    assert await names(name="helene lefevre") == ["Hélène LEFÈVRE"]  # without accents
    assert await names(text=G.MARTIN) == ["Docteur Jeanne MARTIN"]
    assert await names(identifier="8" + G.MARTIN) == ["Docteur Jeanne MARTIN"]
    assert await names(identifier=G.ADELI) == ["Hélène LEFÈVRE"]
    assert await names(profession="pharmacien", city="nantes") == ["Louis BERNARD"]
    assert await names(profession="21", city="44") == ["Louis BERNARD"]  # a postal code prefix
    assert "Louis BERNARD" in await names(profession="Pharmacien")
    assert await names(address="jean jaures", city="paris", name="martin") == ["Docteur Jeanne MARTIN"]
    assert await names(address="louis.bernard@") == ["Louis BERNARD"]
    assert await names(text="jeanne.martin@medecin.mssante.fr") == ["Docteur Jeanne MARTIN"]
    cardio = await s.search(Query(text="cardiologie"))  # a service's mailbox, no professional behind it
    assert [(h.kind, h.name, h.mailboxes) for h in cardio] == [
        ("ORG", "Cardiologie", ("secretariat.cardio@ch-paris.mssante.fr",))
    ]
    assert [h.kind for h in await s.search(Query(name="biolab"))] == ["APP"]
    assert await names(name="nobody") == []
    assert len(await s.search(Query(city="paris"), limit=3)) == 3
    with pytest.raises(InvalidIdentifier):
        await s.search(Query(identifier="10000000019"))
    with pytest.raises(InvalidState, match="say what to search for"):
        await s.search(Query())


async def test_a_professional_account_comes_from_the_directory(ctx: support.Context) -> None:
    await imported(ctx)
    svc = AccountService(ctx)
    await svc.add_domain("medecin.mssante.fr", DomainKind.PROFESSIONAL, actor="t")
    made = await create_pro_account(
        ctx, rpps=G.MARTIN, address="Jeanne.Martin@medecin.mssante.fr", kind="per", actor="t", password=None
    )
    a = made.account
    assert (a.address, a.kind, a.rpps, a.profession_code, a.display_name) == (
        "jeanne.martin@medecin.mssante.fr",
        AccountKind.PER,
        G.MARTIN,
        "10",
        "Jeanne MARTIN",
    )
    org = await create_pro_account(
        ctx, rpps="8" + G.MARTIN, address="secretariat@medecin.mssante.fr", kind="ORG", actor="t", password="pw"
    )
    assert (org.account.kind, org.account.profession_code) == (AccountKind.ORG, "10")
    app = await create_pro_account(
        ctx, rpps=G.MARTIN, address="logiciel@medecin.mssante.fr", kind="APP", actor="t", password=None
    )
    assert (app.account.kind, app.account.profession_code) == (AccountKind.APP, None)
    with pytest.raises(AccountExists):
        await create_pro_account(
            ctx, rpps=G.MARTIN, address="jeanne.martin@medecin.mssante.fr", kind="PER", actor="t", password=None
        )
    with pytest.raises(UnknownProfessional, match="not in the directory: import"):
        await create_pro_account(
            ctx, rpps=G.rpps(999), address="x@medecin.mssante.fr", kind="PER", actor="t", password=None
        )
    with pytest.raises(InvalidIdentifier, match="wrong check digit"):
        await create_pro_account(
            ctx, rpps="10000000019", address="x@medecin.mssante.fr", kind="PER", actor="t", password=None
        )
    with pytest.raises(InvalidIdentifier, match="ADELI"):
        await create_pro_account(
            ctx, rpps=G.ADELI, address="x@medecin.mssante.fr", kind="PER", actor="t", password=None
        )
    with pytest.raises(InvalidState, match="not PER, ORG or APP"):
        await create_pro_account(
            ctx, rpps=G.MARTIN, address="x@medecin.mssante.fr", kind="PATIENT", actor="t", password=None
        )
    await svc.add_domain("pharmacie-centrale.mssante.fr", DomainKind.PROFESSIONAL, actor="t")
    with pytest.raises(InvalidState, match="published in the directory for another professional"):
        await create_pro_account(
            ctx,
            rpps=G.MARTIN,
            address="louis.bernard@pharmacie-centrale.mssante.fr",
            kind="PER",
            actor="t",
            password=None,
        )
    with pytest.raises(InvalidState, match="published in the directory as a PER mailbox, not ORG"):
        await create_pro_account(
            ctx,
            rpps=G.PHARMA,
            address="louis.bernard@pharmacie-centrale.mssante.fr",
            kind="ORG",
            actor="t",
            password=None,
        )


async def test_blocks_and_the_worker_process_give_the_same_rows(
    ctx: support.Context, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lines cut across reads, CRLF endings, an over-long line; parsed here or in a worker process."""
    import directory.annuaire as annuaire_module

    monkeypatch.setattr(annuaire_module, "BLOCK_BYTES", 700)
    lines = PS.read_bytes().splitlines()
    long_line = b"8|" + b"x" * (annuaire_module.MAX_LINE_BYTES + 10)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(b"\r\n".join([*lines[:5], long_line, *lines[5:]]))  # and no newline at the end
    here = await DirectoryImporter(ctx).import_file(crlf, actor="t", workers=0)
    assert (here.lines, here.rejected, here.counts["professionals"].added, here.counts["activities"].added) == (
        34,
        3,
        30,
        31,
    )
    assert [p.line for p in here.problems][:1] == [6] and "longer than" in here.problems[0].reason
    worker = await DirectoryImporter(ctx).import_file(crlf, actor="t", workers=1)
    assert (worker.lines, worker.rejected, worker.problems) == (here.lines, here.rejected, here.problems)
    assert not worker.changed  # the same rows, already there


async def test_a_lost_worker_process_is_not_a_lost_import(ctx: support.Context) -> None:
    """If the parsing worker dies (killed, out of memory), this process parses what it had been given."""
    from concurrent.futures import Executor, Future
    from concurrent.futures.process import BrokenProcessPool

    from directory.annuaire import _Source

    class DeadPool(Executor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            f: Future[object] = Future()
            f.set_exception(BrokenProcessPool("worker killed"))
            return f

    source = _Source(PS)
    try:
        r = await DirectoryImporter(ctx)._import(source, actor="t", progress=None, pool=DeadPool())
    finally:
        source.close()
    assert (r.counts["professionals"].added, r.counts["activities"].added, r.rejected) == (30, 31, 2)
