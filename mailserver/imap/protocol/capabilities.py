"""What the server announces (RFC 3501 §6.1.1, §7.2.1), as a function of the connection's state.

Invariants:
- ``BASE`` is advertised in every state; each name in it is implemented in full.
- Before login, without TLS: ``STARTTLS`` (when offered) and ``LOGINDISABLED``
  (RFC 3501 §6.2.3) and no ``AUTH=`` mechanism; with TLS: ``AUTH=PLAIN``, and
  the mechanisms the server is configured for (``OPTIONAL_MECHANISMS``:
  XOAUTH2 and OAUTHBEARER with ``[oauth]``, EXTERNAL with ``[tls] account_ca``).
- After login no mechanism is announced (RFC 3501 §7.2.1: the list may change).
- ``APPENDLIMIT=n`` (RFC 7889) is the largest APPEND accepted: the configured
  ``[limits] max_message_size``, or ``[imap] max_literal`` when smaller.
"""

from __future__ import annotations

from mailserver.imap.protocol.states import ImapState

BASE: tuple[str, ...] = (
    "IMAP4rev1",
    "IMAP4rev2",
    "LITERAL+",
    "SASL-IR",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MOVE",
    "UNSELECT",
    "SPECIAL-USE",
    "CHILDREN",
    "STATUS=SIZE",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "CREATE-SPECIAL-USE",
    "SORT",
    "QUOTA",
    "QUOTA=RES-MESSAGE",  # RFC 9208 §5.2
    "QUOTA=RES-STORAGE",
    "MULTIAPPEND",
    "BINARY",
    "COMPRESS=DEFLATE",
    "CATENATE",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "SEARCHRES",
    "WITHIN",
    "OBJECTID",
    "SAVEDATE",
    "PREVIEW",
    "ESORT",
    "SORT=DISPLAY",
    "CONTEXT=SEARCH",
    "CONTEXT=SORT",
    "NOTIFY",
)

#: SASL mechanisms, offered only over TLS (``mailserver.sasl`` decodes them)
MECHANISMS: tuple[str, ...] = ("PLAIN",)
#: offered only where configured: bearer tokens (``[oauth]``), client certificates (``[tls] account_ca``)
OPTIONAL_MECHANISMS: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER", "EXTERNAL")


def capabilities(
    state: ImapState,
    *,
    tls_active: bool,
    starttls_offered: bool,
    mechanisms: tuple[str, ...] = MECHANISMS,
    append_limit: int | None = None,
) -> tuple[str, ...]:
    """The CAPABILITY list for a connection in ``state``; ``APPENDLIMIT=n`` (RFC 7889) when a limit is given."""
    base = (*BASE, f"APPENDLIMIT={append_limit}") if append_limit is not None else BASE
    if state is not ImapState.NOT_AUTHENTICATED:
        return base
    if tls_active:
        return (*base, *(f"AUTH={m}" for m in mechanisms))
    return (*base, *(("STARTTLS",) if starttls_offered else ()), "LOGINDISABLED")


def capability_code(
    state: ImapState,
    *,
    tls_active: bool,
    starttls_offered: bool,
    mechanisms: tuple[str, ...] = MECHANISMS,
    append_limit: int | None = None,
) -> str:
    """The ``[CAPABILITY ...]`` response code of the greeting and of a successful login."""
    listed = capabilities(
        state,
        tls_active=tls_active,
        starttls_offered=starttls_offered,
        mechanisms=mechanisms,
        append_limit=append_limit,
    )
    return "CAPABILITY " + " ".join(listed)
