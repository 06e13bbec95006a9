"""Errors a directory operation can end with; each message is one sentence for a human."""


class DirectoryError(Exception):
    """Base class; ``str(error)`` is what the CLI prints and what a log records."""


class InvalidAddress(DirectoryError):
    pass


class InvalidIdentifier(DirectoryError):
    """An INS, RPPS, ADELI or FINESS that does not have the right form or key."""


class UnknownDomain(DirectoryError):
    pass


class DomainExists(DirectoryError):
    pass


class UnknownAccount(DirectoryError):
    pass


class AccountExists(DirectoryError):
    pass


class InvalidState(DirectoryError):
    """The operation does not apply to the account in its current state."""


class UnknownOperator(DirectoryError):
    pass


class OperatorExists(DirectoryError):
    pass
