"""Delivery status notifications (RFC 3464): the multipart/report a sender gets back.

Invariants:
- A DSN is sent with the null reverse-path (``MAIL FROM:<>``) and is never
  itself answered by a DSN (RFC 3461 §6.2, RFC 5321 §4.5.5): no loops.
- The report has three parts: a human explanation (English and French), the
  machine-readable ``message/delivery-status``, and the original message
  (``message/rfc822``) or only its header (``text/rfc822-headers``) when the
  sender asked ``RET=HDRS``, for a success, or when the original is large.
- It carries ``Auto-Submitted: auto-replied`` (RFC 3834) and refers to the
  original's Message-ID, so that mail clients thread it under the message.
- What a client gave (ENVID, ORCPT) or a remote server answered (the diagnostic)
  is written into a field as one line with no control character: SMTP refuses
  such ENVID/ORCPT values already, and ``_field`` escapes any that reach here
  (from an older queue row, or another caller), so no value can start a field.

See Also: RFC 3461 (the SMTP DSN extension), RFC 3462/6522 (multipart/report),
RFC 3463 (status codes), RFC 3464 (the delivery-status format).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from mailserver.message.report import build_report
from mailserver.smtp import message as M

#: beyond this, only the original's header is returned (the sender has the message in their Sent folder)
RETURN_LIMIT = 5 * 2**20


class Action(enum.StrEnum):
    """RFC 3464 §2.3.3."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    recipient: str
    action: Action
    status: str  # RFC 3463, e.g. "5.1.1"
    diagnostic: str | None = None  # the SMTP reply that decided it, e.g. "550 5.1.1 No such mailbox"
    remote_mta: str | None = None
    original_recipient: str | None = None  # RFC 3461 ORCPT "rfc822;addr"
    last_attempt: dt.datetime | None = None
    will_retry_until: dt.datetime | None = None


_SUBJECT = {
    Action.FAILED: "Undelivered Mail Returned to Sender / Message non distribue",
    Action.DELAYED: "Delayed Mail (still being retried) / Message retarde",
    Action.DELIVERED: "Delivery Status Notification (Success) / Message distribue",
    Action.RELAYED: "Delivery Status Notification (Relayed) / Message transmis",
}

_EXPLAIN = {
    Action.FAILED: (
        "Your message could not be delivered to the recipient(s) below. This is a permanent failure:\n"
        "the message will not be retried.",
        "Votre message n'a pas pu être distribué aux destinataires ci-dessous. L'échec est définitif :\n"
        "le message ne sera pas renvoyé.",
    ),
    Action.DELAYED: (
        "Your message has not been delivered yet to the recipient(s) below. Delivery is still being\n"
        "retried; you will be told if it finally fails. You do not need to send it again.",
        "Votre message n'a pas encore été distribué aux destinataires ci-dessous. De nouvelles tentatives\n"
        "ont lieu ; vous serez prévenu en cas d'échec définitif. Inutile de le renvoyer.",
    ),
    Action.DELIVERED: (
        "Your message was delivered to the mailbox of the recipient(s) below.",
        "Votre message a été déposé dans la boîte aux lettres des destinataires ci-dessous.",
    ),
    Action.RELAYED: (
        "Your message was handed to the recipient's operator, which does not report deliveries:\n"
        "no further notification will come.",
        "Votre message a été transmis à l'opérateur du destinataire, qui ne signale pas les remises :\n"
        "aucune autre notification ne suivra.",
    ),
}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _field(text: str) -> str:
    """A value for a header field: one line, control characters as ``\\xNN`` (RFC 3461 §4: xtext is printable)."""
    return "".join(c if c >= " " and not ("\x7f" <= c <= "\x9f") else f"\\x{ord(c):02x}" for c in _one_line(text))


def _date(when: dt.datetime) -> str:
    return M.rfc5322_date(when)


def _report_fields(
    reporting_mta: str, envid: str | None, arrival: dt.datetime, recipients: Sequence[RecipientStatus]
) -> str:
    blocks = []
    head = [f"Reporting-MTA: dns; {reporting_mta}"]
    if envid:
        head.append(f"Original-Envelope-Id: {_field(envid)}")
    head.append(f"Arrival-Date: {_date(arrival)}")
    blocks.append("\r\n".join(head))
    for r in recipients:
        lines = []
        if r.original_recipient:
            lines.append(f"Original-Recipient: {_field(r.original_recipient)}")
        lines += [f"Final-Recipient: rfc822; {r.recipient}", f"Action: {r.action.value}", f"Status: {r.status}"]
        if r.remote_mta:
            lines.append(f"Remote-MTA: dns; {r.remote_mta}")
        if r.diagnostic:
            lines.append(f"Diagnostic-Code: smtp; {_field(r.diagnostic)}")
        if r.last_attempt:
            lines.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.will_retry_until:
            lines.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        blocks.append("\r\n".join(lines))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _human(action: Action, recipients: Sequence[RecipientStatus], reporting_mta: str, headers_only: bool) -> str:
    en, fr = _EXPLAIN[action]
    lines = [f"This is the mail system at {reporting_mta}.", "", en, ""]
    for r in recipients:
        lines.append(f"  <{r.recipient}>: {_one_line(r.diagnostic or r.status)}")
    lines += ["", "-----", "", f"Ceci est le système de messagerie de {reporting_mta}.", "", fr, ""]
    for r in recipients:
        lines.append(f"  <{r.recipient}> : {_one_line(r.diagnostic or r.status)}")
    if headers_only:
        lines += ["", "(Only the header of your message is attached. / Seul l'en-tête de votre message est joint.)"]
    return "\r\n".join(lines) + "\r\n"


def build(
    *,
    reporting_mta: str,
    sender: str,
    to: str,
    original: bytes,
    recipients: Sequence[RecipientStatus],
    arrival: dt.datetime,
    now: dt.datetime,
    envid: str | None = None,
    ret: str | None = None,
) -> bytes:
    """The DSN message, ``From: <sender>`` (a MAILER-DAEMON address) ``To: <to>``."""
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient")
    action = recipients[0].action
    success = action in (Action.DELIVERED, Action.RELAYED)
    headers_only = ret == "HDRS" or (ret is None and success) or len(original) > RETURN_LIMIT
    original_ids = M.values(original, "message-id")
    head = [
        f"From: Mail Delivery System <{sender}>",
        f"To: <{to}>",
        f"Subject: {_SUBJECT[action]}",
        f"Date: {_date(now)}",
        f"Message-ID: {M.message_id(reporting_mta)}",
        "Auto-Submitted: auto-replied",
    ]
    if original_ids:
        head.append(f"In-Reply-To: {original_ids[0]}")
        head.append(f"References: {original_ids[0]}")
    return build_report(
        head,
        report_type="delivery-status",
        preamble="This is a MIME-encapsulated message: a delivery status notification (RFC 3464).",
        human_text=_human(action, recipients, reporting_mta, headers_only),
        machine_part=_report_fields(reporting_mta, envid, arrival, recipients),
        original=M.split(original)[0] if headers_only else original,
        whole=not headers_only,
        boundary_tag="dsn",
    )
