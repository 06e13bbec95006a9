"""SMTP replies as values (mox ``smtp/codes.go``): a code, an RFC 3463 enhanced code, a sentence.

``str(reply)`` is the reply line aiosmtpd sends: ``550 5.7.1 Recipient domain is not ...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENHANCED = re.compile(r"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"SMTP reply code {self.code} out of range")
        if not _ENHANCED.match(self.enhanced) or self.enhanced[0] != str(self.code)[0]:
            raise ValueError(f"enhanced status {self.enhanced!r} does not fit reply code {self.code}")
        if "\r" in self.text or "\n" in self.text:
            raise ValueError("a reply text is one line")

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)


# --- accepted ---------------------------------------------------------------------------------------------
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")

# --- addressing (RFC 3463 X.1.X) -----------------------------------------------------------------------------
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "No such mailbox here: check the address in the health directory")
BAD_ADDRESS_SYNTAX = Reply(501, "5.1.3", "Malformed address: expected name@domain")

# --- mailbox state (X.2.X) ------------------------------------------------------------------------------------
MAILBOX_CLOSED = Reply(550, "5.2.1", "The recipient's mailbox is closed and accepts no mail")
MAILBOX_OPPOSED = Reply(550, "5.2.1", "The recipient has opposed the secure health messaging service")
MAILBOX_DISABLED = Reply(550, "5.2.1", "The recipient's mailbox is disabled")
MAILBOX_SUSPENDED = Reply(450, "4.2.1", "The recipient's mailbox is temporarily suspended: try again later")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message too big for this recipient")
MAILBOX_FULL = Reply(
    552, "5.2.2", "The recipient's mailbox is full: it takes no more mail until its owner deletes some"
)
MAILBOX_NO_ROOM = Reply(
    552, "5.2.2", "The recipient's mailbox has no room left for a message this large: send a smaller one, or later"
)

# --- security and policy (X.7.X) ------------------------------------------------------------------------------
RECIPIENT_OUTSIDE_TRUST_SPACE = Reply(
    550, "5.7.1", "Recipient domain is not in the MSSanté trust space: mail only goes to trusted health operators"
)
SENDER_OUTSIDE_TRUST_SPACE = Reply(
    550, "5.7.1", "Sender domain is not in the MSSanté trust space: mail is only accepted from trusted operators"
)
OPERATOR_SUSPENDED = Reply(451, "4.7.1", "This operator is temporarily suspended from the trust space: try again later")
PATIENT_NOT_A_REPLY = Reply(
    550, "5.7.1", "A patient may only reply to a professional who wrote to them first, and not after [FIN]"
)
PATIENT_NEW_MESSAGE = Reply(
    550, "5.7.1", "A patient may only answer this professional's messages: reply to one of them instead of writing anew"
)
PATIENT_TO_PATIENT = Reply(550, "5.7.1", "Patients cannot write to other patients")
PATIENT_TO_APPLICATION = Reply(550, "5.7.1", "Patients cannot write to software mailboxes (APP)")
FROM_NOT_OWNED = Reply(
    550, "5.7.1", "The From and Sender header fields must hold your own address: nobody sends in another's name"
)
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: it does not belong to the authenticated account")
PEER_CERTIFICATE_REQUIRED = Reply(
    550, "5.7.1", "A client certificate from the trust space is required to deliver mail here"
)
PEER_NOT_LISTED = Reply(550, "5.7.1", "Your client certificate is not listed for this sender domain in the trust space")
APPEND_NOT_ALLOWED = Reply(550, "5.7.1", "This message cannot be stored here")
SENDER_RATE_LIMITED = Reply(
    450, "4.7.1", "Too many recipients from this sender in the last hour: the rest will be accepted later"
)
SENDER_NOT_ACTIVE = Reply(550, "5.7.1", "The sender's mailbox is not active and cannot send mail")

# --- content (X.6.X media, X.7.X security) ---------------------------------------------------------------------
EXECUTABLE_ATTACHMENT = Reply(550, "5.7.1", "Executable attachments are refused in health messaging")
ATTACHMENT_TYPE_REFUSED = Reply(554, "5.6.1", "This type of attachment is not accepted here")
MESSAGE_TOO_COMPLEX = Reply(554, "5.6.0", "This message's MIME structure is too deep or has too many parts")
XDM_UNREADABLE = Reply(550, "5.6.0", "The IHE XDM package cannot be read")
XDM_REFUSED = Reply(550, "5.6.0", "The IHE XDM package cannot be filed")
ARCHIVE_REFUSED = Reply(550, "5.6.0", "The zip archive cannot be unpacked safely")
XDM_SEVERAL_PATIENTS = Reply(
    550, "5.7.1", "The IHE XDM package concerns several patients: a message carries one patient's documents"
)
XDM_OTHER_PATIENT = Reply(
    550, "5.7.1", "The IHE XDM package concerns another patient than the recipient (patientId is not their INS)"
)

# --- who the message says it is from (RFC 5322 §3.6.2, DMARC RFC 7489 §3.1) -------------------------------------
FROM_NOT_ALIGNED = Reply(
    550,
    "5.7.1",
    "The From domain is neither the envelope sender's domain nor aligned with a passing DKIM signature: "
    "a message must say truthfully who sends it",
)
FROM_LOCAL_DOMAIN = Reply(
    550, "5.7.1", "The From address is in one of this operator's own domains: such mail only comes from our own users"
)
NULL_SENDER_NOT_A_REPORT = Reply(
    550, "5.7.1", "A message with an empty envelope sender may only be a delivery report (multipart/report)"
)
NULL_SENDER_TO_PATIENT = Reply(
    550, "5.7.1", "A message with an empty envelope sender is not delivered to a patient's mailbox"
)
FROM_MISSING = Reply(550, "5.7.1", "The message has no From header field: write it with your own address")
RESENT_NOT_OWNED = Reply(550, "5.7.1", "The Resent-From and Resent-Sender header fields must hold your own address")
DISPLAY_NAME_ADDRESS = Reply(
    550, "5.7.1", "The From display name holds another address than the sender's own: it would mislead the reader"
)
