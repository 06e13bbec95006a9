"""Connection states and which commands each allows, as data (RFC 3501 §3, mox ``stateCommands``).

The session asks ``refusal(state, command)`` before any handler runs: ``None``
means go ahead, otherwise the text of the BAD to answer.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from mailserver.imap.protocol import commands as c


class ImapState(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE: frozenset[type[c.Command]] = frozenset({c.Capability, c.Noop, c.Logout, c.Id})
NOT_AUTHENTICATED: frozenset[type[c.Command]] = ANY_STATE | {c.StartTLS, c.Login, c.Authenticate}
AUTHENTICATED: frozenset[type[c.Command]] = ANY_STATE | {
    c.Enable,
    c.Namespace,
    c.Select,
    c.Examine,
    c.Create,
    c.Delete,
    c.Rename,
    c.Subscribe,
    c.Unsubscribe,
    c.List,
    c.Lsub,
    c.Status,
    c.Append,
    c.Idle,
}
SELECTED: frozenset[type[c.Command]] = AUTHENTICATED | {
    c.Check,
    c.Close,
    c.Unselect,
    c.Expunge,
    c.Search,
    c.Fetch,
    c.Store,
    c.Copy,
    c.Move,
}

ALLOWED: Mapping[ImapState, frozenset[type[c.Command]]] = {
    ImapState.NOT_AUTHENTICATED: NOT_AUTHENTICATED,
    ImapState.AUTHENTICATED: AUTHENTICATED,
    ImapState.SELECTED: SELECTED,
    ImapState.LOGOUT: frozenset(),
}


def refusal(state: ImapState, command: c.Command) -> str | None:
    """None if ``command`` may run in ``state``; else the reason, for a tagged BAD."""
    kind = type(command)
    if kind in ALLOWED[state]:
        return None
    name = ("UID " if getattr(command, "uid", False) else "") + command.name
    if state is ImapState.LOGOUT:
        return f"{name}: The connection is closing"
    if state is ImapState.NOT_AUTHENTICATED:
        return f"{name}: Log in first"
    if kind in (c.StartTLS, c.Login, c.Authenticate):
        return f"{name}: Already authenticated"
    if kind in SELECTED:
        return f"{name}: Must select a mailbox first"
    return f"{name}: Not allowed now"  # pragma: no cover - every command is in some state
