"""``masante-admin doctor``: a healthy demo says so; each broken part is named with its fix and fails the exit.

In this process (``tests.cli.test_admin.admin``), but for the healthy demo, checked by the real console script.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from crypto.certcheck import check_server_certificate, covers
from crypto.pki import CertificateAuthority
from tests.cli.test_admin import admin
from tests.ops.dnsserver import ZoneServer

DEMO_DOMAIN = "hopital.demo.masante.fr"


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("doctor-demo")
    r = admin("init", "--demo", config=root / "var" / "masante.toml")
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def demo(template: Path, tmp_path: Path) -> Path:
    """A copy of the demo installation this test may break: its configuration file."""
    shutil.copytree(template / "var", tmp_path / "var")
    return tmp_path / "var" / "masante.toml"


def findings(cfg: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, str]]]:
    r = admin("doctor", "--json", *args, config=cfg, env=env)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, json.loads(r.stdout)


def problems(found: list[dict[str, str]]) -> list[tuple[str, str, str, str]]:
    return [(f["area"], f["level"], f["text"], f["fix"]) for f in found if f["level"] != "ok"]


def test_a_fresh_demo_is_healthy(demo: Path) -> None:
    r = admin("doctor", config=demo, process=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "everything checked is fine" in r.stdout
    code, found = findings(demo)
    assert code == 0 and problems(found) == []
    areas = {f["area"] for f in found}
    assert {"config", "keys", "tls", "trust", "database", "dkim"} <= areas


def test_a_key_file_others_can_read_is_a_warning_with_its_chmod(demo: Path) -> None:
    kek = demo.parent / "keys" / "kek.key"
    kek.chmod(0o644)
    code, found = findings(demo)
    assert code == 0  # a warning, not a failure
    ((area, level, text, fix),) = problems(found)
    assert (area, level) == ("keys", "warn") and "readable by others (mode 644)" in text and fix == f"chmod 600 {kek}"


def _reissue(demo: Path, **kwargs: object) -> None:
    tls = demo.parent / "tls"
    ca = CertificateAuthority.load(tls / "ca.pem", tls / "ca.key")
    ca.issue("CN=localhost", **kwargs).write(tls / "server.pem", tls / "server.key")  # type: ignore[arg-type]


def test_an_expired_certificate_fails(demo: Path) -> None:
    tls = demo.parent / "tls"
    ca = CertificateAuthority.load(tls / "ca.pem", tls / "ca.key")
    key = serialization.load_pem_private_key((tls / "server.key").read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name.from_rfc4514_string("CN=localhost"))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    (tls / "server.pem").write_bytes(expired.public_bytes(serialization.Encoding.PEM))
    code, found = findings(demo)
    assert code == 1
    assert [(a, lv) for a, lv, _, _ in problems(found)] == [("tls", "fail")]
    assert "expired on" in problems(found)[0][2] and problems(found)[0][3] == "renew it"


def test_a_certificate_for_another_name_fails_and_says_which_names_it_holds(demo: Path) -> None:
    _reissue(demo, dns_names=("mail.example.org",))
    code, found = findings(demo)
    assert code == 1
    ((_, level, text, fix),) = problems(found)
    assert level == "fail" and "does not name localhost" in text and "mail.example.org" in text
    assert "subjectAltName DNS:localhost" in fix


def test_a_key_that_is_not_the_certificates_fails(demo: Path) -> None:
    tls = demo.parent / "tls"
    shutil.copyfile(tls / "ca.key", tls / "server.key")
    code, found = findings(demo)
    assert code == 1 and ("tls", "fail", "the key file does not belong to the certificate") in [
        p[:3] for p in problems(found)
    ]


def test_a_schema_behind_the_code_fails_with_the_upgrade_command(demo: Path) -> None:
    db = demo.parent / "masante.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0008'")
    code, found = findings(demo)
    assert code == 1
    ((area, level, text, fix),) = problems(found)
    assert (area, level, fix) == ("database", "fail", "masante-admin db upgrade") and "revision 0008" in text


def test_an_unreadable_configuration_is_one_finding(tmp_path: Path) -> None:
    bad = tmp_path / "masante.toml"
    bad.write_text("[ports]\nimap = 'x'\n")
    code, found = findings(bad)
    assert code == 1 and [(f["area"], f["level"]) for f in found] == [("config", "fail")]
    assert "ports.imap" in found[0]["text"]


def selector(template: Path) -> str:
    return (template / "var" / "keys" / "dkim" / DEMO_DOMAIN / "selector").read_text().strip()


@pytest.fixture
def dns_server(template: Path) -> Iterator[ZoneServer]:
    zone = f"""
$TTL 60
@       IN SOA ns.{DEMO_DOMAIN}. hostmaster.{DEMO_DOMAIN}. 1 60 60 600 60
@       IN NS  ns.{DEMO_DOMAIN}.
ns      IN A   127.0.0.1
@       IN MX  10 localhost.
{selector(template)}._domainkey IN TXT "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAnotthekey"
"""
    server = ZoneServer({f"{DEMO_DOMAIN}.": zone}).start()
    yield server
    server.stop()


def test_dns_checks_the_mx_and_finds_a_dkim_record_that_is_not_our_key(
    demo: Path, template: Path, dns_server: ZoneServer
) -> None:
    code, found = findings(demo, "--dns", env={"MASANTE_DNS_NAMESERVERS": dns_server.address})
    assert code == 1
    dns = [(f["level"], f["text"]) for f in found if f["area"] == "dns"]
    assert ("ok", f"MX of {DEMO_DOMAIN} is localhost") in dns
    assert any(
        level == "fail"
        and text.startswith(
            f"{selector(template)}._domainkey.{DEMO_DOMAIN} does not publish this DKIM key (another key"
        )
        for level, text in dns
    ), dns
    asked = {(name.rstrip(".").lower(), kind) for name, kind, _ in dns_server.queries}
    assert (DEMO_DOMAIN, "MX") in asked and (f"{selector(template)}._domainkey.{DEMO_DOMAIN}", "TXT") in asked


# --- the certificate checks alone --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "ok"),
    [
        ("mail.example.org", "MAIL.example.org.", True),
        ("*.example.org", "mail.example.org", True),
        ("*.example.org", "example.org", False),
        ("*.example.org", "a.b.example.org", False),
        ("mail.example.org", "mx.example.org", False),
    ],
)
def test_a_wildcard_covers_one_label(pattern: str, host: str, ok: bool) -> None:
    assert covers(pattern, host) is ok


def test_a_certificate_close_to_its_end_is_a_warning() -> None:
    ca = CertificateAuthority.create("test CA")
    leaf = ca.issue("CN=mail", dns_names=("mail.example.org",), days=10)
    found = check_server_certificate(
        leaf.cert_pem, leaf.key_pem, ca.cert_pem, "mail.example.org", dt.datetime.now(dt.UTC)
    )
    assert [(f.level, f.text.split(" in ")[0]) for f in found if f.level != "ok"] == [
        ("warn", "the server certificate expires")
    ]
    other = CertificateAuthority.create("another CA")
    found = check_server_certificate(
        leaf.cert_pem, leaf.key_pem, other.cert_pem, "mail.example.org", dt.datetime.now(dt.UTC)
    )
    assert any(f.level == "fail" and "is not issued by the CA of tls.ca" in f.text for f in found)
