"""DKIM (RFC 6376) keys, signing and verification, on dkimpy.

Invariants:
- Keys are RSA 2048 (RFC 8301: verifiers accept 1024 and up, signers use at
  least 2048), signatures ``rsa-sha256`` with ``relaxed/relaxed``
  canonicalisation, so that header refolding by a relay does not break them.
- Verification does no I/O: the caller finds the TXT records first (a key
  table, or DNS) and hands them in; a missing record is a ``permerror`` (no key
  for this signature), an unreachable one a ``temperror``.
- A domain's private keys live in ``<dkim_dir>/<domain>/<selector>.key``
  (0600), and ``<dkim_dir>/<domain>/selector`` names the one used for signing.
  Private keys are never logged.

See Also: RFC 6376 (DKIM), RFC 8301 (algorithm update), RFC 8601 (Authentication-Results).
"""

from __future__ import annotations

import base64
import enum
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from crypto.pki import write_private

KEY_BITS = 2048
#: headers signed when present (RFC 6376 §5.4.1), plus the MSSanté end-of-conversation marker
SIGNED_HEADERS: tuple[str, ...] = (
    "from",
    "sender",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "to",
    "cc",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "content-disposition",
    "in-reply-to",
    "references",
    "x-mss-mes",
)
#: dkimpy reports through its logger what we return as a reason; keep it quiet
_QUIET = logging.getLogger("crypto.dkim.dkimpy")
_QUIET.setLevel(logging.CRITICAL)
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_SELECTOR = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")


class DkimError(Exception):
    """A key, a record or a selector that cannot be used; the message says why."""


class Status(enum.StrEnum):
    """RFC 8601 §2.7.1 result values for the ``dkim`` method."""

    PASS = "pass"  # noqa: S105 - a result name, not a password
    FAIL = "fail"
    NEUTRAL = "neutral"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True, slots=True)
class KeyPair:
    private_pem: bytes
    record: str  # the TXT record to publish: "v=DKIM1; k=rsa; p=..."


@dataclass(frozen=True, slots=True)
class SignatureRef:
    """Where a DKIM-Signature header field points: its key is at ``<selector>._domainkey.<domain>``."""

    index: int
    domain: str
    selector: str
    b_prefix: str  # the first characters of b= (RFC 6008 header.b), to tell signatures apart

    @property
    def key_name(self) -> str:
        return key_name(self.domain, self.selector)


@dataclass(frozen=True, slots=True)
class Result:
    status: Status
    domain: str | None
    selector: str | None
    b_prefix: str | None
    reason: str


def key_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}".lower()


def check_selector(selector: str) -> str:
    if not _SELECTOR.match(selector) or len(selector) > 63:
        raise DkimError(f"{selector!r} is not a valid DKIM selector (letters, digits, hyphens, dots)")
    return selector


# --- keys -------------------------------------------------------------------------------------------------


def generate_key() -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return KeyPair(pem, record_for(pem))


def record_for(private_pem: bytes) -> str:
    """The TXT record publishing the public half of ``private_pem`` (RFC 6376 §3.6.1)."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError("a DKIM signing key must be RSA")
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode('ascii')}"


def check_record(record: str) -> str:
    """The record, normalised (whitespace between chunks removed), if dkimpy can use it; else DkimError."""
    text = " ".join(record.replace('"', " ").split())
    try:
        pk, _size, _ktag, _tls = dkim.evaluate_pk(b"record", text.encode("ascii"))
    except (dkim.DKIMException, UnicodeEncodeError) as exc:
        raise DkimError(f"not a usable DKIM key record: {exc}") from None
    if pk is None:
        raise DkimError("the record's service type excludes e-mail (s=)")
    return text


def txt_chunks(record: str, size: int = 255) -> list[str]:
    """A record split into the <=255-octet character-strings a DNS TXT record is made of."""
    return [record[i : i + size] for i in range(0, len(record), size)]


def domain_dir(dkim_dir: Path, domain: str) -> Path:
    return dkim_dir / domain.lower()


def write_key(dkim_dir: Path, domain: str, selector: str, private_pem: bytes) -> Path:
    """Store a new signing key and make it the domain's current one (atomic switch)."""
    check_selector(selector)
    d = domain_dir(dkim_dir, domain)
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = d / f"{selector}.key"
    if path.exists():
        raise DkimError(f"a key for selector {selector} of {domain} already exists ({path})")
    write_private(path, private_pem)
    tmp = d / "selector.tmp"
    tmp.write_text(selector + "\n", encoding="ascii")
    os.replace(tmp, d / "selector")
    return path


