"""Every table, imported here so that ``Base.metadata`` is complete for Alembic."""

from mailserver.store.models.audit import AuditEntry, AuditHead
from mailserver.store.models.base import Base, UTCDateTime
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
    "AccountActivity",
    "AccountKind",
    "AccountStatus",
    "Activity",
    "AuditEntry",
    "AuditHead",
    "Base",
    "Blob",
    "ConversationGrant",
    "DkimKey",
    "Domain",
    "DomainKind",
    "ExpungedMessage",
    "LoginCounter",
    "Mailbox",
    "Message",
    "OperatorStatus",
    "Professional",
    "PublishedMailbox",
    "QueueStatus",
    "QueuedMessage",
    "TrustImport",
    "TrustedOperator",
    "TrustedOperatorDN",
    "UTCDateTime",
]
