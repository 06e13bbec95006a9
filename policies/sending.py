"""Who may write to whom: the table of docs/DESIGN.md, one function.

| from \\ to                  | professional | application | patient                  | outside |
|----------------------------|--------------|-------------|--------------------------|---------|
| professional / organisation| yes          | yes         | yes, if mailbox active   | no      |
| application                | yes          | yes         | yes                      | no      |
| patient                    | reply only   | no          | no                       | no      |
| outside the trust space    | no           | no          | no                       | —       |

"reply only": the patient holds a conversation grant from that professional
(it wrote to the patient first and has not ended with ``[FIN]``), or the
professional's profession is one patients may write to first (pharmacists).
The recipient's state is checked before the table: unknown, closed, opposed,
disabled are permanent refusals, suspended a temporary one.
"""

from __future__ import annotations

from collections.abc import Collection

from policies import reply as R
from policies.decision import Decision
from policies.parties import Party, Role, Status

#: Annuaire Santé profession codes patients may write to first (21: pharmacien)
DEFAULT_PATIENT_FIRST_PROFESSIONS: frozenset[str] = frozenset({"21"})

_RECIPIENT_STATE = {
    Status.CLOSED: (R.MAILBOX_CLOSED, "recipient-closed"),
    Status.OPPOSED: (R.MAILBOX_OPPOSED, "recipient-opposed"),
    Status.DISABLED: (R.MAILBOX_DISABLED, "recipient-disabled"),
    Status.SUSPENDED: (R.MAILBOX_SUSPENDED, "recipient-suspended"),
}


def may_send(
    sender: Party,
    recipient: Party,
    *,
    patient_has_grant: bool = False,
    patient_first_professions: Collection[str] = DEFAULT_PATIENT_FIRST_PROFESSIONS,
) -> Decision:
    """May ``sender`` write to ``recipient``? ``patient_has_grant``: the patient sender holds a
    conversation grant for this recipient."""
    if sender.role is Role.OUTSIDE:
        return Decision.refuse(R.SENDER_OUTSIDE_TRUST_SPACE, "sender-outside-trust-space")
    if recipient.role is Role.OUTSIDE:
        return Decision.refuse(R.RECIPIENT_OUTSIDE_TRUST_SPACE, "recipient-outside-trust-space")
    if recipient.role is Role.UNKNOWN:
        return Decision.refuse(R.UNKNOWN_RECIPIENT, "unknown-recipient")
    if not recipient.local and recipient.status is Status.SUSPENDED:
        return Decision.refuse(R.OPERATOR_SUSPENDED, "recipient-operator-suspended")
    if recipient.status in _RECIPIENT_STATE:
        refusal, why = _RECIPIENT_STATE[recipient.status]
        return Decision.refuse(refusal, why)

    if sender.role is Role.PATIENT:
        if recipient.role is Role.PATIENT:
            return Decision.refuse(R.PATIENT_TO_PATIENT, "patient-to-patient")
        if recipient.role is Role.APPLICATION:
            return Decision.refuse(R.PATIENT_TO_APPLICATION, "patient-to-application")
        if patient_has_grant:
            return Decision.allow("patient-reply")
        if recipient.profession_code in patient_first_professions:
            return Decision.allow("patient-writes-first-to-allowed-profession")
        return Decision.refuse(R.PATIENT_NOT_A_REPLY, "patient-not-a-reply")
    if sender.role in (Role.PROFESSIONAL, Role.APPLICATION):
        return Decision.allow(f"{sender.role.value}-to-{recipient.role.value}")
    return Decision.refuse(R.SENDER_OUTSIDE_TRUST_SPACE, "unknown-sender")
