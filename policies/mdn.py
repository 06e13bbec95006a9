"""When a message disposition notification (RFC 8098) is sent, and to whom: pure decisions.

Invariants:
- Nothing is sent unless the message asks for it: a ``Disposition-Notification-To``
  field with an address (RFC 8098 §2.1). Only the first address is answered: a
  message cannot make the server write to a list.
- A notification sent on a patient's behalf (``manual``: the patient's client set
  ``$MDNSent``) goes only to someone who wrote the message: an address of its
  ``From``, ``Sender``, ``Reply-To`` or ``Return-Path``. A message cannot make a
  patient's read receipt (and their address) go to a third party.
- An automatic notification goes only to the message's envelope sender (RFC 8098
  §2.1: "MUST NOT be sent automatically if the address in the
  Disposition-Notification-To header field differs from the address in the
  Return-Path header field"; the ANS layout says the same).
- Only patients ask the server to send for them: a professional's client sends
  its own MDN through submission (RFC 8098 §2.1), as every mail client does.
- An IHE XDM package the vault cannot integrate is reported by an MDN instead of
  refused only when the package is the recipient's own (its metadata read, every
  ``patientId`` the recipient's INS) and a document of it does not match that
  metadata: a package that cannot be read, or that names another patient, is still
  refused at DATA (a document never lands in the wrong record).

See Also: RFC 8098 (MDN), RFC 3503 (``$MDNSent``), ANS "struct-msg-mdn" (the
MSSanté layout: Disposition ``automatic-action/MDN-sent-automatically;
processed/Error: code^libellé``).
"""

from __future__ import annotations

from collections.abc import Sequence

from policies.content import Content, Part
from policies.parties import Role

#: RFC 3503 §3.1: the keyword a client sets once it has sent (or asked for) the MDN of a message
MDN_SENT = "$MDNSent"

#: the Disposition of a read receipt the patient asked for (RFC 8098 §3.2.6)
DISPLAYED = "manual-action/MDN-sent-manually; displayed"
#: the Disposition of a document the vault could not integrate (ANS layout), before ``: <code>^<libellé>``
INTEGRATION_FAILED = "automatic-action/MDN-sent-automatically; processed/Error"
#: HL7 v2 table 0357 (messageErrorCondition, the ANS layout's error codes): application internal error
INTEGRATION_ERROR_CODE = "207"


def is_mdn_sent(flag: str) -> bool:
    """``flag`` is RFC 3503's ``$MDNSent`` (keywords compare without case, RFC 9051 §2.3.2)."""
    return flag.lower() == MDN_SENT.lower()


def may_ask_server(role: Role) -> bool:
    """May this account's client have the server send an MDN on its behalf? Patients only."""
    return role is Role.PATIENT


def _first(addresses: Sequence[str]) -> str | None:
    return addresses[0] if addresses else None


def manual_to(requested: Sequence[str], wrote: Sequence[str]) -> str | None:
    """The address a patient's read receipt goes to: the first requested one, if it is one of ``wrote`` (the
    message's From, Sender, Reply-To, Return-Path addresses); None: nothing is sent."""
    to = _first(requested)
    if to is None or to.lower() not in {w.lower() for w in wrote}:
        return None
    return to


def automatic_to(requested: Sequence[str], return_path: str | None) -> str | None:
    """The address an automatic MDN goes to: the first requested one, if it is the envelope sender; else None."""
    to = _first(requested)
    if to is None or not return_path or to.lower() != return_path.lower():
        return None
    return to


def integration_failure(content: Content, recipient_ins: str) -> Part | None:
    """The XDM package of ``content`` the vault cannot integrate although it is ``recipient_ins``'s own, when that
    is the message's only package; None otherwise (no package, a good one, or one that must stay refused)."""
    packages = [p for p in content.parts if p.xdm_patient_ids is not None]
    if len(packages) != 1:
        return None
    (part,) = packages
    ids = {i.upper() for i in part.xdm_patient_ids or () if i}
    if not part.problem or part.unreadable or ids != {recipient_ins.upper()}:
        return None
    return part