def load_current(dkim_dir: Path, domain: str) -> tuple[str, bytes] | None:
    """The (selector, private PEM) a domain signs with, or None if it has no key."""
    d = domain_dir(dkim_dir, domain)
    try:
        selector = (d / "selector").read_text(encoding="ascii").strip()
        return selector, (d / f"{check_selector(selector)}.key").read_bytes()
    except FileNotFoundError:
        return None


# --- signing ----------------------------------------------------------------------------------------------


def sign(
    raw: bytes, *, domain: str, selector: str, private_pem: bytes, headers: Sequence[str] = SIGNED_HEADERS
) -> bytes:
    """``raw`` with a DKIM-Signature header field prepended. Raises DkimError."""
    try:
        present = {name.decode("ascii", "replace").lower() for name, _value in dkim.rfc822_parse(raw)[0] if name}
        include = [h for h in headers if h in present]
        if "from" not in include:
            raise DkimError("a message without a From header field cannot be signed (RFC 6376 §5.4)")
        header = dkim.sign(
            raw,
            selector.encode("ascii"),
            domain.lower().encode("ascii"),
            private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[h.encode("ascii") for h in include],
        )
    except dkim.DKIMException as exc:
        raise DkimError(f"cannot sign: {exc}") from None
    return bytes(header) + raw


# --- verification -----------------------------------------------------------------------------------------


def signatures(raw: bytes) -> list[SignatureRef]:
    """The DKIM-Signature header fields of ``raw``, topmost first (unparseable ones are skipped)."""
    try:
        fields, _body = dkim.rfc822_parse(raw)
    except dkim.DKIMException:
        return []
    out: list[SignatureRef] = []
    index = 0
    for name, value in fields:
        if name.lower() != b"dkim-signature":
            continue
        try:
            tags = dkim.util.parse_tag_value(value)
            d = tags[b"d"].decode("ascii").lower()
            s = tags[b"s"].decode("ascii")
            b = re.sub(rb"\s+", b"", tags.get(b"b", b""))[:8].decode("ascii")
            out.append(SignatureRef(index, d, s, b))
        except (KeyError, UnicodeDecodeError, dkim.util.InvalidTagValueList):
            pass
        index += 1
    return out


def verify(raw: bytes, sig: SignatureRef, lookup: Callable[[str], bytes | None]) -> Result:
    """Verify one signature; ``lookup(key_name)`` returns the TXT record or None (no such key)."""
    missing: list[str] = []

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        found = lookup(name.decode("ascii", "replace").rstrip(".").lower())
        if found is None:
            missing.append(sig.key_name)
        return found

    def result(status: Status, reason: str) -> Result:
        return Result(status, sig.domain, sig.selector, sig.b_prefix, reason)

    d = dkim.DKIM(raw, minkey=1024, logger=_QUIET)
    try:
        ok = d.verify(idx=sig.index, dnsfunc=dnsfunc)
    except dkim.DnsTimeoutError as exc:
        return result(Status.TEMPERROR, f"key lookup: {exc}")
    except dkim.ValidationError as exc:
        if "body hash mismatch" in str(exc):
            return result(Status.FAIL, "body hash does not match")
        return result(Status.PERMERROR, f"malformed signature: {exc}")
    except dkim.DKIMException as exc:
        return result(Status.PERMERROR, str(exc))
    if ok:
        return result(Status.PASS, "good signature")
    if missing:
        return result(Status.PERMERROR, f"no key published at {sig.key_name}")
    return result(Status.FAIL, "signature does not match")
