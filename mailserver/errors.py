"""Domain errors: a request that is well formed but cannot be done, said in a sentence a person understands.

Invariants:
- Services (mailboxes, delivery, admission) and the front ends' adapters raise
  them; they name no protocol: no IMAP response code, no SMTP reply.
- Each front end maps them to its own answer. The IMAP side turns one into
  ``tag NO [CODE] text`` in ``mailserver.imap.errors`` (pymap's
  ``get_response``); services never format protocol lines themselves.
- ``text`` may be sent to the client as it is: it names mailboxes and limits,
  never message content, passwords or keys.
"""

from __future__ import annotations


class MailError(Exception):
    """A request that is well formed but cannot be done (IMAP answers NO)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class MailboxNotFound(MailError):
    """No such mailbox; ``try_create`` says that creating it would let the request succeed (APPEND, COPY)."""

    def __init__(self, name: str, *, try_create: bool = False) -> None:
        super().__init__(f"Mailbox {name!r} does not exist" + (" (create it first)" if try_create else ""))
        self.name = name
        self.try_create = try_create


class MailboxExists(MailError):
    pass


class MailboxCannot(MailError):
    """The name cannot be used, or the mailbox cannot be changed that way (INBOX, special mailboxes)."""


class MailboxHasChildren(MailError):
    pass


class MailboxGone(MailError):
    """The selected mailbox was deleted by another session."""


class ReadOnly(MailError):
    pass


class TooBig(MailError):
    pass


class SpecialUseRefused(MailError):
    """CREATE ... (USE (...)) with a special use this server does not give (RFC 6154 §3: NO [USEATTR])."""


class NoPermission(MailError):
    """The credential of this session does not allow it (an app grant: another folder, or a write)."""


class OverQuota(MailError):
    """The account's storage for this kind of content is full (the patient's vault)."""


class NoSuchQuotaRoot(MailError):
    """GETQUOTA of a name that is none of the account's quota roots (RFC 9208 §4.1.1)."""


class UnknownTransferEncoding(MailError):
    """BINARY of a part whose content transfer encoding this server cannot undo (RFC 3516 §4.3)."""


class BadUrl(MailError):
    """CATENATE of a URL that names nothing this session may read (RFC 4469 §4: NO [BADURL url])."""

    def __init__(self, url: str, why: str) -> None:
        super().__init__(why)
        self.url = url


class Refused(MailError):
    """A policy refused (the admission decision's text is the sentence)."""


class Unreadable(MailError):
    """Stored data cannot be read back (a damaged or undecipherable body)."""


class AccountGone(MailError):
    """The account the request runs for no longer exists."""


class Busy(MailError):
    """The store could not do it now because of other writers (a transient condition): try again."""
