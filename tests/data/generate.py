"""Synthetic directory data in the national formats (deterministic): the files of ``tests/data`` and the benchmark's.

Run ``python -m tests.data.generate`` to write the committed files again. Names, numbers
and addresses are made up; identifiers carry valid check digits unless a row is meant
to be rejected.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent

PS_HEADER = [
    "Type d'identifiant PP", "Identifiant PP", "Identification nationale PP", "Code civilité d'exercice",
    "Libellé civilité d'exercice", "Code civilité", "Libellé civilité", "Nom d'exercice", "Prénom d'exercice",
    "Code profession", "Libellé profession", "Code catégorie professionnelle", "Libellé catégorie professionnelle",
    "Code type savoir-faire", "Libellé type savoir-faire", "Code savoir-faire", "Libellé savoir-faire",
    "Code mode exercice", "Libellé mode exercice", "Numéro SIRET site", "Numéro SIREN site", "Numéro FINESS site",
    "Numéro FINESS établissement juridique", "Identifiant technique de la structure", "Raison sociale site",
    "Enseigne commerciale site", "Complément destinataire (coord. structure)",
    "Complément point géographique (coord. structure)", "Numéro Voie (coord. structure)",
    "Indice répétition voie (coord. structure)", "Code type de voie (coord. structure)",
    "Libellé type de voie (coord. structure)", "Libellé Voie (coord. structure)",
    "Mention distribution (coord. structure)", "Bureau cedex (coord. structure)", "Code postal (coord. structure)",
    "Code commune (coord. structure)", "Libellé commune (coord. structure)", "Code pays (coord. structure)",
    "Libellé pays (coord. structure)", "Téléphone (coord. structure)", "Téléphone 2 (coord. structure)",
    "Télécopie (coord. structure)", "Adresse e-mail (coord. structure)", "Code Département (structure)",
    "Libellé Département (structure)", "Ancien identifiant de la structure", "Autorité d'enregistrement",
    "Code secteur d'activité", "Libellé secteur d'activité", "Code section tableau pharmaciens",
    "Libellé section tableau pharmaciens",
]  # fmt: skip
#: newer extractions append columns: the importer must find its own by name
PS_APPENDED = ["Code rôle", "Libellé rôle", "Code genre activité", "Libellé genre activité"]

MSS_HEADER = [
    "Type de BAL", "Adresse BAL", "Type Identifiant PP", "Identifiant PP", "Identification nationale PP",
    "Type identifiant structure", "Identification Structure", "Service de rattachement", "Civilité d'exercice",
    "Nom d'exercice", "Prénom d'exercice", "Catégorie profession", "Libellé de catégorie profession",
    "Code Profession", "Libellé Profession", "Code savoir-faire", "Libellé savoir-faire", "Dématérialisation",
    "Raison Sociale structure BAL", "Enseigne commerciale structure BAL", "L2COMPLEMENTLOCALISATION structure BAL",
    "L3COMPLEMENTDISTRIBUTION structure BAL", "L4NUMEROVOIE structure BAL", "L4COMPLEMENTNUMEROVOIE structure BAL",
    "NL4TYPEVOIE structure BAL", "L4LIBELLEVOIE structure BAL", "L5LIEUDITMENTION structure BAL",
    "L6LIGNEACHEMINEMENT structure BAL", "Code postal structure BAL", "Département structure BAL",
    "Pays structure BAL",
]  # fmt: skip

PROFESSIONS = [
    ("10", "Médecin"), ("21", "Pharmacien"), ("40", "Chirurgien-Dentiste"), ("50", "Sage-Femme"),
    ("60", "Infirmier"), ("70", "Masseur-Kinésithérapeute"), ("26", "Audioprothésiste"), ("28", "Opticien-Lunetier"),
]  # fmt: skip
LAST = ["MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND", "LEROY", "MOREAU",
        "SIMON", "LAURENT", "LEFÈVRE", "MICHEL", "GARCIA", "DAVID", "BERTRAND", "ROUX", "VINCENT",
        "FOURNIER"]  # fmt: skip
FIRST = ["Jeanne", "Louis", "Hélène", "Paul", "Camille", "Noël", "Zoé", "Jérôme", "Inès", "Mathis"]
CITIES = [("75013", "PARIS"), ("69003", "LYON"), ("13005", "MARSEILLE"), ("31000", "TOULOUSE"),
          ("44000", "NANTES"), ("20000", "AJACCIO"), ("67000", "STRASBOURG"), ("33000", "BORDEAUX")]  # fmt: skip
STREETS = [("R", "Rue", "DE LA RÉPUBLIQUE"), ("AV", "Avenue", "JEAN JAURÈS"), ("BD", "Boulevard", "PASTEUR"),
           ("PL", "Place", "DU MARCHÉ")]  # fmt: skip


def luhn_digit(body: str) -> str:
    """The digit that makes ``body + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def rpps(n: int) -> str:
    body = f"1{n:09d}"
    return body + luhn_digit(body)


