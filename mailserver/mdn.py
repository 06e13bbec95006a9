"""Message disposition notifications (RFC 8098) in the ANS layout, built and sent by the server.

The layout (ANS "struct-msg-mdn", the MSSanté rule): a ``multipart/report;
report-type=disposition-notification`` of three parts, in this order:
1. ``text/plain``, French then English: which message (its subject and date,
   never its body) and what became of it; for an error, the error;
2. ``message/disposition-notification``: ``Reporting-UA``, ``Original-Recipient``
   (when the message carries one), ``Final-Recipient``, ``Original-Message-ID``,
   ``Disposition`` and, for an error, ``Error``;
3. the original: its header (``text/rfc822-headers``) for a read receipt; the whole
   message (``message/rfc822``, up to ``RETURN_LIMIT``) for a document the vault
   could not integrate, as the ANS layout asks (the sender resubmits it once fixed).

When the server sends one (who may, and to whom: ``policies.mdn``):
- (a) A read receipt the patient asks for. A mail client normally sends its MDN
  itself, through submission (RFC 8098 §2.1); patients' clients (IMAP apps) cannot
  be relied on to, and a patient may not write a new message to a professional
  anyway. So the patient's client *asks the server*: setting the keyword
  ``$MDNSent`` (RFC 3503) on a message that carries ``Disposition-Notification-To``
  makes the server send the MDN on the patient's behalf
  (``manual-action/MDN-sent-manually; displayed``), in the unit of work that sets the
  keyword. The keyword is then kept: a STORE cannot remove it (RFC 3503 §3.1: once
  set it is not unset), so one message copy gives one MDN, however often a client
  sets it again.
- (b) Automatically, when a document of a professional's message cannot be
  integrated into the patient's vault: the message is delivered to INBOX unfiled,
  and the MDN (``automatic-action/MDN-sent-automatically; processed/Error:
  207^<libellé>``, the ANS form, plus RFC 8098's ``Error`` field) names the
  document and why; sent in the delivering unit of work.

Invariants:
- An MDN goes out with the null reverse-path (RFC 8098 §2.1) and carries
  ``Auto-Submitted`` (RFC 3834): it is never answered by a DSN or an MDN.
- It goes where a DSN goes, through the same two paths: a local address gets it in
  its INBOX through ``delivery.deliver``; an address at a trust-space operator gets
  it through the outbound queue (one sealed row); any other address gets nothing.
- Every value that came from the network (subject, date, message ids, the
  ``Original-Recipient``, a document's name, an error text) is written as one line
  with no control character (``field``): none can start a header field.
"""

from __future__ import annotations

import datetime as dt
import email.header
import email.utils
import logging
import uuid
from dataclasses import dataclass

from directory.addresses import Address
from directory.errors import InvalidAddress
from directory.trust import TrustSpace
from mailserver.bodies import seal_for_queue
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.message import ParsedMessage
from mailserver.message.report import build_report
from mailserver.store.models import Account, AccountStatus
from mailserver.store.uow import UnitOfWork
from mailserver.text import escape
from policies import mdn as P
from policies.content import safe_name

log = logging.getLogger("masante.mdn")

#: past this, an error MDN returns only the original's header (the sender keeps the message)
RETURN_LIMIT = 5 * 2**20
#: the longest value taken from a message into a field or a line of text
FIELD_LIMIT = 300

_CONTROL_TEXT = "Ceci est un accusé de traitement (MDN, RFC 8098). / This is a message disposition notification."


def field(value: str, limit: int = FIELD_LIMIT) -> str:
    """A network value fit for a header field or a line of text: one line, control characters escaped, bounded."""
    return escape(" ".join(value.split()), backslash=False)[:limit]


@dataclass(frozen=True, slots=True)
class Notification:
    """What one MDN says: about which message, for whom, and what happened to it."""

    final_recipient: str  # our account's address, for whom the MDN is sent
    disposition: str  # RFC 8098 §3.2.6, e.g. ``manual-action/MDN-sent-manually; displayed``
    error: str | None = None  # the ANS ``code^libellé``, for a failure
    automatic: bool = False


