"""How the IMAP side answers a domain error: ``tag NO [CODE] text`` (pymap's ``get_response``).

Invariants:
- Services raise the protocol-free errors of ``mailserver.errors``; only this
  module knows their IMAP response codes.
- A ``MailError`` with no code here is answered with a plain ``NO text``.
- The text is the error's own sentence, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailserver import errors as e

#: response codes by error class (a subclass inherits its parent's code)
CODES: Mapping[type[e.MailError], str] = {
    e.MailboxExists: "ALREADYEXISTS",  # RFC 5530 §3
    e.MailboxCannot: "CANNOT",  # RFC 5530 §3
    e.MailboxHasChildren: "HASCHILDREN",  # RFC 9051 §7.1
    e.ReadOnly: "READ-ONLY",  # RFC 3501 §7.1
    e.TooBig: "TOOBIG",  # RFC 4469 §5, RFC 7889 §4
    e.Refused: "CANNOT",  # RFC 5530 §3
    e.OverQuota: "OVERQUOTA",  # RFC 9208 §4.3
    e.Unreadable: "CORRUPTION",  # RFC 5530 §3
    e.AccountGone: "UNAVAILABLE",  # RFC 5530 §3
    e.Busy: "UNAVAILABLE",  # RFC 5530 §3: a temporary failure
    e.NoPermission: "NOPERM",  # RFC 5530 §3
    e.SpecialUseRefused: "USEATTR",  # RFC 6154 §6
    e.NoSuchQuotaRoot: "NONEXISTENT",  # RFC 5530 §3
    e.UnknownTransferEncoding: "UNKNOWN-CTE",  # RFC 3516 §4.3
}


def response_code(exc: e.MailError) -> str | None:
    """The response code of the tagged NO that answers ``exc``, or None for none."""
    if isinstance(exc, e.MailboxNotFound):
        # RFC 3501 §6.3.11: TRYCREATE when creating the mailbox would let APPEND or COPY succeed
        return "TRYCREATE" if exc.try_create else "NONEXISTENT"  # RFC 5530 §3
    if isinstance(exc, e.BadUrl):  # RFC 4469 §4: the URL, as the client wrote it (a code is one line, no "]")
        return "BADURL " + "".join(ch for ch in exc.url[:500] if ch.isprintable() and ch != "]")
    for cls in type(exc).__mro__:
        code = CODES.get(cls)
        if code is not None:
            return code
    return None
