"""The connection state machine alone: values in, values out, no sockets (protocol.states, session.HANDLERS).

- The transition table, transcript by transcript; the BAD counter counts bad
  commands in a row and a good one resets it.
- Parse errors become their answers: BAD, NO [TOOBIG], BYE, and NO [NONEXISTENT]
  for a mailbox name that is not modified UTF-7 (after the state check).
- Hypothesis over state x command (and over state x any input bytes): every pair is either dispatched to the one
  handler of its class or answered BAD, never an exception; the state after any
  sequence of commands and outcomes is what the table says.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailserver.imap import session
from mailserver.imap.protocol import capabilities as caps
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.parser import (
    ImapParseError,
    ImapReceiver,
    InvalidMailboxName,
    NeedData,
    NeedLiteral,
    parse,
)
from mailserver.imap.protocol.states import ALLOWED, TRANSITIONS, Connection, ImapState, next_state

#: one command line per command class (and the UID forms): what a client sends
LINES = [
    b"a CAPABILITY",
    b"a NOOP",
    b"a LOGOUT",
    b"a STARTTLS",
    b"a LOGIN joe secret",
    b"a AUTHENTICATE PLAIN AGpvZQBzZWNyZXQ=",
    b"a ENABLE CONDSTORE",
    b'a ID ("name" "mutt")',
    b"a NAMESPACE",
    b"a SELECT INBOX",
    b"a EXAMINE INBOX",
    b"a CREATE x/y",
    b"a DELETE x",
    b"a RENAME x y",
    b"a SUBSCRIBE x",
    b"a UNSUBSCRIBE x",
    b'a LIST "" *',
    b'a LSUB "" %',
    b"a STATUS INBOX (MESSAGES UNSEEN)",
    b"a APPEND INBOX {3+}\r\nabc",
    b"a CHECK",
    b"a CLOSE",
    b"a UNSELECT",
    b"a EXPUNGE",
    b"a UID EXPUNGE 1:3",
    b"a SEARCH ALL",
    b"a UID SEARCH UNSEEN",
    b"a SORT (DATE) UTF-8 ALL",
    b"a UID SORT (REVERSE SIZE) UTF-8 UNSEEN",
    b"a UID THREAD REFERENCES UTF-8 UNSEEN",
    b"a FETCH 1:* (FLAGS)",
    b"a UID FETCH 1 BODY.PEEK[]",
    b"a STORE 1 +FLAGS (\\Seen)",
    b"a UID STORE 1 -FLAGS.SILENT (x)",
    b"a COPY 1 Sent",
    b"a UID MOVE 1:2 Trash",
    b"a IDLE",
    b'a GETQUOTA ""',
    b"a GETQUOTAROOT INBOX",
    b'a SETQUOTA "" (STORAGE 512)',
    b"a COMPRESS DEFLATE",
    b'a CANCELUPDATE "s1" "s2"',
    b"a NOTIFY SET (selected (MessageNew (UID) MessageExpunge))",
    b"a NOTIFY NONE",
]
COMMANDS = [parse(line + b"\r\n")[0] for line in LINES]


def test_the_lines_cover_every_command_class() -> None:
    assert {type(cmd) for cmd in COMMANDS} == set(c.COMMANDS)


def test_every_command_class_has_exactly_one_handler() -> None:
    session.check_handlers()
    assert set(session.HANDLERS) == set(c.COMMANDS)
    assert len(set(session.HANDLERS.values())) == len(c.COMMANDS)
    with pytest.raises(TypeError, match="missing"):
        session.check_handlers({k: v for k, v in session.HANDLERS.items() if k is not c.Fetch})
    with pytest.raises(TypeError, match="shared handlers: True"):
        session.check_handlers({**session.HANDLERS, c.Examine: session.ImapSession.do_select})


def test_every_command_is_allowed_somewhere_and_logout_allows_nothing() -> None:
    for kind in c.COMMANDS:
        assert any(kind in allowed for allowed in ALLOWED.values()), kind
    assert ALLOWED[ImapState.LOGOUT] == frozenset()
    for (kind, _), _to in TRANSITIONS.items():
        assert kind in c.COMMANDS


def test_a_session_from_greeting_to_logout() -> None:
    conn = Connection(bad_command_limit=5)
    login, select, fetch, close, logout = (
        c.Login("a", "u", "p"),
        c.Select("b", "INBOX"),
        c.Fetch("c", items=(c.FetchAttr("FLAGS"),)),
        c.Close("d"),
        c.Logout("e"),
    )
    assert conn.check(select) == r.Tagged("b", "BAD", "SELECT: Log in first")
    assert conn.completed(login, "NO") is ImapState.NOT_AUTHENTICATED
    assert conn.completed(login, "OK") is ImapState.AUTHENTICATED
    assert conn.check(fetch) == r.Tagged("c", "BAD", "FETCH: Must select a mailbox first")
    assert conn.check(c.Login("x", "u", "p")) == r.Tagged("x", "BAD", "LOGIN: Already authenticated")
    assert conn.completed(select, "OK") is ImapState.SELECTED
    assert conn.check(fetch) is None
    assert conn.completed(select, "NO") is ImapState.AUTHENTICATED  # RFC 3501 §6.3.1: a failed SELECT deselects
    assert conn.completed(select, "OK") is ImapState.SELECTED
    assert conn.completed(close, "OK") is ImapState.AUTHENTICATED
    assert conn.completed(logout, "OK") is ImapState.LOGOUT
    assert conn.check(c.Noop("f")) == r.Tagged("f", "BAD", "NOOP: The connection is closing")


def test_uid_commands_are_named_with_uid_in_a_refusal() -> None:
    conn = Connection(bad_command_limit=5, state=ImapState.AUTHENTICATED)
    store = c.Store("a", c.SequenceSet(((1, 1),)), "+", False, ("\\Seen",), uid=True)
    assert conn.check(store) == r.Tagged("a", "BAD", "UID STORE: Must select a mailbox first")


def test_the_bad_counter_counts_bad_commands_in_a_row() -> None:
    conn = Connection(bad_command_limit=3)
    noop = c.Noop("a")
    conn.completed(noop, "BAD")
    conn.completed(noop, "BAD")
    assert not conn.over_limit
    conn.completed(noop, "OK")  # a good command: the count starts again
    assert conn.bad_count == 0
    conn.completed(noop, "BAD")
    assert not conn.count_bad()  # a parse error counts too
    conn.completed(c.Login("b", "u", "p"), "NO")  # NO is an answer to a valid command
    assert conn.bad_count == 0
    for _ in range(2):
        conn.completed(noop, "BAD")
    out, close = conn.parse_error(ImapParseError("Unknown command FROB", tag="z"))
    assert close and out == [
        r.Tagged("z", "BAD", "Unknown command FROB"),
        r.Untagged("BYE", "Too many invalid commands"),
    ]


def test_parse_errors_become_their_answers() -> None:
    conn = Connection(bad_command_limit=10)
    assert conn.parse_error(ImapParseError("Line too long", tag=None)) == ([r.Untagged("BAD", "Line too long")], False)
    big = ImapParseError("Literal too big", tag="a", code="TOOBIG")
    assert conn.parse_error(big) == ([r.Tagged("a", "NO", "Literal too big", "TOOBIG")], False)
    fatal = ImapParseError("Literal too big", tag="a", code="TOOBIG", fatal=True)
    assert conn.parse_error(fatal) == ([r.Untagged("BYE", "Literal too big", "TOOBIG")], True)


def test_a_name_that_is_not_modified_utf7_names_no_mailbox() -> None:
    with pytest.raises(InvalidMailboxName) as info:
        parse(b"a SELECT &Jjo\r\n")
    exc = info.value
    assert exc.command is c.Select and exc.tag == "a"
    conn = Connection(bad_command_limit=10)
    assert conn.parse_error(exc) == ([r.Tagged("a", "BAD", "SELECT: Log in first")], False)
    assert conn.bad_count == 1
    conn.state = ImapState.SELECTED
    out, close = conn.parse_error(exc)
    assert conn.state is ImapState.AUTHENTICATED  # RFC 3501 §6.3.1: a failed SELECT deselects
    assert out == [r.Tagged("a", "NO", "Mailbox name is not valid modified UTF-7", "NONEXISTENT")] and not close
    assert conn.bad_count == 0
    with pytest.raises(InvalidMailboxName) as info:
        parse(b"b CREATE &AOk\r\n")
    assert conn.parse_error(info.value)[0][0] == r.Tagged(
        "b", "NO", "Mailbox name is not valid modified UTF-7", "CANNOT"
    )
    with pytest.raises(InvalidMailboxName) as info:
        parse(b"c UID COPY 1 &Jjo\r\n")
    assert info.value.uid and info.value.command is c.Copy
    # the rest of the command is still checked: a syntax error stays BAD
    with pytest.raises(ImapParseError) as err:
        parse(b"d SELECT &Jjo extra\r\n")
    assert not isinstance(err.value, InvalidMailboxName)
    with pytest.raises(ImapParseError) as err:  # a LIST reference is syntax, not a mailbox
        parse(b'e LIST &Jjo "*"\r\n')
    assert not isinstance(err.value, InvalidMailboxName)


def test_literals_before_login_only_for_login_and_authenticate() -> None:
    conn = Connection(bad_command_limit=10)
    assert conn.literal_allowed("LOGIN") and conn.literal_allowed("AUTHENTICATE")
    assert not conn.literal_allowed("APPEND") and not conn.literal_allowed(None)
    conn.state = ImapState.AUTHENTICATED
    assert conn.literal_allowed("APPEND")


def test_capabilities_by_state_and_tls() -> None:
    clear = caps.capabilities(ImapState.NOT_AUTHENTICATED, tls_active=False, starttls_offered=True)
    assert "STARTTLS" in clear and "LOGINDISABLED" in clear and not any(x.startswith("AUTH=") for x in clear)
    assert "STARTTLS" not in caps.capabilities(ImapState.NOT_AUTHENTICATED, tls_active=False, starttls_offered=False)
    tls = caps.capabilities(ImapState.NOT_AUTHENTICATED, tls_active=True, starttls_offered=True)
    assert "AUTH=PLAIN" in tls and "STARTTLS" not in tls and "LOGINDISABLED" not in tls
    after = caps.capabilities(ImapState.AUTHENTICATED, tls_active=True, starttls_offered=True)
    assert after == caps.BASE and after[0] == "IMAP4rev1"
    assert caps.capability_code(ImapState.SELECTED, tls_active=True, starttls_offered=False).startswith(
        "CAPABILITY IMAP4rev1 "
    )


# --- properties ------------------------------------------------------------------------------------------------

states = st.sampled_from(list(ImapState))
commands = st.sampled_from(COMMANDS)
statuses = st.sampled_from(["OK", "NO", "BAD"])


@given(state=states, command=commands)
def test_every_state_and_command_is_dispatched_or_answered_bad(state: ImapState, command: c.Command) -> None:
    conn = Connection(bad_command_limit=3, state=state)
    answer = conn.check(command)
    if answer is None:
        assert type(command) in ALLOWED[state]
        assert session.HANDLERS[type(command)] is not None  # there is a handler to dispatch to
    else:
        assert type(command) not in ALLOWED[state]
        assert isinstance(answer, r.Tagged) and answer.status == "BAD" and answer.tag == command.tag
        assert answer.text.startswith(("UID " if getattr(command, "uid", False) else "") + command.name + ": ")
        answer.to_bytes()  # renders


@given(steps=st.lists(st.tuples(commands, statuses), max_size=30), start=states)
def test_any_sequence_follows_the_table(steps: list[tuple[c.Command, str]], start: ImapState) -> None:
    conn = Connection(bad_command_limit=1000, state=start)
    trailing_bad = 0
    for command, status in steps:
        before = conn.state
        refused = conn.check(command) is not None
        after = conn.completed(command, "BAD" if refused else status)
        assert after is next_state(before, command, "BAD" if refused else status)
        if refused:
            assert after is before  # a refused command never moves the state
        if before is ImapState.LOGOUT:
            assert after is ImapState.LOGOUT
        trailing_bad = trailing_bad + 1 if (refused or status == "BAD") else 0
        assert conn.bad_count == trailing_bad


lines_or_noise = st.one_of(
    st.sampled_from(LINES).map(lambda line: line + b"\r\n"),
    st.binary(max_size=80).map(lambda b: b + b"\r\n"),
    st.sampled_from([b"a SELECT &Jjo\r\n", b"b CREATE &AOk\r\n", b"c UID FETCH\r\n", b"* NOOP\r\n", b"\r\n"]),
)


@given(state=states, data=st.lists(lines_or_noise, max_size=8))
def test_any_input_in_any_state_is_dispatched_or_answered(state: ImapState, data: list[bytes]) -> None:
    """Whatever arrives, the core yields a command to dispatch or the responses that answer it; nothing raises."""
    conn = Connection(bad_command_limit=1000, state=state)
    receiver = ImapReceiver(max_line=200, max_literal=100)
    receiver.feed(b"".join(data))
    for _ in range(100):
        try:
            event = receiver.next()
        except ImapParseError as exc:
            out, _close = conn.parse_error(exc)
            assert out and all(isinstance(x, r.Tagged | r.Untagged) for x in out)
            for x in out:
                x.to_bytes()
            continue
        if isinstance(event, NeedData):
            break
        if isinstance(event, NeedLiteral):
            receiver.reject_literal()
            continue
        refused = conn.check(event)
        if refused is None:
            assert type(event) in session.HANDLERS
        else:
            assert refused.status == "BAD"