def _original_recipient(original: ParsedMessage) -> str | None:
    """RFC 8098 §3.2.3: the ``Original-Recipient`` field of the message (``rfc822;addr``), when it has one."""
    value = original.get("original-recipient")
    if not value:
        return None
    kind, sep, addr = field(value).partition(";")
    return f"{kind.strip() or 'rfc822'};{addr.strip()}" if sep and addr.strip() else None


def _subject_of(original: ParsedMessage) -> str:
    return field(next(iter(original.decoded("subject")), "")) or "(sans objet)"


def _encoded(text: str) -> str:
    return text if text.isascii() else email.header.Header(text, "utf-8").encode()


def _human(n: Notification, subject: str, date: str) -> str:
    error = field(n.error or "")
    if n.error is None:
        fr = (
            f"Le message « {subject} » du {date}, adressé à {n.final_recipient}, a été affiché par son destinataire.",
            "Cet accusé ne dit rien de ce que le destinataire en a compris ou fait.",
        )
        en = (
            f'The message "{subject}" of {date}, sent to {n.final_recipient}, was displayed by its recipient.',
            "This notification says nothing of whether it was read or understood.",
        )
    else:
        fr = (
            f"Le message « {subject} » du {date}, adressé à {n.final_recipient}, a été remis, mais son document "
            "n'a pas pu être intégré automatiquement dans le coffre-fort (Documents) du patient pour la raison "
            f"suivante : {error}",
            "Le message d'origine est joint : corrigez le document et envoyez-le à nouveau.",
        )
        en = (
            f'The message "{subject}" of {date}, sent to {n.final_recipient}, was delivered, but its document '
            f"could not be integrated into the patient's vault (Documents): {error}",
            "The original message is attached: correct the document and send it again.",
        )
    return "\r\n".join([*fr, "", "-----", "", *en]) + "\r\n"


def _report_fields(n: Notification, original: ParsedMessage, reporting_ua: str) -> str:
    lines = [f"Reporting-UA: {reporting_ua}; masante-mail"]
    if (orcpt := _original_recipient(original)) is not None:
        lines.append(f"Original-Recipient: {orcpt}")
    lines.append(f"Final-Recipient: rfc822;{n.final_recipient}")
    if (message_id := original.get("message-id")) is not None:
        lines.append(f"Original-Message-ID: {field(message_id)}")
    if n.error is None:
        lines.append(f"Disposition: {n.disposition}")
    else:
        error = field(n.error)
        lines.append(f"Disposition: {n.disposition}: {error}")  # the ANS layout's form
        lines.append(f"Error: {error}")  # RFC 8098 §3.2.7
    return "\r\n".join(lines) + "\r\n"


def build(n: Notification, *, original: ParsedMessage, to: str, hostname: str, now: dt.datetime) -> bytes:
    """The MDN ``From: <n.final_recipient>`` ``To: <to>`` about ``original``."""
    subject = _subject_of(original)
    date = field(original.get("date") or "") or "(date inconnue)"
    title = subject if n.error is None else f"[KO Intégration système !][{P.INTEGRATION_ERROR_CODE}] {subject}"
    head = [
        f"From: <{n.final_recipient}>",
        f"To: <{to}>",
        f"Subject: {_encoded(title)}",
        f"Date: {email.utils.format_datetime(now.astimezone(dt.UTC))}",
        f"Message-ID: <{uuid.uuid4().hex}@{hostname}>",
        "Auto-Submitted: auto-replied",
    ]
    if (message_id := original.get("message-id")) is not None:
        head += [f"In-Reply-To: {field(message_id)}", f"References: {field(message_id)}"]
    whole = n.error is not None and original.size <= RETURN_LIMIT
    return build_report(
        head,
        report_type="disposition-notification",
        preamble=_CONTROL_TEXT,
        human_text=_human(n, subject, date),
        machine_part=_report_fields(n, original, hostname),
        original=original.raw if whole else original.header,
        whole=whole,
        boundary_tag="mdn",
    )


