"""TLS contexts: one profile for every listener and for outbound relay.

The MSSanté profile (Référentiel #2 ECO.1.1.1-1.1.3): TLS 1.2 at least, and for
TLS 1.2 only the four ECDHE-RSA suites below; TLS 1.3 may be offered (its suites
are all AEAD). Hence RSA certificates on both sides. Compression and
renegotiation are off.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

MSSANTE_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-RSA-AES256-GCM-SHA384",  # 0xC030
        "ECDHE-RSA-AES128-GCM-SHA256",  # 0xC02F
        "ECDHE-RSA-AES256-SHA384",  # 0xC028
        "ECDHE-RSA-AES128-SHA256",  # 0xC027
    )
)


def _harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(MSSANTE_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    client_ca_file: Path | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context. With ``client_ca_file`` a client certificate is asked for and,
    when offered, must chain to that CA (required if ``require_client_cert``)."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if client_ca_file is not None:
        ctx.load_verify_locations(cafile=str(client_ca_file))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def client_context(
    ca_file: Path | None,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` (the system store if None), presenting
    ``cert_file`` when given (mutual TLS between operators)."""
    ctx = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    if ca_file is None:
        ctx.load_default_certs()
    else:
        ctx.load_verify_locations(cafile=str(ca_file))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None:
        ctx.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return ctx


def peer_subject_dn(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The verified peer certificate's subject as an RFC 4514 string (most specific RDN first,
    as the national whitelist writes ``DNCertificatOperateur``), or None without a certificate."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def peer_key_type(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> str | None:
    """The peer certificate's public key type (``RSA``, ``EC``, ``Ed25519``, ``Ed448``, ``DSA``, or the
    key class name), or None without a certificate. OpenSSL offers no hook to refuse a key type during
    the handshake, so the listener checks it once the handshake is done."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    key = x509.load_der_x509_certificate(der).public_key()
    for kind, name in (
        (rsa.RSAPublicKey, "RSA"),
        (ec.EllipticCurvePublicKey, "EC"),
        (ed25519.Ed25519PublicKey, "Ed25519"),
        (ed448.Ed448PublicKey, "Ed448"),
        (dsa.DSAPublicKey, "DSA"),
    ):
        if isinstance(key, kind):
            return name
    return type(key).__name__


# --- client certificates bound to accounts (SASL EXTERNAL) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """What names a certificate: the SHA-256 of its DER (hex), its subject and issuer (RFC 4514), its end."""

    fingerprint: str
    subject_dn: str
    issuer_dn: str
    not_after: dt.datetime


def certificate_facts(der: bytes) -> CertificateFacts:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return CertificateFacts(
        hashlib.sha256(der).hexdigest(),
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        cert.not_valid_after_utc,
    )


def peer_certificate(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The DER of the peer's certificate, verified by the handshake against the context's CA, or None."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True) or None


def load_certificate(path: Path) -> bytes:
    """The DER of the first certificate of a PEM (or DER) file. Raises ValueError with a sentence."""
    from cryptography import x509

    data = path.read_bytes()
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise ValueError(f"{path} holds no X.509 certificate (PEM or DER expected)") from None
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


def issued_by_bundle(der: bytes, ca_file: Path) -> bool:
    """True if the certificate is signed by one of the certificates of the PEM bundle ``ca_file``, within its
    validity (the handshake checks the whole chain at every connection; this is the operator's early warning)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    now = dt.datetime.now(dt.UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    for ca in x509.load_pem_x509_certificates(ca_file.read_bytes()):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False
