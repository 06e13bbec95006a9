"""Issue 11: twenty IMAP clients at once on shared mailboxes, on both databases.

Twenty real clients (threads, imaplib's TLS connection, each response read line by line in order) log in
as one account, select one of two shared mailboxes and run a fixed number of operations each, drawn by a
seeded generator: STORE of new keywords and of system flags, \\Deleted then EXPUNGE, APPEND, FETCH of
flags and of bodies, CREATE and DELETE of mailboxes of the same account. Bounded by operations, not by
time. Every session must hold, from its own transcript:

- no ``BYE`` before its LOGOUT, no ``SERVERBUG``, no ``BAD``; every command answered ``OK``;
- every keyword in a FETCH's FLAGS was announced in an untagged ``FLAGS`` earlier in that session
  (RFC 3501 §7.2.6, RFC 9051 §7.3.5);
- its APPENDUIDs increase, each UID is given once across all clients, and the UIDs it sees in sequence
  order at the end increase (RFC 3501 §2.3.1.1).
"""

from __future__ import annotations

import imaplib
import random
import re
import ssl
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mailserver.store.models import Account
from tests.imap.conftest import ServerThread, crlf, imaps, message

CLIENTS = 20
OPERATIONS = 8  # per client
MAILBOXES = ("INBOX", "Shared")
SEEDED = 6  # messages in each mailbox before the clients start

_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")
_FETCH = re.compile(rb"^\* (\d+) FETCH \((.*)\)$", re.S)
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FETCH_UID = re.compile(rb"UID (\d+)")
_UNTAGGED_FLAGS = re.compile(rb"^\* FLAGS \(([^)]*)\)")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def _keywords(atoms: bytes) -> set[str]:
    return {a for a in atoms.decode().split() if not a.startswith("\\")}


@dataclass
class Session:
    """One client's connection and what its transcript showed."""

    name: str
    m: imaplib.IMAP4_SSL
    mailbox: str
    tag: int = 0
    announced: set[str] = field(default_factory=set)
    uids: set[int] = field(default_factory=set)  # UIDs this session saw in FETCH responses
    appended: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    logging_out: bool = False

    def _response(self) -> bytes:
        """One whole response, literals inlined as ``""`` (the text around them is what is checked)."""
        line = self.m.readline()
        if not line:
            raise ConnectionError(f"{self.name}: the server closed the connection")
        text = b""
        while (lit := _LITERAL.search(line)) is not None:
            self.m.read(int(lit.group(1)))
            text += line[: lit.start()] + b'""'
            line = self.m.readline()
        return (text + line).rstrip(b"\r\n")

    def command(self, line: str, literal: bytes | None = None) -> list[bytes]:
        """Send one command (a LITERAL+ literal after it if given); its untagged responses, checked."""
        self.tag += 1
        tag = f"t{self.tag}".encode()
        data = tag + b" " + line.encode()
        if literal is not None:
            data += b" {%d+}\r\n" % len(literal) + literal
        self.m.send(data + b"\r\n")
        untagged: list[bytes] = []
        while True:
            resp = self._response()
            if resp.startswith(tag + b" "):
                if not resp.startswith(tag + b" OK"):
                    self.problems.append(f"{line.split()[0:2]} -> {resp!r}")
                m = _APPENDUID.search(resp)
                if m is not None:
                    self.appended.append(int(m.group(2)))
                return untagged
            self._check(resp, line)
            untagged.append(resp)

    def _check(self, resp: bytes, during: str) -> None:
        if b"SERVERBUG" in resp or (resp.startswith(b"* BYE") and not self.logging_out):
            self.problems.append(f"during {during!r}: {resp!r}")
        if resp.startswith((b"* BAD", b"+ ")) or b" BAD " in resp[:12]:
            self.problems.append(f"during {during!r}: {resp!r}")
        flags = _UNTAGGED_FLAGS.match(resp)
        if flags is not None:
            self.announced |= _keywords(flags.group(1))
            return
        fetch = _FETCH.match(resp)
        if fetch is None:
            return
        body = fetch.group(2)
        uid = _FETCH_UID.search(body)
        if uid is not None:
            self.uids.add(int(uid.group(1)))
        fl = _FETCH_FLAGS.search(body)
        if fl is not None:
            unannounced = _keywords(fl.group(1)) - self.announced
            if unannounced:
                self.problems.append(f"during {during!r}: keywords {sorted(unannounced)} not announced: {resp!r}")