def integration_error(original: ParsedMessage, account: Account) -> str | None:
    """The ANS ``code^libellé`` of the package of ``original`` that ``account``'s vault cannot integrate; None if
    there is none (``policies.mdn.integration_failure``)."""
    ins = account.address.rpartition("@")[0]
    part = P.integration_failure(original.content, ins)
    if part is None:
        return None
    return f"{P.INTEGRATION_ERROR_CODE}^{field(f'Document non intégré ({safe_name(part.filename)}): {part.problem}')}"


def _wrote(original: ParsedMessage) -> list[str]:
    return [a for name in ("from", "sender", "reply-to", "return-path") for a in original.addresses(name)]


class Notifier:
    """Sends MDNs in the caller's unit of work (``policies.mdn`` decides whether, and to whom)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.trust = TrustSpace(ctx)

    async def displayed(self, uow: UnitOfWork, account: Account, original: ParsedMessage) -> str | None:
        """The patient's client set ``$MDNSent`` on ``original``: the read receipt it asks for, if any is due.
        Returns "local", "queued" or None (none asked, or none may be sent)."""
        requested = original.addresses("disposition-notification-to")
        to = P.manual_to(requested, _wrote(original))
        if to is None:
            if requested:
                log.info("mdn.not-sent", extra={"fields": {"reason": "not to the message's writer"}})
            return None
        return await self._send(uow, Notification(account.address, P.DISPLAYED), original, to)

    async def integration_failed(
        self, uow: UnitOfWork, account: Account, original: ParsedMessage, *, return_path: str
    ) -> str | None:
        """A document of ``original`` could not go into ``account``'s vault: the automatic MDN that says so."""
        error = integration_error(original, account)
        to = P.automatic_to(original.addresses("disposition-notification-to"), return_path)
        if error is None or to is None:
            return None
        note = Notification(account.address, P.INTEGRATION_FAILED, error=error, automatic=True)
        return await self._send(uow, note, original, to)

    async def _send(self, uow: UnitOfWork, n: Notification, original: ParsedMessage, to: str) -> str | None:
        try:
            addr = Address.parse(to)
        except InvalidAddress:
            log.info("mdn.not-sent", extra={"fields": {"reason": "malformed address"}})
            return None
        now = self.ctx.clock()
        hostname = self.ctx.config.server.hostname
        report = build(n, original=original, to=str(addr), hostname=hostname, now=now)
        kind = "error" if n.error else "displayed"
        if await uow.domains.get(addr.domain) is not None:
            target = await uow.accounts.by_address(str(addr))
            if target is None or target.status is not AccountStatus.ACTIVE or target.wrapped_key is None:
                log.info("mdn.not-sent", extra={"fields": {"reason": "local recipient gone", "kind": kind}})
                return None
            await deliver(uow, self.ctx.keyring, report, [target], actor=n.final_recipient, source="mdn")
            uow.audit(n.final_recipient, "mdn.send", f"account:{target.id}", "ok", kind)
            log.info("mdn.delivered", extra={"fields": {"account": target.owner_id, "kind": kind}})
            return "local"
        if await self.trust.lookup(addr.domain) is None:
            log.info("mdn.not-sent", extra={"fields": {"reason": "outside the trust space", "kind": kind}})
            return None
        sealed = seal_for_queue(self.ctx.keyring, report)
        row = await uow.queue.enqueue(  # with the null reverse-path (RFC 8098 §2.1)
            sealed.id,
            body=sealed.body,
            wrapped_key=sealed.wrapped_key,
            size=len(report),
            mail_from="",
            rcpt=str(addr),
            now=now,
            expires_at=now + dt.timedelta(seconds=self.ctx.config.queue.bounce_after),
            msg_id=str(uuid.uuid4()),
            body_8bit=not report.isascii(),
        )
        uow.audit(n.final_recipient, "mdn.send", f"queue:{row.id}", "ok", f"{kind}; {addr.domain}")
        log.info("mdn.queued", extra={"fields": {"domain": addr.domain, "kind": kind}})
        return "queued"
