"""Mail client autoconfiguration documents: Thunderbird's autoconfig, Microsoft's Autodiscover (POX), Apple's profile.

Invariants:
- Pure: a ``MailSettings`` (host name and the doors that listen) in, bytes
  out; no I/O. Which domains may be answered is the web service's business.
- Only doors that listen are offered, TLS ones only (implicit TLS first, then
  STARTTLS): a client is never told to speak in clear. The user name is the
  full address (``%EMAILADDRESS%``), as every door of this server expects.
- Request documents (Autodiscover) are parsed with ``defusedxml``: no
  entities, no external references (a POST body is hostile until proven not).

See Also: Thunderbird's config file format
(https://wiki.mozilla.org/Thunderbird:Autoconfiguration:ConfigFileFormat),
[MS-OXDSCLI] Autodiscover Publishing and Lookup Protocol (POX), Apple's
Configuration Profile Reference (``com.apple.mail.managed``), RFC 6186 (the
same doors as SRV records).
"""

from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass
from xml.etree import ElementTree as ET  # noqa: S405 - only to build documents; parsing goes through defusedxml

import defusedxml.ElementTree as SafeET

AUTODISCOVER_REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006"
AUTODISCOVER_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
OUTLOOK_RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
#: largest Autodiscover request body read (a real one is a few hundred bytes)
MAX_AUTODISCOVER_REQUEST = 16 * 1024
MOBILECONFIG_TYPE = "application/x-apple-aspen-config"
#: namespace of the profile's UUIDs: the same address always gets the same profile (a new download replaces it)
_PROFILE_NS = uuid.UUID("5d9f1f2c-61c4-4b47-9a55-0f1f8b3a7e21")


#: MTA-STS policy lifetime in seconds (RFC 8461 §3.2: weeks are advised)
MTA_STS_MAX_AGE = 604800


class AutoconfigError(ValueError):
    """A request document that cannot be read; the message says why."""


@dataclass(frozen=True, slots=True)
class Door:
    port: int
    socket_type: str  # Thunderbird's words: "SSL" (implicit TLS) or "STARTTLS"

    @property
    def implicit_tls(self) -> bool:
        return self.socket_type == "SSL"


@dataclass(frozen=True, slots=True)
class MailSettings:
    """Where a client of this server connects: TLS doors in order of preference."""

    hostname: str
    imap: tuple[Door, ...]
    smtp: tuple[Door, ...]
    display_name: str = "masante-mail"

    @classmethod
    def from_ports(cls, hostname: str, ports: dict[str, int], *, display_name: str = "masante-mail") -> MailSettings:
        """From listening ports by door name (``imaps``, ``imap``, ``submissions``, ``submission``)."""

        def doors(implicit: str, starttls: str) -> tuple[Door, ...]:
            out = []
            if ports.get(implicit, -1) > 0:
                out.append(Door(ports[implicit], "SSL"))
            if ports.get(starttls, -1) > 0:
                out.append(Door(ports[starttls], "STARTTLS"))
            return tuple(out)

        return cls(hostname, doors("imaps", "imap"), doors("submissions", "submission"), display_name)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _document(root: ET.Element) -> bytes:
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def thunderbird(settings: MailSettings, domain: str) -> bytes:
    """``config-v1.1.xml`` for ``domain``: one ``incomingServer type="imap"`` and one
    ``outgoingServer type="smtp"`` per listening TLS door, password authentication."""
    root = ET.Element("clientConfig", {"version": "1.1"})
    provider = _sub(root, "emailProvider", id=domain)
    _sub(provider, "domain", domain)
    _sub(provider, "displayName", f"{settings.display_name} ({domain})")
    _sub(provider, "displayShortName", settings.display_name)
    for kind, tag, doors in (("imap", "incomingServer", settings.imap), ("smtp", "outgoingServer", settings.smtp)):
        for door in doors:
            server = _sub(provider, tag, type=kind)
            _sub(server, "hostname", settings.hostname)
            _sub(server, "port", str(door.port))
            _sub(server, "socketType", door.socket_type)
            _sub(server, "authentication", "password-cleartext")  # AUTH PLAIN / LOGIN, inside TLS only
            _sub(server, "username", "%EMAILADDRESS%")
    return _document(root)


