"""Repositories: one per aggregate, each handed the session of the unit of work that owns it.

A repository never commits; it maps ``IntegrityError`` to ``Conflict``.
"""

from mailserver.store.repositories.accounts import AccountRepository, DomainRepository
from mailserver.store.repositories.agenda import AgendaRepository
from mailserver.store.repositories.audit import AuditBreak, AuditRepository, PendingAudit
from mailserver.store.repositories.broadcast import BroadcastRepository
from mailserver.store.repositories.credentials import CredentialRepository
from mailserver.store.repositories.directory import DirectoryRepository, GrantRepository
from mailserver.store.repositories.dkim import DkimKeyRepository
from mailserver.store.repositories.limits import ActivityRepository, LoginCounterRepository
from mailserver.store.repositories.mail import BlobRepository, MailboxRepository, MessageRepository, MessageViews
from mailserver.store.repositories.queue import QueueRepository
from mailserver.store.repositories.trust import TrustRepository

__all__ = [
    "AccountRepository",
    "AgendaRepository",
    "ActivityRepository",
    "AuditBreak",
    "AuditRepository",
    "BlobRepository",
    "BroadcastRepository",
    "CredentialRepository",
    "DirectoryRepository",
    "DkimKeyRepository",
    "DomainRepository",
    "GrantRepository",
    "LoginCounterRepository",
    "MailboxRepository",
    "MessageRepository",
    "MessageViews",
    "PendingAudit",
    "QueueRepository",
    "TrustRepository",
]
