"""The HTTPS service through real TLS on 127.0.0.1: client autoconfiguration, health, metrics.

Clients: urllib with the test CA (as a mail client fetching its settings
would), ``curl`` where installed, and ``prometheus_client``'s own parser for
``/metrics``. The Thunderbird document is checked against the structure its
format definition documents (wiki.mozilla.org Thunderbird:Autoconfiguration:ConfigFileFormat).
"""

from __future__ import annotations

import imaplib
import plistlib
import smtplib
import ssl
import subprocess
import urllib.error
import urllib.request
from xml.etree import ElementTree as ET  # noqa: S405 - parsing our own server's answers

import pytest
from prometheus_client.parser import text_string_to_metric_families

from crypto.envelope import Kek, Keyring
from mailserver.config import build
from mailserver.context import Context
from mailserver.web.service import WebService
from tests import support
from tests.smtp.conftest import PATIENT, PRO, PRO2, free_port
from tests.smtp.harness import ServerThread, marker, message, submission

TB_SOCKET_TYPES = {"plain", "SSL", "STARTTLS"}
TB_AUTHENTICATION = {
    "password-cleartext", "password-encrypted", "NTLM", "GSSAPI", "client-IP-address", "TLS-client-cert", "OAuth2",
    "none",
}  # fmt: skip
TB_SERVER_CHILDREN = ["hostname", "port", "socketType", "authentication", "username"]
AD_NS = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
OL_NS = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"


