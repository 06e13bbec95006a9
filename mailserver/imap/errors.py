"""Domain errors of the IMAP services: each carries its response code and a sentence a person understands.

The session turns one into ``tag NO [CODE] text`` (pymap's ``get_response``);
services never format protocol lines themselves.
"""

from __future__ import annotations


class MailError(Exception):
    """A command that is well formed but cannot be done: answered NO."""

    code: str | None = None

    def __init__(self, text: str, code: str | None = None) -> None:
        super().__init__(text)
        self.text = text
        if code is not None:
            self.code = code


class MailboxNotFound(MailError):
    def __init__(self, name: str, *, try_create: bool = False) -> None:
        super().__init__(
            f"Mailbox {name!r} does not exist" + (" (create it first)" if try_create else ""),
            "TRYCREATE" if try_create else "NONEXISTENT",
        )


class MailboxExists(MailError):
    code = "ALREADYEXISTS"


class MailboxCannot(MailError):
    code = "CANNOT"


class MailboxHasChildren(MailError):
    code = "HASCHILDREN"


class MailboxGone(MailError):
    """The selected mailbox was deleted by another session."""

    code = None


class ReadOnly(MailError):
    code = "READ-ONLY"


class TooBig(MailError):
    code = "TOOBIG"


class Refused(MailError):
    """A policy refused (the gate's decision text is the sentence)."""

    code = "CANNOT"
