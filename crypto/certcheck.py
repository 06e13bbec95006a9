"""What is wrong with a TLS certificate, said so an operator can fix it (``masante-admin doctor``).

Pure: PEM bytes and a time in, findings out; no file, no network. Each finding has a level
(``ok``, ``warn``, ``fail``), what was found, and for anything but ``ok`` what to do.

Checked for the server's certificate: it parses; its key is the configured key; it is valid
now and not within ``warn_days`` of its end; it names the host name clients connect to
(subjectAltName, RFC 6125 §6.4: a wildcard covers one left-most label); it has an RSA key of
2048 bits or more (the MSSanté TLS 1.2 suites are all ECDHE-RSA: ``crypto.tls``); it is
issued by the configured CA, itself valid. For a CA file (the trust space's): it parses, is
a CA and is valid.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

Level = Literal["ok", "warn", "fail"]
WARN_DAYS = 30


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    text: str
    fix: str = ""


def _load(pem: bytes, what: str) -> x509.Certificate | Finding:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        return Finding("fail", f"{what} is not a PEM certificate", f"put the PEM certificate of {what} in that file")


def _validity(cert: x509.Certificate, what: str, now: dt.datetime, warn_days: int) -> Finding:
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        return Finding(
            "fail", f"{what} is not valid before {start:%Y-%m-%d %H:%M} UTC", "check the clock, or reissue it"
        )
    if now >= end:
        return Finding("fail", f"{what} expired on {end:%Y-%m-%d}", "renew it")
    left = (end - now).days
    if left < warn_days:
        return Finding("warn", f"{what} expires in {left} day(s), on {end:%Y-%m-%d}", "renew it before then")
    return Finding("ok", f"{what} valid until {end:%Y-%m-%d} ({left} days)")


def names(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses of the subjectAltName (empty when it has none)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(a) for a in san.get_values_for_type(x509.IPAddress))]


def covers(pattern: str, host: str) -> bool:
    """RFC 6125 §6.4.3: exact (case-insensitive), or ``*.`` standing for exactly one left-most label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == host:
        return True
    if pattern.startswith("*.") and "." in host:
        return host.split(".", 1)[1] == pattern[2:] and bool(host.split(".", 1)[0])
    return False


def _names_host(cert: x509.Certificate, host: str) -> Finding:
    listed = names(cert)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    ok = any(n == str(ip) for n in listed) if ip else any(covers(n, host) for n in listed)
    if ok:
        return Finding("ok", f"names {host}")
    shown = ", ".join(listed) or "no subjectAltName at all"
    return Finding(
        "fail",
        f"does not name {host} (server.hostname): it names {shown}",
        f"reissue it with subjectAltName DNS:{host}, or set server.hostname to a name it holds",
    )


def _key_type(cert: x509.Certificate) -> Finding:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return Finding(
            "fail",
            f"has a {type(key).__name__.removesuffix('PublicKey').lstrip('_')} key, not RSA",
            "the MSSanté TLS 1.2 suites are ECDHE-RSA: reissue it with an RSA key (2048 bits or more)",
        )
    if key.key_size < 2048:
        return Finding("fail", f"has an RSA key of {key.key_size} bits", "reissue it with 2048 bits or more")
    return Finding("ok", f"RSA {key.key_size} bits")


def _key_matches(cert: x509.Certificate, key_pem: bytes) -> Finding:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return Finding("fail", "the key file is not an unencrypted PEM private key", "point tls.key at the key file")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != cert.public_key().public_bytes(*raw):
        return Finding("fail", "the key file does not belong to the certificate", "point tls.key at its own key")
    return Finding("ok", "the key file belongs to it")


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> Finding:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return Finding(
            "fail",
            f"is not issued by the CA of tls.ca ({ca.subject.rfc4514_string()}): its issuer is "
            f"{cert.issuer.rfc4514_string()}",
            "set tls.ca to the CA that issued it (clients are told to trust that file)",
        )
    return Finding("ok", f"issued by {ca.subject.rfc4514_string()}")


def check_server_certificate(
    cert_pem: bytes,
    key_pem: bytes,
    ca_pem: bytes | None,
    hostname: str,
    now: dt.datetime,
    *,
    warn_days: int = WARN_DAYS,
) -> list[Finding]:
    cert = _load(cert_pem, "the server certificate")
    if isinstance(cert, Finding):
        return [cert]
    found = [
        _validity(cert, "the server certificate", now, warn_days),
        _key_matches(cert, key_pem),
        _names_host(cert, hostname),
        _key_type(cert),
    ]
    if ca_pem is not None:
        ca = _load(ca_pem, "the CA of tls.ca")
        found += [ca] if isinstance(ca, Finding) else [_issued_by(cert, ca), _validity(ca, "its CA", now, warn_days)]
    return found


def check_ca(pem: bytes, what: str, now: dt.datetime, *, warn_days: int = WARN_DAYS) -> list[Finding]:
    cert = _load(pem, what)
    if isinstance(cert, Finding):
        return [cert]
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    found = [_validity(cert, what, now, warn_days)]
    if not is_ca:
        found.append(Finding("fail", f"{what} is not a CA certificate", "use the certificate of the CA itself"))
    else:
        found.append(Finding("ok", f"{what}: {cert.subject.rfc4514_string()}"))
    return found
