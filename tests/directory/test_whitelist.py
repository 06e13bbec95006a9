"""The national whitelist file: the real one (6,554 entries), the synthetic one, and files that must be refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from directory import whitelist
from directory.dn import dn_key
from directory.whitelist import ExportEntry, WhitelistError

REAL = Path("/work/shared/data/listeblanchemssante-2025-03-13.xml")
SYNTHETIC = Path(__file__).parent.parent / "data" / "listeblanchemssante-synthetic.xml"


@pytest.fixture(scope="module")
def real() -> whitelist.Whitelist:
    if not REAL.exists():
        pytest.skip(f"{REAL} is not here")
    return whitelist.read(REAL)


def test_the_real_list(real: whitelist.Whitelist) -> None:
    assert real.entries == 6554
    assert len(real.domains) == 5001  # 5,002 names, one of them not a domain
    assert real.generated_at == dt.datetime(2025, 3, 13, 14, 54, 10, tzinfo=dt.UTC)
    assert [(r.name, r.reason) for r in real.rejected] == [("sessad@ase.ditepbeziers.mssante.fr", "not a domain name")]
    assert "uc-cmp.mssante.fr" in real.domains and "UC-CMP.mssante.fr" not in real.domains
    patients = real.domains["patient.mssante.fr"]
    assert [d for d, _ in patients.dns] == [
        "CN=smtps1.ens.atos-infogerance.fr,OU=318003502400041,O=CNAM,ST=Paris (75),C=FR",
        "CN=smtps2.ens.atos-infogerance.fr,OU=318003502400041,O=CNAM,ST=Paris (75),C=FR",
    ]
    assert len(real.domains["15-20.mssante.fr"].dns) >= 2
    assert "mssante.apicrypt.org" in real.domains  # not every domain ends in .mssante.fr
    assert all(len(d.dns) >= 1 for d in real.domains.values())


def test_the_synthetic_list() -> None:
    w = whitelist.read(SYNTHETIC)
    assert w.entries == 3030
    assert len(w.domains) == 2602
    assert "upper-case.mssante.fr" in w.domains
    assert [r.name for r in w.rejected] == ["secretariat@not-a-domain.mssante.fr"]
    assert w.domains["etab00001.mssante.fr"].description == "ÉTABLISSEMENT DE SANTÉ N°1 & associés"


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "liste.xml"
    p.write_text(text, encoding="utf-8")
    return p


def test_a_truncated_download_is_refused(tmp_path: Path) -> None:
    data = SYNTHETIC.read_bytes()
    p = tmp_path / "cut.xml"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(WhitelistError, match=r"not a complete whitelist \(XML error at line \d+, column \d+"):
        whitelist.read(p)


def test_a_list_without_its_closing_tag_is_refused(tmp_path: Path) -> None:
    text = SYNTHETIC.read_text(encoding="utf-8").replace("</ListeBlancheMSSante>", "")
    with pytest.raises(WhitelistError, match="was the download cut short"):
        whitelist.read(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("<html><body>502 Bad Gateway</body></html>", "root element is <html>"),
        ('<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"/>', "no <ListeDomaines>"),
        (
            '<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema"><ListeDomaines/></ListeBlancheMSSante>',
            "no usable domain",
        ),
        (
            '<!DOCTYPE x [<!ENTITY a "aaaa">]><ListeBlancheMSSante><ListeDomaines><Domaine><Nom>&a;.fr</Nom>'
            "</Domaine></ListeDomaines></ListeBlancheMSSante>",
            "forbidden XML",
        ),
        ("", "not a complete whitelist"),
    ],
)
def test_unusable_files_are_refused(tmp_path: Path, text: str, why: str) -> None:
    with pytest.raises(WhitelistError, match=why):
        whitelist.read(_write(tmp_path, text))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WhitelistError, match="cannot read"):
        whitelist.read(tmp_path / "absent.xml")


def test_export_reads_back(tmp_path: Path) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    entries = [
        ExportEntry("a.mssante.fr", "A & B", "CN=mx1,O=A,C=FR", "resp", "support", when),
        ExportEntry("a.mssante.fr", "A & B", "CN=mx2,O=A,C=FR", "resp", "support", when),
        ExportEntry("b.fr", None, None, None, None, None),
    ]
    p = tmp_path / "export.xml"
    p.write_bytes(whitelist.write(entries, when))
    back = whitelist.read(p)
    assert back.generated_at == when and back.entries == 3
    assert [d for d, _ in back.domains["a.mssante.fr"].dns] == ["CN=mx1,O=A,C=FR", "CN=mx2,O=A,C=FR"]
    assert back.domains["a.mssante.fr"].description == "A & B"
    assert back.domains["b.fr"].dns == []


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("CN=mx.op.fr,OU=1,O=OP,ST=Paris (75),C=FR", "CN=mx.op.fr, OU=1 , O=op,ST=paris  (75),C=fr"),
        ("CN=mx,O=A\\, B,C=FR", "cn=MX,o=a\\, b,c=FR"),
        ("CN=mx,2.5.4.5=42,C=FR", "CN=mx,SERIALNUMBER=42,C=FR"),
        ("CN=mx,S=Paris,C=FR", "CN=mx,ST=Paris,C=FR"),
        ("CN=a+OU=b,C=FR", "OU=b+CN=a,C=FR"),
    ],
)
def test_dns_compare_as_x500_does(a: str, b: str) -> None:
    assert dn_key(a) == dn_key(b)


def test_different_dns_differ() -> None:
    assert dn_key("CN=mx1,O=A,C=FR") != dn_key("CN=mx2,O=A,C=FR")
    assert dn_key("CN=mx,O=A,C=FR") != dn_key("O=A,CN=mx,C=FR")  # order matters
