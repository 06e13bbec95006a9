"""Who a message says it is from, and whether the door may believe it (pure decisions).

The admission service hands these functions plain values read from the one
``ParsedMessage`` (header fields with RFC 2047 encoded words already decoded)
and the DKIM results intake already computed; nothing here parses a message,
reads storage or speaks SMTP. Each refusal carries its reply from
``policies.reply``.

Invariants:
- MX door (another operator's MTA): every ``From:`` domain is the envelope
  sender's domain, or is aligned with a passing DKIM signature (``d=`` equal
  to or a parent of the From domain: DMARC relaxed alignment, RFC 7489 §3.1.1).
  For a null reverse-path the envelope names no domain: the From domain must
  then be (under) a domain the peer's certificate is listed for or the MTA
  host name its certificate names (``MAILER-DAEMON@mx.operator``), or be
  DKIM-aligned.
- MX door: a ``From:`` in one of our own domains is refused, whatever the
  signatures: only our own users write from our domains, and they come in by
  submission.
- MX door: a null reverse-path (RFC 5321 §4.5.5) carries only a report
  (``multipart/report``, RFC 6522: delivery status or message disposition),
  and never goes to a patient.
- Submission (RFC 6409 §8): ``From:`` is required (a message without it is
  refused, not completed: the client must say who writes), and ``From:``,
  ``Sender:``, ``Resent-From:`` and ``Resent-Sender:`` hold only the
  authenticated address, compared after decoding encoded words.
- Both doors: a display name that holds an address other than its mailbox's
  own (``"dr.martin@hopital.fr" <evil@x>``) is refused.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from policies import reply as R
from policies.decision import Decision

#: an address as a reader would see one in a display name (RFC 5322 §3.4.1, loosely: the eye is not strict)
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>()\[\]\"',;:@]+@[^\s<>()\[\]\"',;:@]+\.[^\s<>()\[\]\"',;:@]+")

#: RFC 6522 report types a null reverse-path may carry: delivery status (RFC 3464, RFC 6533) and
#: message disposition notifications (RFC 8098 §2.1: sent with a null reverse-path)
REPORT_TYPES = frozenset(
    {"delivery-status", "global-delivery-status", "disposition-notification", "global-disposition-notification"}
)


@dataclass(frozen=True, slots=True)
class Mailbox:
    """One mailbox of an originator field: its display name (decoded) and its address."""

    name: str | None
    address: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2].lower()


@dataclass(frozen=True, slots=True)
class Originator:
    """The originator fields of a message (RFC 5322 §3.6.2, §3.6.6), encoded words decoded."""

    from_: tuple[Mailbox, ...]
    sender: tuple[Mailbox, ...]
    resent_from: tuple[Mailbox, ...]
    resent_sender: tuple[Mailbox, ...]
    has_from_field: bool
    content_type: str  # of the top-level entity, lower case
    report_type: str | None  # its ``report-type`` parameter, lower case

    @property
    def mailboxes(self) -> tuple[Mailbox, ...]:
        return (*self.from_, *self.sender, *self.resent_from, *self.resent_sender)


def aligned(domain: str, signer: str) -> bool:
    """DMARC relaxed alignment (RFC 7489 §3.1.1), bounded to the signer: ``signer`` is ``domain`` or a parent."""
    d, s = domain.lower().rstrip("."), signer.lower().rstrip(".")
    return bool(s) and (d == s or d.endswith("." + s))


def check_display_names(mailboxes: Iterable[Mailbox]) -> Decision:
    """A display name may not show an address other than the mailbox's own."""
    for m in mailboxes:
        if not m.name:
            continue
        for shown in _ADDRESS_IN_TEXT.findall(m.name):
            if shown.lower().strip(".") != m.address.lower():
                return Decision.refuse(R.DISPLAY_NAME_ADDRESS, "display-name-address")
    return Decision.allow("display-names-ok")


def check_submitted(origin: Originator, own_address: str) -> Decision:
    """Submission: From present; From, Sender, Resent-From and Resent-Sender only the authenticated address."""
    own = own_address.lower()
    if not origin.has_from_field or not origin.from_:
        return Decision.refuse(R.FROM_MISSING, "from-missing")
    if any(m.address.lower() != own for m in (*origin.from_, *origin.sender)):
        return Decision.refuse(R.FROM_NOT_OWNED, "from-not-owned")
    if any(m.address.lower() != own for m in (*origin.resent_from, *origin.resent_sender)):
        return Decision.refuse(R.RESENT_NOT_OWNED, "resent-not-owned")
    return check_display_names(origin.mailboxes)


def check_mx(
    origin: Originator,
    *,
    envelope_domain: str | None,
    peer_domains: Collection[str],
    dkim_pass: Collection[str],
    local_domains: Collection[str],
    to_patient: bool,
) -> Decision:
    """MX door. ``envelope_domain``: the MAIL FROM domain, None for the null reverse-path; ``peer_domains``: the
    trust-space domains the peer's certificate is listed for; ``dkim_pass``: the ``d=`` of passing signatures;
    ``local_domains``: which of the From domains are ours; ``to_patient``: a recipient is a patient."""
    if envelope_domain is None:
        if to_patient:
            return Decision.refuse(R.NULL_SENDER_TO_PATIENT, "null-sender-to-patient")
        if origin.content_type != "multipart/report" or origin.report_type not in REPORT_TYPES:
            return Decision.refuse(R.NULL_SENDER_NOT_A_REPORT, "null-sender-not-a-report")
    for m in origin.from_:
        if m.domain in local_domains:
            return Decision.refuse(R.FROM_LOCAL_DOMAIN, "from-local-domain")
    allowed: Sequence[str] = [envelope_domain] if envelope_domain is not None else list(peer_domains)
    for m in origin.from_:
        by_envelope = (
            m.domain == envelope_domain if envelope_domain is not None else any(aligned(m.domain, p) for p in allowed)
        )
        if not by_envelope and not any(aligned(m.domain, d) for d in dkim_pass):
            return Decision.refuse(R.FROM_NOT_ALIGNED, "from-not-aligned")
    return check_display_names(origin.mailboxes)
