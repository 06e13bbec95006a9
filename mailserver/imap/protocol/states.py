"""The connection's state machine, as data (RFC 3501 §3, RFC 9051 §3; mox ``stateCommands``, h11 ``_state.py``).

Invariants (every rule about the connection state lives in this file):
- ``ALLOWED[state]`` is the set of command classes a state accepts; any other
  command is answered ``BAD <CMD>: <reason>`` before a handler runs
  (``Connection.check``).
- ``TRANSITIONS[(command class, status)]`` is the state after a command of that
  class completed with that tagged status; a command not in the table leaves
  the state as it was. A failed SELECT/EXAMINE leaves no mailbox selected
  (RFC 3501 §6.3.1).
- The BAD counter counts *consecutive* bad commands (syntax errors and
  refusals): any command that completes OK or NO resets it; reaching
  ``bad_command_limit`` ends the connection with ``* BYE``.
- Before login, a synchronising literal is accepted only for LOGIN and
  AUTHENTICATE: nobody unauthenticated may make us buffer megabytes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.parser import ImapParseError, InvalidMailboxName


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
    c.GetQuota,
    c.GetQuotaRoot,
    c.SetQuota,
    c.Compress,
    c.Notify,
}
SELECTED: frozenset[type[c.Command]] = AUTHENTICATED | {
    c.Check,
    c.Close,
    c.Unselect,
    c.Expunge,
    c.Search,
    c.Sort,
    c.Thread,
    c.Fetch,
    c.Store,
    c.Copy,
    c.Move,
    c.CancelUpdate,  # RFC 5267 §4.3.5
}

ALLOWED: Mapping[ImapState, frozenset[type[c.Command]]] = {
    ImapState.NOT_AUTHENTICATED: NOT_AUTHENTICATED,
    ImapState.AUTHENTICATED: AUTHENTICATED,
    ImapState.SELECTED: SELECTED,
    ImapState.LOGOUT: frozenset(),
}

#: (command class, tagged status) -> the state after it; absent: the state does not change
TRANSITIONS: Mapping[tuple[type[c.Command], str], ImapState] = {
    (c.Login, "OK"): ImapState.AUTHENTICATED,  # RFC 3501 §6.2.3
    (c.Authenticate, "OK"): ImapState.AUTHENTICATED,  # RFC 3501 §6.2.2
    (c.Select, "OK"): ImapState.SELECTED,  # RFC 3501 §6.3.1
    (c.Select, "NO"): ImapState.AUTHENTICATED,  # "...any currently selected mailbox is deselected"
    (c.Examine, "OK"): ImapState.SELECTED,  # RFC 3501 §6.3.2
    (c.Examine, "NO"): ImapState.AUTHENTICATED,
    (c.Close, "OK"): ImapState.AUTHENTICATED,  # RFC 3501 §6.4.2
    (c.Unselect, "OK"): ImapState.AUTHENTICATED,  # RFC 3691
    (c.Logout, "OK"): ImapState.LOGOUT,  # RFC 3501 §6.1.3
}

#: commands that may send a synchronising literal before login
LITERAL_BEFORE_LOGIN = frozenset({"LOGIN", "AUTHENTICATE"})


def command_label(command: c.Command | type[c.Command], uid: bool = False) -> str:
    """``FETCH`` / ``UID FETCH``: how a BAD names the command."""
    kind = command if isinstance(command, type) else type(command)
    if not isinstance(command, type):
        uid = bool(getattr(command, "uid", False))
    return ("UID " if uid else "") + kind.name


def refusal_of(state: ImapState, kind: type[c.Command], label: str) -> str | None:
    """None if a command of class ``kind`` may run in ``state``; else the reason, for a tagged BAD."""
    if kind in ALLOWED[state]:
        return None
    if state is ImapState.LOGOUT:
        return f"{label}: The connection is closing"
    if state is ImapState.NOT_AUTHENTICATED:
        return f"{label}: Log in first"
    if kind in (c.StartTLS, c.Login, c.Authenticate):
        return f"{label}: Already authenticated"
    if kind in SELECTED:
        return f"{label}: Must select a mailbox first"
    return f"{label}: Not allowed now"  # pragma: no cover - every command is in some state


def refusal(state: ImapState, command: c.Command) -> str | None:
    """None if ``command`` may run in ``state``; else the reason, for a tagged BAD."""
    return refusal_of(state, type(command), command_label(command))


def next_state(state: ImapState, command: c.Command, status: str) -> ImapState:
    """The state after ``command`` completed with ``status`` in ``state`` (``TRANSITIONS``)."""
    if type(command) not in ALLOWED[state]:
        return state
    return TRANSITIONS.get((type(command), status), state)


@dataclass
class Connection:
    """One connection's protocol state: where it is, and how many bad commands in a row it sent."""

    bad_command_limit: int
    state: ImapState = ImapState.NOT_AUTHENTICATED
    bad_count: int = 0

    def check(self, command: c.Command) -> r.Tagged | None:
        """The BAD that answers ``command`` in this state, or None to dispatch it."""
        why = refusal(self.state, command)
        return None if why is None else r.Tagged(command.tag, "BAD", why)

    def completed(self, command: c.Command, status: str) -> ImapState:
        """``command`` was answered ``status``: move (``TRANSITIONS``) and keep the BAD counter."""
        if status == "BAD":
            self.bad_count += 1
        else:
            self.bad_count = 0
        self.state = next_state(self.state, command, status)
        return self.state

    def count_bad(self) -> bool:
        """One more bad command (a parse error, a refused literal); True when the limit is reached."""
        self.bad_count += 1
        return self.over_limit

    @property
    def over_limit(self) -> bool:
        return self.bad_count >= self.bad_command_limit

    def literal_allowed(self, command_name: str | None) -> bool:
        return self.state is not ImapState.NOT_AUTHENTICATED or command_name in LITERAL_BEFORE_LOGIN

    def parse_error(self, exc: ImapParseError) -> tuple[list[r.Response], bool]:
        """The answer to a command that could not be parsed, and whether the connection must end.

        A mailbox name that is not modified UTF-7 names no mailbox: ``NO [NONEXISTENT]``
        (``NO [CANNOT]`` for a name to create), as other servers answer, after the
        state check; it is not a bad command.
        """
        if isinstance(exc, InvalidMailboxName) and exc.tag:
            why = refusal_of(self.state, exc.command, command_label(exc.command, exc.uid))
            if why is None:
                self.bad_count = 0
                self.state = TRANSITIONS.get((exc.command, "NO"), self.state)  # a failed SELECT deselects
                code = "CANNOT" if exc.command in (c.Create, c.Rename) else "NONEXISTENT"
                return [r.Tagged(exc.tag, "NO", exc.message, code)], False
            return self._bad(exc.tag, why)
        if exc.code == "TOOBIG" and exc.tag and not exc.fatal:
            return [r.Tagged(exc.tag, "NO", exc.message, "TOOBIG")], False
        if exc.fatal:
            return [r.Untagged("BYE", exc.message, exc.code)], True
        return self._bad(exc.tag, exc.message)

    def _bad(self, tag: str | None, text: str) -> tuple[list[r.Response], bool]:
        out: list[r.Response] = [r.Tagged(tag, "BAD", text) if tag else r.Untagged("BAD", text)]
        if self.count_bad():
            out.append(r.Untagged("BYE", "Too many invalid commands"))
            return out, True
        return out, False

    def bad(self, tag: str | None, text: str) -> tuple[list[r.Response], bool]:
        """A BAD for a command answered outside ``completed`` (refused literal, malformed continuation)."""
        return self._bad(tag, text)