def _operate(s: Session, rnd: random.Random, user: Account, start: threading.Barrier) -> None:
    s.command(f'SELECT "{s.mailbox}"')
    s.command("UID FETCH 1:* (FLAGS)")
    start.wait()
    for op in range(OPERATIONS):
        targets = sorted(s.uids) or [1]
        uid = rnd.choice(targets)
        kind = rnd.choice(("keyword", "keyword", "flag", "expunge", "append", "fetch", "body", "mailbox"))
        if kind == "keyword":
            s.command(f"UID STORE {uid} +FLAGS (kw{s.name}x{op})")
        elif kind == "flag":
            s.command(f"UID STORE {uid}:{uid + 2} {rnd.choice('+-')}FLAGS (\\Flagged \\Answered)")
        elif kind == "expunge":
            s.command(f"UID STORE {uid} +FLAGS.SILENT (\\Deleted)")
            s.command("EXPUNGE")
        elif kind == "append":
            raw = crlf(message("lab@example.org", user.address, f"from {s.name} op {op}"))
            s.command(f'APPEND "{s.mailbox}" (\\Seen kwapp{s.name}x{op})', raw)
        elif kind == "mailbox":  # the account row's UIDVALIDITY lock, among the others' mailbox locks
            s.command(f'CREATE "tmp{s.name}x{op}/child"')
            s.command(f'DELETE "tmp{s.name}x{op}/child"')
            s.command(f'DELETE "tmp{s.name}x{op}"')
        elif kind == "fetch":
            s.command("FETCH 1:* (UID FLAGS)")
        else:
            s.command(f"UID FETCH {uid}:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY[TEXT])")
    s.command("NOOP")
    _check_order(s, s.command("FETCH 1:* (UID)"))
    if s.appended != sorted(set(s.appended)):
        s.problems.append(f"APPENDUIDs not increasing: {s.appended}")
    s.logging_out = True
    s.command("LOGOUT")


def _check_order(s: Session, untagged: list[bytes]) -> None:
    """In sequence order the UIDs increase, and a sequence number names one UID (up to an EXPUNGE)."""
    uid_of: dict[int, int] = {}
    for resp in untagged:
        if resp.endswith(b" EXPUNGE"):
            break
        fetch, uid = _FETCH.match(resp), _FETCH_UID.search(resp)
        if fetch is not None and uid is not None:
            seq = int(fetch.group(1))
            if uid_of.setdefault(seq, int(uid.group(1))) != int(uid.group(1)):
                s.problems.append(f"sequence number {seq} named UIDs {uid_of[seq]} and {uid.group(1)!r}")
    in_order = [uid_of[n] for n in sorted(uid_of)]
    if in_order != sorted(set(in_order)):
        s.problems.append(f"UIDs not increasing in sequence order: {in_order}")


def _sessions(srv: ServerThread, tls: ssl.SSLContext, user: Account) -> Iterator[Session]:
    for i in range(CLIENTS):
        yield Session(str(i), imaps(srv, tls, user), MAILBOXES[i % len(MAILBOXES)])


def test_twenty_clients_on_shared_mailboxes(srv: ServerThread, user: Account, tls_client: ssl.SSLContext) -> None:
    setup = imaps(srv, tls_client, user)
    assert setup.create("Shared")[0] == "OK"
    setup.logout()
    for name in MAILBOXES:
        for n in range(SEEDED):
            srv.deliver(user, message("a@example.org", user.address, f"seed {n}"), mailbox=name)
    sessions = list(_sessions(srv, tls_client, user))
    start = threading.Barrier(CLIENTS, timeout=60)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = [pool.submit(_operate, s, random.Random(i), user, start) for i, s in enumerate(sessions)]  # noqa: S311
            errors = [f.exception(timeout=120) for f in futures]
    finally:
        for s in sessions:
            s.m.shutdown()
    assert errors == [None] * CLIENTS, errors
    problems = [p for s in sessions for p in s.problems]
    assert problems == [], "\n".join(problems[:20])
    for name in MAILBOXES:
        given = [u for s in sessions if s.mailbox == name for u in s.appended]
        assert len(given) == len(set(given)), f"a UID of {name} was given twice: {sorted(given)}"
