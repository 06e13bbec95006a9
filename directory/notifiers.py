"""How a one-time code reaches its owner: a file in the outbox (the demo), an e-mail, an SMS gateway's hook.

Invariants:
- ``[enrolment] notifier`` picks one: ``file`` writes one file per code under
  ``outbox_dir`` (0600, in a 0700 directory), ``smtp`` mails the account's
  contact address (``second_factor_contacts.email``) through ``smtp_host``,
  ``sms`` POSTs ``{"to": phone, "text": ...}`` as JSON to ``sms_url`` (HTTPS
  checked against the system's CAs). Empty: enrolment is off.
- The code is the message and nothing else of it is logged: a failure is
  logged with the channel and the error's class, never the code or the text.
- ``send`` returns what the person is told ("a code was sent to ..."), with
  the contact masked (``p***@example.org``, ``+33******78``).
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol

import aiohttp

from directory.errors import DirectoryError
from mailserver.config import Config

SEND_TIMEOUT = 30.0


class NotifierError(DirectoryError):
    """The code could not be sent (no contact, a gateway that failed); the message says which."""


@dataclass(frozen=True, slots=True)
class Recipient:
    address: str  # the account's address (named in the message)
    email: str | None
    phone: str | None


class Notifier(Protocol):
    async def send(self, to: Recipient, code: str, *, device: str, minutes: int, tag: str) -> str: ...


def text_of(to: Recipient, code: str, device: str, minutes: int) -> str:
    return (
        f"Votre code masante-mail : {code}\n"
        f"Il permet d'inscrire l'appareil « {device} » pour {to.address}, pendant {minutes} minutes.\n"
        "Si vous n'avez rien demandé, ignorez ce message et changez votre mot de passe.\n"
    )


def _mask_email(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def _mask_phone(phone: str) -> str:
    return phone[:3] + "*" * max(0, len(phone) - 5) + phone[-2:]


@dataclass
class FileNotifier:
    """The demo's notifier: ``<outbox>/<tag>.txt``, one file per code."""

    outbox: Path

    async def send(self, to: Recipient, code: str, *, device: str, minutes: int, tag: str) -> str:
        self.outbox.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.outbox / f"{tag}.txt"
        body = f"To: {to.address}\n\n" + text_of(to, code, device, minutes)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        return f"the outbox ({self.outbox})"


@dataclass
class SmtpNotifier:
    host: str
    port: int
    sender: str

    async def send(self, to: Recipient, code: str, *, device: str, minutes: int, tag: str) -> str:
        if not to.email:
            raise NotifierError("no contact e-mail address for this account: ask your provider to set one")
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to.email
        msg["Subject"] = "Votre code masante-mail"
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        msg.set_content(text_of(to, code, device, minutes))

        def deliver() -> None:
            with smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT) as s:
                s.send_message(msg)

        try:
            await asyncio.to_thread(deliver)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifierError(f"the code could not be mailed ({type(exc).__name__}); try again later") from None
        return _mask_email(to.email)


@dataclass
class SmsNotifier:
    url: str

    async def send(self, to: Recipient, code: str, *, device: str, minutes: int, tag: str) -> str:
        if not to.phone:
            raise NotifierError("no contact phone number for this account: ask your provider to set one")
        payload = json.dumps({"to": to.phone, "text": text_of(to, code, device, minutes), "id": tag})
        try:
            timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
            async with aiohttp.ClientSession(timeout=timeout) as http:
                headers = {"Content-Type": "application/json"}
                async with http.post(self.url, data=payload, headers=headers) as resp:
                    if resp.status >= 300:
                        raise NotifierError(f"the SMS gateway answered {resp.status}; try again later")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NotifierError(f"the SMS gateway cannot be reached ({type(exc).__name__}); try again later") from None
        return _mask_phone(to.phone)


def notifier_for(config: Config) -> Notifier | None:
    """The configured notifier, or None when enrolment is off (``[enrolment] notifier`` empty)."""
    e = config.enrolment
    kind = e.notifier.strip().lower()
    if kind == "":
        return None
    if kind == "file":
        return FileNotifier(config.resolve(e.outbox_dir))
    if kind == "smtp":
        return SmtpNotifier(e.smtp_host, e.smtp_port, e.sender or f"no-reply@{config.server.hostname}")
    if kind == "sms":
        if not e.sms_url:
            raise NotifierError("[enrolment] notifier = sms needs sms_url")
        return SmsNotifier(e.sms_url)
    raise NotifierError(f"[enrolment] notifier: {e.notifier!r} is not file, smtp or sms")