def finess(n: int) -> str:
    body = f"75{n:06d}"
    return body + luhn_digit(body)


def ps_line(fields: dict[str, str]) -> str:
    return "|".join(fields.get(h, "") for h in PS_HEADER + PS_APPENDED) + "|"


def ps_row(i: int, *, id_type: str = "8", ident: str | None = None, profession: tuple[str, str] | None = None,
           last: str | None = None, first: str | None = None, city: tuple[str, str] | None = None,
           site: int | None = None, finess_site: str | None = None) -> dict[str, str]:  # fmt: skip
    code, label = profession or PROFESSIONS[i % len(PROFESSIONS)]
    ident = ident or rpps(i)
    postal, town = city or CITIES[i % len(CITIES)]
    short, typ, street = STREETS[i % len(STREETS)]
    site = i % 997 if site is None else site
    return {
        "Type d'identifiant PP": id_type,
        "Identifiant PP": ident,
        "Identification nationale PP": id_type + ident,
        "Code civilité d'exercice": "DR" if code == "10" else "",
        "Libellé civilité d'exercice": "Docteur" if code == "10" else "",
        "Code civilité": "MME" if i % 2 else "M",
        "Libellé civilité": "Madame" if i % 2 else "Monsieur",
        "Nom d'exercice": last or LAST[i % len(LAST)],
        "Prénom d'exercice": first or FIRST[(i // len(LAST)) % len(FIRST)],
        "Code profession": code,
        "Libellé profession": label,
        "Code catégorie professionnelle": "C",
        "Libellé catégorie professionnelle": "Civil",
        "Code mode exercice": "L" if i % 3 else "S",
        "Libellé mode exercice": "Libéral, indépendant, artisan, commerçant" if i % 3 else "Salarié",
        "Numéro SIRET site": f"{80000000000000 + site}",
        "Numéro FINESS site": finess_site if finess_site is not None else (finess(site) if i % 3 == 0 else ""),
        "Identifiant technique de la structure": f"R10000{site:08d}",
        "Raison sociale site": f"CABINET {LAST[site % len(LAST)]}" if i % 3 else f"CENTRE HOSPITALIER {town}",
        "Numéro Voie (coord. structure)": str(1 + site % 120),
        "Code type de voie (coord. structure)": short,
        "Libellé type de voie (coord. structure)": typ,
        "Libellé Voie (coord. structure)": street,
        "Code postal (coord. structure)": postal,
        "Libellé commune (coord. structure)": town,
        "Code pays (coord. structure)": "99000",
        "Libellé pays (coord. structure)": "France",
        "Téléphone (coord. structure)": f"01{site:08d}",
        "Code rôle": "FON-01",
        "Libellé rôle": "Titulaire de cabinet",
    }


def mss_line(fields: dict[str, str]) -> str:
    return "|".join(fields.get(h, "") for h in MSS_HEADER)


def mss_row(kind: str, address: str, *, ident: str | None = None, profession: tuple[str, str] | None = None,
            last: str = "", first: str = "", organisation: str = "", service: str = "",
            city: tuple[str, str] = ("75013", "PARIS")) -> dict[str, str]:  # fmt: skip
    code, label = profession or ("", "")
    return {
        "Type de BAL": kind,
        "Adresse BAL": address,
        "Type Identifiant PP": "8" if ident else "",
        "Identifiant PP": ident or "",
        "Identification nationale PP": f"8{ident}" if ident else "",
        "Type identifiant structure": "1" if organisation else "",
        "Identification Structure": "1750000523" if organisation else "",
        "Service de rattachement": service,
        "Civilité d'exercice": "Docteur" if code == "10" else "",
        "Nom d'exercice": last,
        "Prénom d'exercice": first,
        "Code Profession": code,
        "Libellé Profession": label,
        "Dématérialisation": "True",
        "Raison Sociale structure BAL": organisation,
        "L4NUMEROVOIE structure BAL": "12",
        "NL4TYPEVOIE structure BAL": "R",
        "L4LIBELLEVOIE structure BAL": "DES ÉCOLES",
        "L6LIGNEACHEMINEMENT structure BAL": f"{city[0]} {city[1]}",
        "Code postal structure BAL": city[0],
        "Pays structure BAL": "France",
    }


# --- the small committed files ------------------------------------------------------------------------------

#: people the tests look for
MARTIN = rpps(1)  # Dr Jeanne MARTIN, médecin, two activities (Paris, Lyon)
PHARMA = rpps(2)  # Louis BERNARD, pharmacien
ADELI = "759124159"  # an ADELI-identified audioprothésiste


def small_ps() -> list[str]:
    lines = ["|".join(PS_HEADER + PS_APPENDED) + "|"]
    rows = [
        ps_row(1, profession=PROFESSIONS[0], last="MARTIN", first="Jeanne", city=("75013", "PARIS"), site=11),
        ps_row(1, profession=PROFESSIONS[0], last="MARTIN", first="Jeanne", city=("69003", "LYON"), site=12),
        ps_row(2, profession=PROFESSIONS[1], last="BERNARD", first="Louis", city=("44000", "NANTES"), site=13),
        ps_row(3, id_type="0", ident=ADELI, profession=PROFESSIONS[6], last="LEFÈVRE", first="Hélène", site=14),
        ps_row(4, profession=PROFESSIONS[4], city=("20000", "AJACCIO"), site=15, finess_site="2A0000017"),
    ]
    rows += [ps_row(i) for i in range(5, 30)]
    lines += [ps_line(r) for r in rows]
    bad_key = ps_row(30)
    bad_key["Identifiant PP"] = bad_key["Identifiant PP"][:-1] + str((int(bad_key["Identifiant PP"][-1]) + 1) % 10)
    bad_key["Identification nationale PP"] = "8" + bad_key["Identifiant PP"]
    mismatch = ps_row(31)
    mismatch["Identification nationale PP"] = "8" + rpps(32)
    bad_finess = ps_row(33, finess_site="750000019")  # wrong check digit: the row stays, the FINESS is dropped
    lines += [ps_line(bad_key), ps_line(mismatch), ps_line(bad_finess)]
    return lines


def small_mss() -> list[str]:
    lines = ["|".join(MSS_HEADER)]
    rows = [
        mss_row("PER", "jeanne.martin@medecin.mssante.fr", ident=MARTIN, profession=PROFESSIONS[0],
                last="MARTIN", first="Jeanne"),
        mss_row("PER", "Louis.Bernard@pharmacie-centrale.mssante.fr", ident=PHARMA, profession=PROFESSIONS[1],
                last="BERNARD", first="Louis", city=("44000", "NANTES")),
        mss_row("ORG", "secretariat.cardio@ch-paris.mssante.fr", organisation="CENTRE HOSPITALIER DE PARIS",
                service="Cardiologie"),
        mss_row("APP", "labo.resultats@biolab.mssante.fr", organisation="BIOLAB ANALYSES", city=("69003", "LYON")),
        mss_row("CAB", "cabinet.dubois@cabinet.mssante.fr", organisation="CABINET DUBOIS"),
    ]  # fmt: skip
    rows += [
        mss_row("PER", f"pro{i}@hopital-synth.mssante.fr", ident=rpps(i), profession=PROFESSIONS[i % 8],
                last=LAST[i % 20], first=FIRST[(i // 20) % 10])
        for i in range(5, 20)
    ]  # fmt: skip
    lines += [mss_line(r) for r in rows]
    lines.append(mss_line(mss_row("XYZ", "odd@hopital-synth.mssante.fr")))  # unknown type
    lines.append(mss_line(mss_row("PER", "not-an-address", ident=rpps(40))))
    lines.append(mss_line(mss_row("PER", "nobody@hopital-synth.mssante.fr")))  # PER without an identifier
    return lines


# --- the synthetic whitelist -----------------------------------------------------------------------------------

WL_NAMESPACE = "https://listeblanche.mssante.fr/schema"


def whitelist_entries(n_domains: int, rng: random.Random) -> Iterator[tuple[str, str, str, str]]:
    """(Nom, Description, DN, DateMAJ), several entries for some domains (one per certificate)."""
    operators = [
        f"CN=mta{k}.operateur{k}.fr,OU=3{k:014d},O=OPERATEUR SYNTHETIQUE {k},ST=Paris (75),C=FR" for k in range(40)
    ]
    for i in range(n_domains):
        name = f"etab{i:05d}.mssante.fr" if i % 10 else f"ch-synth{i:05d}.fr"
        k = rng.randrange(len(operators))
        count = 1 + (i % 7 == 0) + (i % 49 == 0)
        for j in range(count):
            yield (
                name,
                f"ÉTABLISSEMENT DE SANTÉ N°{i} & associés",
                operators[(k + j) % len(operators)],
                (f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00Z"),
            )


def write_whitelist(path: Path, n_domains: int = 2600, *, seed: int = 5) -> None:
    rng = random.Random(seed)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<ListeBlancheMSSante xmlns="{WL_NAMESPACE}">',
        "    <DateDeGeneration>2026-11-01T08:00:00Z</DateDeGeneration>",
        "    <ListeDomaines>",
    ]
    entries = list(whitelist_entries(n_domains, rng))
    entries.insert(10, ("UPPER-CASE.MSSANTE.FR", "Majuscules", entries[0][2], "2024-01-01T00:00:00Z"))
    entries.insert(20, ("secretariat@not-a-domain.mssante.fr", "Mal formé", entries[0][2], "2024-01-01T00:00:00Z"))
    for mta in ("smtps1", "smtps2"):
        dn = f"CN={mta}.ens.example.fr,OU=318003502400041,O=CNAM,ST=Paris (75),C=FR"
        entries.append(("patient.mssante.fr", "Usagers", dn, "2024-03-06T16:34:01Z"))
    for name, desc, dn, date in entries:
        desc = desc.replace("&", "&amp;")
        out += [
            "        <Domaine>",
            f"            <Nom>{name}</Nom>",
            f"            <Description>{desc}</Description>",
            f"            <DNCertificatOperateur>{dn}</DNCertificatOperateur>",
            "            <ResponsableContact>01 02 03 04 05, responsable@operateur.example</ResponsableContact>",
            "            <SupportContact>01 02 03 04 06, support@operateur.example</SupportContact>",
            f"            <DateMAJ>{date}</DateMAJ>",
            "        </Domaine>",
        ]
    out += ["    </ListeDomaines>", "</ListeBlancheMSSante>", ""]
    path.write_text("\n".join(out), encoding="utf-8")


def main() -> None:
    (HERE / "PS_LibreAcces_Personne_activite_synthetic.txt").write_text("\n".join(small_ps()) + "\n", encoding="utf-8")
    (HERE / "Extraction_Correspondance_MSSante_synthetic.txt").write_text(
        "\n".join(small_mss()) + "\n", encoding="utf-8"
    )
    write_whitelist(HERE / "listeblanchemssante-synthetic.xml")


if __name__ == "__main__":
    main()
