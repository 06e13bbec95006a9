"""Every table, imported here so that ``Base.metadata`` is complete for Alembic."""

from mailserver.store.models.agenda import AgendaEvent
from mailserver.store.models.audit import AuditEntry, AuditHead
from mailserver.store.models.base import Base, UTCDateTime
from mailserver.store.models.broadcast import Broadcast
from mailserver.store.models.certificates import AccountCertificate
from mailserver.store.models.credentials import AppCredential, Enrolment, SecondFactorContact
from mailserver.store.models.directory import (
    Activity,
    ConversationGrant,
    Professional,
    PublishedMailbox,
    TrustImport,
)
from mailserver.store.models.dkim import DkimKey
from mailserver.store.models.limits import AccountActivity, LoginCounter
from mailserver.store.models.mail import (
    Account,
    AccountKind,
    AccountStatus,
    Blob,
    Domain,
    DomainKind,
    ExpungedMessage,
    Mailbox,
    Message,
)
from mailserver.store.models.queue import QueuedMessage, QueueStatus
from mailserver.store.models.trust import OperatorStatus, TrustedOperator, TrustedOperatorDN

__all__ = [
    "Account",
    "AccountCertificate",
    "AccountActivity",
    "AccountKind",
    "AccountStatus",
    "Activity",
    "AgendaEvent",
    "AppCredential",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Blob",
    "Broadcast",
    "ConversationGrant",
    "DkimKey",
    "Domain",
    "DomainKind",
    "Enrolment",
    "ExpungedMessage",
    "LoginCounter",
    "Mailbox",
    "Message",
    "OperatorStatus",
    "Professional",
    "PublishedMailbox",
    "QueueStatus",
    "QueuedMessage",
    "SecondFactorContact",
    "TrustImport",
    "TrustedOperator",
    "TrustedOperatorDN",
    "UTCDateTime",
]