def tls(pki: support.TestPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def get(
    site: ServerThread, pki: support.TestPKI, path: str, *, data: bytes | None = None, host: str | None = None
) -> tuple[int, str, bytes]:
    req = urllib.request.Request(f"https://127.0.0.1:{site.port('web')}{path}", data=data)  # noqa: S310
    if host is not None:
        req.add_header("Host", host)
    if data is not None:
        req.add_header("Content-Type", "text/xml")
    try:
        with urllib.request.urlopen(req, context=tls(pki), timeout=30) as resp:  # noqa: S310
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def check_thunderbird(doc: bytes, domain: str) -> dict[tuple[str, str], list[tuple[str, int, str]]]:
    """Validate a config-v1.1.xml as its format definition lays it out; the servers it lists, by kind."""
    root = ET.fromstring(doc)  # noqa: S314 - our own server's answer
    assert root.tag == "clientConfig" and root.get("version") == "1.1"
    [provider] = root.findall("emailProvider")
    assert provider.get("id") == domain
    assert [d.text for d in provider.findall("domain")] == [domain]
    assert provider.findtext("displayName") and provider.findtext("displayShortName")
    servers: dict[tuple[str, str], list[tuple[str, int, str]]] = {}
    for tag, kinds in (("incomingServer", {"imap", "pop3"}), ("outgoingServer", {"smtp"})):
        for s in provider.findall(tag):
            assert s.get("type") in kinds
            assert [c.tag for c in s] == TB_SERVER_CHILDREN
            assert s.findtext("socketType") in TB_SOCKET_TYPES
            assert s.findtext("authentication") in TB_AUTHENTICATION
            assert s.findtext("username") == "%EMAILADDRESS%"
            port = int(s.findtext("port") or "")
            assert 0 < port < 65536
            servers.setdefault((tag, s.get("type") or ""), []).append(
                (s.findtext("hostname") or "", port, s.findtext("socketType") or "")
            )
    return servers


def expected_doors(site: ServerThread) -> dict[tuple[str, str], list[tuple[str, int, str]]]:
    return {
        ("incomingServer", "imap"): [
            ("localhost", site.port("imaps"), "SSL"),
            ("localhost", site.port("imap"), "STARTTLS"),
        ],
        ("outgoingServer", "smtp"): [
            ("localhost", site.port("submissions"), "SSL"),
            ("localhost", site.port("submission"), "STARTTLS"),
        ],
    }


def test_thunderbird_autoconfig_for_a_local_address(site: ServerThread, pki: support.TestPKI) -> None:
    status, ctype, body = get(site, pki, f"/mail/config-v1.1.xml?emailaddress={PRO}")
    assert status == 200 and ctype.startswith("application/xml")
    assert check_thunderbird(body, support.PRO_DOMAIN) == expected_doors(site)


def test_thunderbird_well_known_takes_the_domain_from_the_host(site: ServerThread, pki: support.TestPKI) -> None:
    status, _, body = get(site, pki, "/.well-known/autoconfig/mail/config-v1.1.xml", host=support.PATIENT_DOMAIN)
    assert status == 200
    assert check_thunderbird(body, support.PATIENT_DOMAIN) == expected_doors(site)
    status, _, body = get(site, pki, "/mail/config-v1.1.xml", host=f"autoconfig.{support.PRO_DOMAIN}")
    assert status == 200 and check_thunderbird(body, support.PRO_DOMAIN) == expected_doors(site)


def test_autoconfig_for_a_domain_that_is_not_ours_is_404(site: ServerThread, pki: support.TestPKI) -> None:
    assert get(site, pki, "/mail/config-v1.1.xml?emailaddress=someone@gmail.com")[0] == 404
    assert get(site, pki, "/.well-known/autoconfig/mail/config-v1.1.xml", host="gmail.com")[0] == 404
    assert get(site, pki, "/mail/config-v1.1.xml?emailaddress=not-an-address")[0] == 400
    # the answer depends on the domain only: an unknown account at our domain is not told apart
    status, _, body = get(site, pki, f"/mail/config-v1.1.xml?emailaddress=nobody@{support.PRO_DOMAIN}")
    assert status == 200 and check_thunderbird(body, support.PRO_DOMAIN) == expected_doors(site)


def test_curl_fetches_the_autoconfig_over_verified_tls(site: ServerThread, pki: support.TestPKI) -> None:
    curl = support.tool("curl")
    url = f"https://127.0.0.1:{site.port('web')}/mail/config-v1.1.xml?emailaddress={PATIENT}"
    out = subprocess.run(  # noqa: S603
        [curl, "--silent", "--show-error", "--fail", "--cacert", str(pki.ca_file), "--tlsv1.2", url],  # noqa: S607
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert check_thunderbird(out.stdout, support.PATIENT_DOMAIN) == expected_doors(site)
    # without the CA, curl refuses the certificate: it is the server's TLS, not a plaintext port
    bad = subprocess.run([curl, "--silent", url], capture_output=True, timeout=60)  # noqa: S603, S607
    assert bad.returncode == 60  # CURLE_PEER_FAILED_VERIFICATION


def autodiscover_request(address: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">'
        f"<Request><EMailAddress>{address}</EMailAddress>"
        "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
        "</AcceptableResponseSchema></Request></Autodiscover>"
    ).encode()


def test_autodiscover_pox_for_a_local_address(site: ServerThread, pki: support.TestPKI) -> None:
    status, ctype, body = get(site, pki, "/autodiscover/autodiscover.xml", data=autodiscover_request(PRO))
    assert status == 200 and ctype.startswith("application/xml")
    root = ET.fromstring(body)  # noqa: S314
    assert root.tag == f"{AD_NS}Autodiscover"
    account = root.find(f"{OL_NS}Response/{OL_NS}Account")
    assert account is not None
    assert account.findtext(f"{OL_NS}AccountType") == "email" and account.findtext(f"{OL_NS}Action") == "settings"
    protocols = {
        p.findtext(f"{OL_NS}Type"): (
            p.findtext(f"{OL_NS}Server"),
            int(p.findtext(f"{OL_NS}Port") or 0),
            p.findtext(f"{OL_NS}Encryption"),
            p.findtext(f"{OL_NS}LoginName"),
        )
        for p in account.findall(f"{OL_NS}Protocol")
    }
    assert protocols == {
        "IMAP": ("localhost", site.port("imaps"), "SSL", PRO),
        "SMTP": ("localhost", site.port("submissions"), "SSL", PRO),
    }
    assert get(site, pki, "/autodiscover/autodiscover.xml", data=autodiscover_request("x@gmail.com"))[0] == 404


def test_autodiscover_refuses_entities_and_garbage(site: ServerThread, pki: support.TestPKI) -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<Autodiscover><Request><EMailAddress>&b;@hopital.test</EMailAddress></Request></Autodiscover>"
    )
    assert get(site, pki, "/autodiscover/autodiscover.xml", data=bomb)[0] == 400
    assert get(site, pki, "/autodiscover/autodiscover.xml", data=b"<not xml")[0] == 400
    assert get(site, pki, "/autodiscover/autodiscover.xml", data=b"<Autodiscover/>")[0] == 400


def test_apple_mobileconfig_profile(site: ServerThread, pki: support.TestPKI) -> None:
    status, ctype, body = get(site, pki, f"/apple/mobileconfig?emailaddress={PATIENT}")
    assert status == 200 and ctype == "application/x-apple-aspen-config"
    profile = plistlib.loads(body)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    [mail] = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert mail["EmailAccountType"] == "EmailTypeIMAP" and mail["EmailAddress"] == PATIENT
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"]) == (
        "localhost",
        site.port("imaps"),
    )
    assert (mail["OutgoingMailServerHostName"], mail["OutgoingMailServerPortNumber"]) == (
        "localhost",
        site.port("submissions"),
    )
    assert mail["IncomingMailServerUseSSL"] is True and mail["OutgoingMailServerUseSSL"] is True
    assert mail["IncomingMailServerUsername"] == PATIENT
    # the same address gets the same profile (a new download replaces the old one on the device)
    assert plistlib.loads(get(site, pki, f"/apple/mobileconfig?emailaddress={PATIENT}")[2]) == profile
    assert get(site, pki, "/apple/mobileconfig?emailaddress=x@gmail.com")[0] == 404
    assert get(site, pki, "/apple/mobileconfig")[0] == 400


