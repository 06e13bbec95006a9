"""Handing one queued message to another operator's MTA: SMTP client on aiosmtplib, mutual TLS always.

Invariants:
- Nothing is sent in clear: a peer that does not offer STARTTLS, or whose
  certificate does not verify against the trust-space CA and its host name, is
  a temporary failure (``4.7.4`` / ``4.7.5``), never a plaintext delivery.
- Our client certificate (``tls.client_cert``) is presented: the peer checks
  it against the trust space, as our MX checks theirs.
- The sender's RFC 3461 parameters are passed on when the peer offers DSN (it
  then reports deliveries itself); BODY=8BITMIME and SMTPUTF8 when the message
  needs them (a message needing SMTPUTF8 to a peer without it fails ``5.6.7``).
- The outcome is a value: delivered, temporary (retry) or permanent (bounce),
  with the peer's reply as the DSN's diagnostic.

See Also: RFC 5321 §4.5.4 (retry), RFC 3207 (STARTTLS), RFC 3461 §5 (relaying DSN parameters).
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass

import aiosmtplib

from mailserver.smtp.params import xtext_encode
from mailserver.store.models import QueuedMessage


class Kind(enum.StrEnum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Kind
    status: str  # RFC 3463 enhanced status, e.g. "4.4.1"
    diagnostic: str  # the peer's reply, or what happened ("connection refused")
    remote_mta: str | None = None
    peer_reports_dsn: bool = False  # the peer took the NOTIFY parameters (it will report success itself)


def _status_of(code: int, message: str) -> str:
    first = message.split(" ", 1)[0]
    parts = first.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and first[0] == str(code)[0]:
        return first
    return f"{str(code)[0]}.0.0"


def temporary(status: str, diagnostic: str, remote: str | None = None) -> Outcome:
    return Outcome(Kind.TEMPORARY, status, diagnostic, remote)


def permanent(status: str, diagnostic: str, remote: str | None = None) -> Outcome:
    return Outcome(Kind.PERMANENT, status, diagnostic, remote)


async def send(
    row: QueuedMessage,
    body: bytes,
    *,
    host: str,
    port: int,
    helo: str,
    tls_context: ssl.SSLContext,
    connect_timeout: float,
    command_timeout: float,
    address: str | None = None,
) -> Outcome:
    """One attempt to deliver ``row`` (whose bytes are ``body``) to ``host:port`` (connecting to ``address``
    when the caller resolved it; the certificate is still checked against ``host``)."""
    smtp = aiosmtplib.SMTP(
        hostname=address or host,
        port=port,
        local_hostname=helo,
        timeout=command_timeout,
        use_tls=False,
        start_tls=False,
        tls_context=tls_context,
    )
    where = f"{host}:{port}" if address in (None, host) else f"{host}[{address}]:{port}"
    try:
        await smtp.connect(timeout=connect_timeout)
    except aiosmtplib.SMTPResponseException as exc:
        return _refused(exc, host, stage="greeting")
    except (aiosmtplib.SMTPException, OSError) as exc:
        return temporary("4.4.1", f"cannot connect to {where}: {_why(exc)}", host)
    try:
        await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            return temporary("4.7.4", f"{where} does not offer STARTTLS: mail is never sent in clear", host)
        try:
            await smtp.starttls(tls_context=tls_context, server_hostname=host)
        except (ssl.SSLError, ssl.CertificateError) as exc:
            return temporary("4.7.5", f"TLS with {where} failed: {_why(exc)}", host)
        await smtp.ehlo()
        dsn = smtp.supports_extension("dsn")
        mail_options: list[str] = []
        if smtp.supports_extension("size"):
            mail_options.append(f"SIZE={len(body)}")
        if row.body_8bit and smtp.supports_extension("8bitmime"):
            mail_options.append("BODY=8BITMIME")
        encoding = "ascii"
        if row.smtputf8:
            if not smtp.supports_extension("smtputf8"):
                return permanent("5.6.7", f"{where} does not offer SMTPUTF8, which this message needs", host)
            mail_options.append("SMTPUTF8")
            encoding = "utf-8"
        rcpt_options: list[str] = []
        if dsn:
            if row.ret:
                mail_options.append(f"RET={row.ret}")
            if row.envid:
                mail_options.append(f"ENVID={xtext_encode(row.envid)}")
            if row.notify:
                rcpt_options.append(f"NOTIFY={row.notify}")
            if row.orcpt:
                addr_type, _, addr = row.orcpt.partition(";")
                rcpt_options.append(f"ORCPT={addr_type};{xtext_encode(addr)}")
        await smtp.mail(row.mail_from, options=mail_options, encoding=encoding)
        await smtp.rcpt(row.rcpt_to, options=rcpt_options, encoding=encoding)
        response = await smtp.data(body)
        return Outcome(
            Kind.DELIVERED,
            _status_of(response.code, response.message),
            f"{response.code} {response.message}",
            host,
            peer_reports_dsn=dsn and bool(row.notify),
        )
    except aiosmtplib.SMTPResponseException as exc:
        return _refused(exc, host, stage="transaction")
    except (aiosmtplib.SMTPException, OSError, ssl.SSLError) as exc:
        return temporary("4.4.2", f"connection with {where} lost: {_why(exc)}", host)
    finally:
        if smtp.is_connected:
            try:
                await smtp.quit(timeout=5)
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()


def _refused(exc: aiosmtplib.SMTPResponseException, host: str, *, stage: str) -> Outcome:
    text = " ".join(f"{exc.code} {exc.message}".split())
    status = _status_of(exc.code, exc.message)
    if 500 <= exc.code < 600:
        return permanent(status, text, host)
    return temporary(status if status[0] == "4" else "4.0.0", text, host)


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:300]
