"""``masante-admin dns records`` as an operator runs it, its output loaded by dnspython as a zone would be.

In this process (``tests.cli.test_admin.admin``), but for the first test, by the real console script.
"""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization

from admin_cli.provision import DEMO_PRO_DOMAIN, DEMO_WEB_PORT
from crypto import dkim as dkimlib
from tests.cli.test_admin import admin, assert_one_line_error

ZONE_LINE = re.compile(r"^(\S+) (\d+) IN (\S+) (.+)$")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = tmp_path_factory.mktemp("dns-demo") / "var" / "masante.toml"
    r = admin("init", "--demo", config=cfg)
    assert r.returncode == 0, r.stderr
    return cfg


def test_init_demo_turns_the_web_service_on(demo: Path) -> None:
    assert tomllib.loads(demo.read_text())["ports"]["web"] == DEMO_WEB_PORT
    assert f"HTTPS (autoconfig, /metrics) {DEMO_WEB_PORT}" in admin("init", "--demo", config=demo).stdout


def load(out: str, domain: str) -> dns.zone.Zone:
    return dns.zone.from_text(out, origin=f"{domain}.", relativize=False, check_origin=False)


def texts(zone: dns.zone.Zone, name: str) -> list[str]:
    rds = zone.get_rdataset(name, dns.rdatatype.TXT)
    assert rds is not None, name
    return [b"".join(r.strings).decode() for r in rds]


def test_dns_records_parse_as_a_zone_with_the_right_values(demo: Path) -> None:
    r = admin("dns", "records", DEMO_PRO_DOMAIN, config=demo, process=True)
    assert r.returncode == 0, r.stderr
    d = DEMO_PRO_DOMAIN
    # every record line also parses on its own, as dig-style tools read it
    lines = [line for line in r.stdout.splitlines() if line and not line.startswith(";")]
    assert lines
    for line in lines:
        m = ZONE_LINE.match(line)
        assert m, line
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(m[3]), m[4])
        assert dns.name.from_text(m[1]).is_subdomain(dns.name.from_text(d))

    zone = load(r.stdout, d)
    srv = {}
    for service in ("_submission._tcp", "_submissions._tcp", "_imap._tcp", "_imaps._tcp"):
        rds = zone.get_rdataset(f"{service}.{d}.", dns.rdatatype.SRV)
        assert rds is not None and len(rds) == 1, service
        [rec] = list(rds)
        srv[service] = (rec.port, rec.target.to_text())
    assert srv == {
        "_submission._tcp": (2587, "localhost."),
        "_submissions._tcp": (2465, "localhost."),
        "_imap._tcp": (2143, "localhost."),
        "_imaps._tcp": (2993, "localhost."),
    }
    mx = zone.get_rdataset(f"{d}.", dns.rdatatype.MX)
    assert mx is not None and [m.exchange.to_text() for m in mx] == ["localhost."]

    # the DKIM record is the public half of the key the server signs with
    selector, pem = dkimlib.load_current(demo.parent / "keys" / "dkim", d)  # type: ignore[misc]
    public = serialization.load_pem_private_key(pem, password=None).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    [dkim_txt] = texts(zone, f"{selector}._domainkey.{d}.")
    tags = dict(t.strip().split("=", 1) for t in dkim_txt.split(";") if t.strip())
    assert tags["v"] == "DKIM1" and tags["k"] == "rsa" and tags["p"] == base64.b64encode(der).decode()

    [sts] = texts(zone, f"_mta-sts.{d}.")
    assert re.fullmatch(r"v=STSv1; id=[A-Za-z0-9]{1,32}", sts)
    assert texts(zone, f"_smtp._tls.{d}.") == [f"v=TLSRPTv1; rua=mailto:postmaster@{d}"]


def test_a_door_that_does_not_listen_is_published_as_not_available(demo: Path) -> None:
    r = admin("dns", "records", DEMO_PRO_DOMAIN, config=demo, env={"MASANTE_PORTS_IMAP": "-1"})
    assert r.returncode == 0, r.stderr
    zone = load(r.stdout, DEMO_PRO_DOMAIN)
    rds = zone.get_rdataset(f"_imap._tcp.{DEMO_PRO_DOMAIN}.", dns.rdatatype.SRV)
    assert rds is not None
    [rec] = list(rds)
    assert (rec.port, rec.target) == (0, dns.name.root)  # RFC 2782 "decidedly not available"


def test_dns_records_for_a_domain_that_is_not_ours(demo: Path) -> None:
    assert_one_line_error(admin("dns", "records", "gmail.com", config=demo), "not a local domain")