def autodiscover_address(body: bytes) -> str:
    """The ``EMailAddress`` of an Outlook POX Autodiscover request ([MS-OXDSCLI] §2.2.4.1)."""
    if len(body) > MAX_AUTODISCOVER_REQUEST:
        raise AutoconfigError("request too large")
    try:
        root = SafeET.fromstring(body)
    except (SafeET.ParseError, ValueError) as exc:  # defusedxml's refusals are ValueErrors
        raise AutoconfigError(f"not a well-formed XML document ({type(exc).__name__})") from None
    found = root.find(f"{{{AUTODISCOVER_REQUEST_NS}}}Request/{{{AUTODISCOVER_REQUEST_NS}}}EMailAddress")
    if found is None:
        found = root.find("Request/EMailAddress")  # some clients forget the namespace
    if found is None or not (found.text or "").strip():
        raise AutoconfigError("no Request/EMailAddress in the request")
    return (found.text or "").strip()


def autodiscover(settings: MailSettings, address: str) -> bytes:
    """The POX response: one IMAP and one SMTP ``Protocol`` (the preferred door of each)."""
    root = ET.Element("Autodiscover", {"xmlns": AUTODISCOVER_RESPONSE_NS})
    response = _sub(root, "Response", xmlns=OUTLOOK_RESPONSE_NS)
    account = _sub(response, "Account")
    _sub(account, "AccountType", "email")
    _sub(account, "Action", "settings")
    for kind, doors in (("IMAP", settings.imap), ("SMTP", settings.smtp)):
        if not doors:
            continue
        door = doors[0]
        proto = _sub(account, "Protocol")
        _sub(proto, "Type", kind)
        _sub(proto, "Server", settings.hostname)
        _sub(proto, "Port", str(door.port))
        _sub(proto, "DomainRequired", "off")
        _sub(proto, "LoginName", address)
        _sub(proto, "SPA", "off")
        # [MS-OXDSCLI] §2.2.4.2.1.1.2: Encryption overrides SSL; "SSL" is implicit TLS, "TLS" is STARTTLS
        _sub(proto, "Encryption", "SSL" if door.implicit_tls else "TLS")
        _sub(proto, "AuthRequired", "on")
        if kind == "SMTP":
            _sub(proto, "UsePOPAuth", "on")  # the same credentials as the IMAP account
    return _document(root)


def mobileconfig(settings: MailSettings, address: str) -> bytes:
    """An (unsigned) Apple configuration profile with one ``com.apple.mail.managed`` payload."""
    if not settings.imap or not settings.smtp:
        raise AutoconfigError("this server offers no IMAP or no SMTP submission over TLS")
    imap, smtp = settings.imap[0], settings.smtp[0]
    domain = address.rpartition("@")[2]
    ident = ".".join(reversed(domain.split(".")))
    account = {
        "PayloadType": "com.apple.mail.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.masante.mail.account",
        "PayloadUUID": str(uuid.uuid5(_PROFILE_NS, "account:" + address)).upper(),
        "PayloadDisplayName": f"{settings.display_name} ({address})",
        "EmailAccountDescription": f"{settings.display_name} ({domain})",
        "EmailAccountType": "EmailTypeIMAP",
        "EmailAddress": address,
        "IncomingMailServerHostName": settings.hostname,
        "IncomingMailServerPortNumber": imap.port,
        "IncomingMailServerUseSSL": True,  # on a STARTTLS door Apple Mail upgrades; never in clear
        "IncomingMailServerAuthentication": "EmailAuthPassword",
        "IncomingMailServerUsername": address,
        "OutgoingMailServerHostName": settings.hostname,
        "OutgoingMailServerPortNumber": smtp.port,
        "OutgoingMailServerUseSSL": True,
        "OutgoingMailServerAuthentication": "EmailAuthPassword",
        "OutgoingMailServerUsername": address,
        "OutgoingPasswordSameAsIncomingPassword": True,
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{ident}.masante.mail",
        "PayloadUUID": str(uuid.uuid5(_PROFILE_NS, "profile:" + address)).upper(),
        "PayloadDisplayName": f"{settings.display_name}: {address}",
        "PayloadRemovalDisallowed": False,
        "PayloadContent": [account],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML)


def mta_sts_policy(mx_host: str) -> str:
    """The MTA-STS policy (RFC 8461 §3.2) served at ``https://mta-sts.<domain>/.well-known/mta-sts.txt``:
    enforce TLS to our MX, whose certificate names ``mx_host``."""
    return f"version: STSv1\r\nmode: enforce\r\nmx: {mx_host}\r\nmax_age: {MTA_STS_MAX_AGE}\r\n"