def test_healthz_and_readyz(site: ServerThread, pki: support.TestPKI) -> None:
    assert get(site, pki, "/healthz")[:1] == (200,)
    status, _, body = get(site, pki, "/readyz")
    assert (status, body) == (200, b"ready\n")


async def test_readyz_is_503_when_the_database_does_not_answer(tmp_path: support.Path, pki: support.TestPKI) -> None:
    # a PostgreSQL URL where nothing listens: the process is up (healthz), not ready (readyz)
    dead = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    cfg = support.make_config(tmp_path, "sqlite:///unused.db", pki, database={"url": dead})
    ctx = Context.open(cfg, keyring=Keyring(Kek.generate()))
    web = WebService(ctx, 0, [])
    [endpoint] = await web.start()
    try:
        import aiohttp

        async with aiohttp.ClientSession() as http:
            base = f"https://127.0.0.1:{endpoint.port}"
            async with http.get(f"{base}/healthz", ssl=tls(pki)) as resp:
                assert resp.status == 200
            async with http.get(f"{base}/readyz", ssl=tls(pki)) as resp:
                assert resp.status == 503
                assert "database" in await resp.text()
    finally:
        await web.stop()
        await ctx.close()


def test_the_web_port_maps_from_the_environment(tmp_path: support.Path) -> None:
    cfg = build({"ports": {"web": 8443}}, {"MASANTE_PORTS_WEB": "9443"}, tmp_path / "masante.toml")
    assert cfg.ports.web == 9443
    assert build({}, {}, tmp_path / "masante.toml").ports.web == -1  # off unless configured


# --- /metrics ----------------------------------------------------------------------------------------------------


def scrape(site: ServerThread, pki: support.TestPKI) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, ctype, body = get(site, pki, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_parse_and_move_after_a_delivery_and_a_bad_login(site: ServerThread, pki: support.TestPKI) -> None:
    delivered = ("masante_deliveries_total", (("source", "submission"),))
    bad_login = ("masante_login_failures_total", (("protocol", "imap"), ("reason", "bad-password")))
    accepted = ("masante_smtp_replies_total", (("code_class", "2xx"),))
    before = scrape(site, pki)

    s = submission(site, pki, PRO)
    s.sendmail(PRO, [PRO2], message(PRO, PRO2, f"metrics {marker()}"))
    s.quit()
    m = imaplib.IMAP4_SSL("127.0.0.1", site.port("imaps"), ssl_context=tls(pki), timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        m.login(PRO, "not the password")
    m.logout()

    after = scrape(site, pki)
    assert after[delivered] == before.get(delivered, 0) + 1
    assert after[bad_login] == before.get(bad_login, 0) + 1
    assert after[accepted] > before.get(accepted, 0)
    imaps = ("masante_connections_total", (("door", "imaps"),))
    assert after[imaps] >= before.get(imaps, 0) + 1
    assert after[("masante_imap_commands_total", (("command", "LOGIN"),))] >= 1
    assert ("masante_queue_depth", ()) in after and after[("masante_queue_oldest_age_seconds", ())] >= 0
    # store latency: the delivery's commit (and the login's audit entry) were timed, per backend
    backend = "postgresql" if "postgresql" in site.config.database.url else "sqlite"
    commits = ("masante_store_commit_seconds_count", (("backend", backend),))
    assert after[commits] > before.get(commits, 0)
    batches = ("masante_store_group_commit_units_count", (("backend", backend),))  # units per commit
    assert after[batches] > before.get(batches, 0)
    if backend == "sqlite":
        waits = ("masante_store_writer_wait_seconds_count", ())
        assert after[waits] > before.get(waits, 0)


def test_metric_labels_never_hold_addresses(site: ServerThread, pki: support.TestPKI) -> None:
    s = submission(site, pki, PRO)
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        s.sendmail(PRO, ["someone@gmail.com"], message(PRO, "someone@gmail.com", "outside"))
    s.quit()
    samples = scrape(site, pki)
    assert ("masante_refusals_total", (("reason", "recipient-outside-trust-space"), ("stage", "rcpt"))) in samples
    for _name, labels in samples:
        for _key, value in labels:
            assert "@" not in value and "gmail" not in value and "metrics " not in value


def test_mta_sts_policy_for_our_domains(site: ServerThread, pki: support.TestPKI) -> None:
    status, ctype, body = get(site, pki, "/.well-known/mta-sts.txt", host=f"mta-sts.{support.PRO_DOMAIN}")
    assert status == 200 and ctype.startswith("text/plain")
    lines = body.decode().split("\r\n")  # RFC 8461 §3.2: CRLF-separated key/value pairs
    policy = dict(line.split(": ", 1) for line in lines if line)
    assert policy == {"version": "STSv1", "mode": "enforce", "mx": "localhost", "max_age": "604800"}
    assert get(site, pki, "/.well-known/mta-sts.txt", host="mta-sts.gmail.com")[0] == 404
    assert get(site, pki, "/.well-known/mta-sts.txt", host=support.PRO_DOMAIN)[0] == 404
