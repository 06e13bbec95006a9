"""One IMAP connection: reads bytes, feeds the sans-IO receiver, dispatches commands, writes responses.

Implementation notes (invariants):
- This is the only IMAP module that does I/O. Parsing is ``protocol.parser``,
  states are ``protocol.states``, the work is ``mailstore.MailStore``.
- No database session is open while the client is idle or while responses are
  written: each command's unit of work is closed before we write.
- A selected mailbox is an in-memory list of UIDs (sequence numbers are
  positions) with their flags and the modseq it reflects. Before each tagged
  response, and at once while in IDLE, changes after that modseq are turned
  into EXISTS / EXPUNGE / FETCH FLAGS (RFC 3501 §5.2, §7.4.1). EXPUNGE is held
  back during FETCH, STORE and SEARCH (not their UID forms), as §7.4.1 requires.
- LOGIN and AUTHENTICATE are refused before TLS (LOGINDISABLED; RFC 3501 §6.2.3).
- Bounds (``[imap]`` config): MAX_LINE, MAX_LITERAL, nesting depth,
  BAD_COMMAND_LIMIT (then BYE), idle timeouts (unauthenticated / authenticated,
  IDLE included: a client restarts IDLE before it expires).
- Logs carry ids only; LOGIN and AUTHENTICATE arguments are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import logging
import re
import ssl
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailserver import __version__, logs
from mailserver.imap import messages as msgs
from mailserver.imap.errors import MailboxGone, MailError
from mailserver.imap.mailstore import Changes, MailStore, MessageData, Snapshot
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.parser import ImapParseError, ImapReceiver, NeedData, NeedLiteral
from mailserver.imap.protocol.states import ImapState, refusal
from mailserver.mailboxes import DELIMITER

if TYPE_CHECKING:
    from directory.auth import Authenticator
    from mailserver.admission import Admission
    from mailserver.context import Context

log = logging.getLogger("masante.imap")

READ_CHUNK = 65536
CLOSE_TIMEOUT = 2.0  # seconds a closing connection waits for the peer's TLS close_notify
FETCH_BATCH = 100  # messages per unit of work in FETCH / SEARCH
SEARCH_BATCH = 200

BASE_CAPABILITIES = (
    "IMAP4rev1",
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
)
PERMANENT_FLAGS = (*c.SYSTEM_FLAGS, "\\*")


class Closing(Exception):
    """End the connection (after the BYE already written)."""


@dataclass
class SessionConfig:
    """What a session needs from the service, shared by every connection of a listener."""

    ctx: Context
    authenticator: Authenticator
    admission: Admission
    tls: ssl.SSLContext | None  # for STARTTLS (None: not offered)
    max_line: int
    max_literal: int
    max_depth: int
    bad_command_limit: int
    login_timeout: float
    idle_timeout: float
    tls_handshake_timeout: float


class Selected:
    """The selected mailbox as this session shows it (pymap's SelectedMailbox)."""

    def __init__(self, snap: Snapshot, readonly: bool) -> None:
        self.id = snap.mailbox.id
        self.name = snap.mailbox.name
        self.uidvalidity = snap.mailbox.uidvalidity
        self.uidnext = snap.mailbox.uidnext
        self.readonly = readonly
        self.uids: list[int] = [u for u, _ in snap.messages]
        self.flags: dict[int, frozenset[str]] = dict(snap.messages)
        self.recent: set[int] = set(snap.recent)
        self.modseq = snap.modseq
        self.pending_expunge: set[int] = set()

    def seq(self, uid: int) -> int:
        i = bisect.bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def resolve(self, seqset: c.SequenceSet, uid: bool) -> list[tuple[int, int]]:
        """(seq, uid) pairs of the set, in order. Raises MailError for sequence numbers out of range."""
        if uid:
            if not self.uids:
                return []
            chosen = seqset.select(self.uids, self.uids[-1])
            return [(self.seq(u), u) for u in chosen]
        n = len(self.uids)
        for lo, hi in seqset.ranges:
            for x in (lo, hi):
                if x != c.STAR and x > n:
                    raise _Bad(f"No message with sequence number {x} (the mailbox has {n})")
        if n == 0:
            raise _Bad("The mailbox is empty: there is no message number to use")
        return [(s, self.uids[s - 1]) for s in seqset.select(range(1, n + 1), n)]

    def keywords(self) -> list[str]:
        kws: set[str] = set()
        for fs in set(self.flags.values()):
            kws |= {f for f in fs if not f.startswith("\\")}
        return sorted(kws)

    def remove(self, uids: Iterable[int]) -> list[r.Response]:
        """Forget ``uids`` and say so: EXPUNGE responses, highest first so that each number is right."""
        out: list[r.Response] = []
        for uid in sorted(set(uids), reverse=True):
            s = self.seq(uid)
            if s:
                del self.uids[s - 1]
                self.flags.pop(uid, None)
                self.recent.discard(uid)
                out.append(r.expunge(s))
            self.pending_expunge.discard(uid)
        return out

    def apply(self, ch: Changes, *, allow_expunge: bool) -> list[r.Response]:
        out: list[r.Response] = []
        known_max = self.uids[-1] if self.uids else 0
        self.pending_expunge |= {u for u in ch.expunged if u in self.flags}
        if allow_expunge and self.pending_expunge:
            out += self.remove(list(self.pending_expunge))
        fetches: list[r.Response] = []
        new: list[tuple[int, frozenset[str]]] = []
        for uid, flags in ch.changed:
            if uid > known_max:
                new.append((uid, flags))
            elif uid in self.flags and self.flags[uid] != flags and uid not in self.pending_expunge:
                self.flags[uid] = flags
                fetches.append(
                    r.FetchData(
                        self.seq(uid),
                        (("UID", uid), ("FLAGS", msgs.flag_atoms(flags, uid in self.recent))),
                    )
                )
        out += fetches
        if new:
            for uid, flags in new:
                self.uids.append(uid)
                self.flags[uid] = flags
            self.recent |= set(ch.recent)
            out.append(r.exists(len(self.uids)))
            out.append(r.recent(len(self.recent)))
        self.modseq = max(self.modseq, ch.modseq)
        self.uidnext = max(self.uidnext, ch.uidnext)
        return out


class _Bad(Exception):
    """A command that is well formed but makes no sense here: answered BAD."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ImapSession:
    def __init__(
        self,
        cfg: SessionConfig,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        implicit_tls: bool,
    ) -> None:
        self.cfg = cfg
        self.ctx = cfg.ctx
        self.reader = reader
        self.writer = writer
        self.tls_active = implicit_tls
        self.state = ImapState.NOT_AUTHENTICATED
        # before login a literal can only hold a user name or a password: no room for megabytes
        self.receiver = ImapReceiver(
            max_line=cfg.max_line, max_literal=min(cfg.max_line, cfg.max_literal), max_depth=cfg.max_depth
        )
        self.store: MailStore | None = None
        self.selected: Selected | None = None
        self.bad_count = 0
        self.id = uuid.uuid4().hex[:12]
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self._closing = False

    # --- capabilities --------------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.state is ImapState.NOT_AUTHENTICATED:
            if self.tls_active:
                caps.append("AUTH=PLAIN")
            else:
                if self.cfg.tls is not None:
                    caps.append("STARTTLS")
                caps.append("LOGINDISABLED")
        return caps

    def _capability_code(self) -> str:
        return "CAPABILITY " + " ".join(self.capabilities())

    # --- I/O ---------------------------------------------------------------------------------------------

    async def send(self, *responses: r.Response) -> None:
        if not responses:
            return
        self.writer.write(b"".join(x.to_bytes() for x in responses))
        await self.writer.drain()

    def _timeout(self) -> float:
        return self.cfg.login_timeout if self.state is ImapState.NOT_AUTHENTICATED else self.cfg.idle_timeout

    async def _read(self) -> bytes:
        try:
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), self._timeout())
        except TimeoutError:
            await self.send(r.Untagged("BYE", "Autologout: idle for too long"))
            raise Closing from None
        if not data:
            raise Closing
        return data

    async def shutdown(self) -> None:
        """Server stopping: say goodbye and close."""
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send(r.Untagged("BYE", "Server shutting down")), 2)
        with contextlib.suppress(Exception):
            self.writer.close()

    # --- main loop -----------------------------------------------------------------------------------

    async def run(self) -> None:
        logs.session_id.set(self.id)
        log.info("imap.connect", extra={"fields": {"peer": self.peer, "tls": self.tls_active}})
        try:
            await self.send(r.Untagged("OK", "masante-mail IMAP ready", self._capability_code()))
            await self._loop()
        except (Closing, ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception:
            log.exception("imap.session-failed")
            with contextlib.suppress(Exception):
                await self.send(r.Untagged("BYE", "Internal server error, sorry", "SERVERBUG"))
        finally:
            await self._close_transport()
            log.info("imap.disconnect")

    async def _close_transport(self) -> None:
        """Close politely (TLS close_notify), but never wait long for a peer that does not answer."""
        with contextlib.suppress(Exception):
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), CLOSE_TIMEOUT)
        except (TimeoutError, Exception):  # noqa: BLE001 - the peer is gone or silent: drop the connection
            self.writer.transport.abort()

    async def _loop(self) -> None:
        while not self._closing:
            try:
                event = self.receiver.next()
            except ImapParseError as exc:
                await self._parse_error(exc)
                continue
            if isinstance(event, NeedData):
                self.receiver.feed(await self._read())
                continue
            if isinstance(event, NeedLiteral):
                if self.state is ImapState.NOT_AUTHENTICATED and event.command not in ("LOGIN", "AUTHENTICATE"):
                    self.receiver.reject_literal()
                    await self._bad(event.tag or "*", "Log in first")
                    continue
                await self.send(r.Continuation("Ready for literal data"))
                continue
            await self._dispatch(event)
            if self.state is ImapState.LOGOUT:
                raise Closing

    async def _parse_error(self, exc: ImapParseError) -> None:
        if exc.code == "TOOBIG" and exc.tag and not exc.fatal:
            await self.send(r.Tagged(exc.tag, "NO", exc.message, "TOOBIG"))
            return
        if exc.fatal:
            await self.send(r.Untagged("BYE", exc.message, exc.code))
            raise Closing
        await self._bad(exc.tag or "*", exc.message)

    async def _bad(self, tag: str, text: str) -> None:
        self.bad_count += 1
        if tag == "*":
            await self.send(r.Untagged("BAD", text))
        else:
            await self.send(r.Tagged(tag, "BAD", text))
        if self.bad_count >= self.cfg.bad_command_limit:
            await self.send(r.Untagged("BYE", "Too many invalid commands"))
            raise Closing

    # --- dispatch ------------------------------------------------------------------------------------

    async def _dispatch(self, cmd: c.Command) -> None:
        try:
            await self._run_command(cmd)
        except MailboxGone:
            await self.send(r.Untagged("BYE", "The selected mailbox was deleted by another session"))
            raise Closing from None

    async def _run_command(self, cmd: c.Command) -> None:
        why = refusal(self.state, cmd)
        if why is not None:
            await self._bad(cmd.tag, why)
            return
        handler: Callable[[c.Command], object] = getattr(self, "do_" + type(cmd).__name__.lower())
        log.debug("imap.command", extra={"fields": {"command": cmd.name, "tag": cmd.tag}})
        try:
            out = await handler(cmd)  # type: ignore[misc]
        except _Bad as exc:
            await self.send(*await self._updates(cmd))
            await self._bad(cmd.tag, f"{cmd.name}: {exc.text}")
            return
        except MailboxGone:
            raise
        except MailError as exc:
            updates = await self._updates(cmd)
            await self.send(*updates, r.Tagged(cmd.tag, "NO", exc.text, exc.code))
            return
        if not isinstance(out, list):  # pragma: no cover - every handler returns its responses
            raise TypeError(f"{type(cmd).__name__} handler returned {type(out).__name__}")
        if type(cmd) not in (c.Logout, c.Idle):
            out = [*out[:-1], *await self._updates(cmd), out[-1]] if out else out
        await self.send(*out)

    async def _updates(self, cmd: c.Command) -> list[r.Response]:
        """Untagged news for the selected mailbox, before a tagged response."""
        if self.selected is None or self.store is None:
            return []
        uid = getattr(cmd, "uid", False)
        allow_expunge = uid or not isinstance(cmd, c.Fetch | c.Store | c.Search)
        return await self._sync(allow_expunge=allow_expunge)

    async def _sync(self, *, allow_expunge: bool) -> list[r.Response]:
        sel, store = self.selected, self.store
        if sel is None or store is None:
            return []
        ch = await store.changes(sel.id, sel.modseq, claim_recent=not sel.readonly)
        return sel.apply(ch, allow_expunge=allow_expunge)

    def _ok(self, tag: str, text: str, code: str | None = None) -> r.Tagged:
        return r.Tagged(tag, "OK", text, code)

    # --- any state ---------------------------------------------------------------------------------

    async def do_capability(self, cmd: c.Capability) -> list[r.Response]:
        return [r.Data((r.Atom("CAPABILITY"), *(r.Atom(x) for x in self.capabilities()))), self._ok(cmd.tag, "Done")]

    async def do_noop(self, cmd: c.Noop) -> list[r.Response]:
        return [self._ok(cmd.tag, "NOOP completed")]

    async def do_logout(self, cmd: c.Logout) -> list[r.Response]:
        self.state = ImapState.LOGOUT
        return [r.Untagged("BYE", "Logging out"), self._ok(cmd.tag, "LOGOUT completed")]

    async def do_id(self, cmd: c.Id) -> list[r.Response]:
        # RFC 2971: the client's fields are not logged (they may identify a person's device)
        return [
            r.Data((r.Atom("ID"), ("name", "masante-mail", "version", __version__))),
            self._ok(cmd.tag, "ID completed"),
        ]

    # --- not authenticated -------------------------------------------------------------------------

    async def do_starttls(self, cmd: c.StartTLS) -> list[r.Response]:
        if self.tls_active:
            raise _Bad("TLS is already active")
        if self.cfg.tls is None:
            raise _Bad("STARTTLS is not offered here")
        await self.send(self._ok(cmd.tag, "Begin TLS negotiation now"))
        # RFC 3501 §6.2.1 / RFC 7817: anything the client sent after STARTTLS in clear is dropped
        self.receiver.discard_buffer()
        await asyncio.wait_for(
            self.writer.start_tls(self.cfg.tls, ssl_handshake_timeout=self.cfg.tls_handshake_timeout),
            self.cfg.tls_handshake_timeout + 5,
        )
        self.tls_active = True
        return []

    async def _login(self, tag: str, user: str, password: str) -> list[r.Response]:
        result = await self.cfg.authenticator.authenticate(user, password, protocol="imap", peer=self.peer)
        if not result.ok or result.account is None:
            return [r.Tagged(tag, "NO", "Invalid user name or password", "AUTHENTICATIONFAILED")]
        self.store = MailStore(self.ctx, result.account, self.cfg.admission)
        self.state = ImapState.AUTHENTICATED
        self.receiver.max_literal = self.cfg.max_literal
        log.info("imap.login", extra={"fields": {"account": result.account.owner_id}})
        return [self._ok(tag, "Logged in", self._capability_code())]

    async def do_login(self, cmd: c.Login) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Log in only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        return await self._login(cmd.tag, cmd.user, cmd.password)

    async def do_authenticate(self, cmd: c.Authenticate) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Authenticate only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        if cmd.mechanism != "PLAIN":
            return [r.Tagged(cmd.tag, "NO", f"Unsupported mechanism {cmd.mechanism}; use PLAIN", "CANNOT")]
        response = cmd.initial
        if response is None:
            await self.send(r.Continuation(""))
            line = await self._read_line()
            if line.strip() == b"*":
                raise _Bad("Authentication cancelled")
            response = line.strip().decode("ascii", "replace")
        try:
            decoded = base64.b64decode(response, validate=True) if response not in ("", "=") else b""
            authzid, authcid, password = decoded.split(b"\0")
            user, secret = authcid.decode("utf-8"), password.decode("utf-8")
        except (binascii.Error, ValueError):
            raise _Bad("Malformed PLAIN response (base64 of authzid NUL user NUL password)") from None
        if authzid and authzid != authcid:
            return [r.Tagged(cmd.tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED")]
        return await self._login(cmd.tag, user, secret)

    async def _read_line(self) -> bytes:
        while True:
            try:
                line = self.receiver.next_line()
            except ImapParseError as exc:
                raise _Bad(exc.message) from None
            if not isinstance(line, NeedData):
                return line
            self.receiver.feed(await self._read())

    # --- authenticated -------------------------------------------------------------------------------

    def _store(self) -> MailStore:
        if self.store is None:  # pragma: no cover - the state table allows this only after login
            raise RuntimeError("no account in this state")
        return self.store

    async def do_enable(self, cmd: c.Enable) -> list[r.Response]:
        return [r.Data((r.Atom("ENABLED"),)), self._ok(cmd.tag, "ENABLE completed")]

    async def do_namespace(self, cmd: c.Namespace) -> list[r.Response]:
        return [
            r.Data((r.Atom("NAMESPACE"), (("", DELIMITER),), None, None)),
            self._ok(cmd.tag, "NAMESPACE completed"),
        ]

    async def _select(self, cmd: c.Select | c.Examine, readonly: bool) -> list[r.Response]:
        self.selected = None
        if self.state is ImapState.SELECTED:
            self.state = ImapState.AUTHENTICATED
        snap = await self._store().select(cmd.mailbox, readonly=readonly)
        sel = Selected(snap, readonly)
        self.selected = sel
        self.state = ImapState.SELECTED
        flags = (*c.SYSTEM_FLAGS, *sel.keywords())
        out: list[r.Response] = [
            r.Data((r.Atom("FLAGS"), r.flag_list(flags))),
            r.Untagged(
                "OK",
                "Flags permitted" if not readonly else "No permanent flags in a read-only mailbox",
                "PERMANENTFLAGS (" + (" ".join(PERMANENT_FLAGS) if not readonly else "") + ")",
            ),
            r.exists(len(sel.uids)),
            r.recent(len(sel.recent)),
        ]
        first_unseen = next((i + 1 for i, u in enumerate(sel.uids) if "\\Seen" not in sel.flags[u]), None)
        if first_unseen is not None:
            out.append(r.Untagged("OK", f"Message {first_unseen} is the first unseen", f"UNSEEN {first_unseen}"))
        out += [
            r.Untagged("OK", "UIDs valid", f"UIDVALIDITY {sel.uidvalidity}"),
            r.Untagged("OK", "Predicted next UID", f"UIDNEXT {snap.mailbox.uidnext}"),
            r.Tagged(cmd.tag, "OK", f"{cmd.name} completed", "READ-ONLY" if readonly else "READ-WRITE"),
        ]
        return out

    async def do_select(self, cmd: c.Select) -> list[r.Response]:
        return await self._select(cmd, readonly=False)

    async def do_examine(self, cmd: c.Examine) -> list[r.Response]:
        return await self._select(cmd, readonly=True)

    async def do_create(self, cmd: c.Create) -> list[r.Response]:
        await self._store().create(cmd.mailbox)
        return [self._ok(cmd.tag, "CREATE completed")]

    async def do_delete(self, cmd: c.Delete) -> list[r.Response]:
        await self._store().delete(cmd.mailbox)
        return [self._ok(cmd.tag, "DELETE completed")]

    async def do_rename(self, cmd: c.Rename) -> list[r.Response]:
        await self._store().rename(cmd.old, cmd.new)
        return [self._ok(cmd.tag, "RENAME completed")]

    async def do_subscribe(self, cmd: c.Subscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, True)
        return [self._ok(cmd.tag, "SUBSCRIBE completed")]

    async def do_unsubscribe(self, cmd: c.Unsubscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, False)
        return [self._ok(cmd.tag, "UNSUBSCRIBE completed")]

    async def do_list(self, cmd: c.List) -> list[r.Response]:
        if cmd.patterns == ("",) and not cmd.select_options:
            # RFC 3501 §6.3.8: the hierarchy delimiter and root
            return [
                r.Data((r.Atom("LIST"), (r.Atom("\\Noselect"),), DELIMITER, "")),
                self._ok(cmd.tag, "LIST completed"),
            ]
        boxes = await self._store().mailboxes()
        names = {b.name for b in boxes}
        regexes = [_pattern_regex(_canonical_pattern(cmd.reference + p)) for p in cmd.patterns]
        only_subscribed = "SUBSCRIBED" in cmd.select_options
        only_special = "SPECIAL-USE" in cmd.select_options
        out: list[r.Response] = []
        for b in sorted(boxes, key=lambda b: (b.name != "INBOX", b.name)):
            if not any(rx.fullmatch(b.name) for rx in regexes):
                continue
            if only_subscribed and not b.subscribed:
                continue
            if only_special and not b.special_use:
                continue
            attrs = ["\\HasChildren" if any(n.startswith(b.name + DELIMITER) for n in names) else "\\HasNoChildren"]
            if b.special_use:
                attrs.append(b.special_use)
            if b.subscribed and (only_subscribed or "SUBSCRIBED" in cmd.return_options):
                attrs.append("\\Subscribed")
            out.append(r.Data((r.Atom("LIST"), tuple(r.Atom(a) for a in attrs), DELIMITER, mutf7.encode(b.name))))
        return [*out, self._ok(cmd.tag, "LIST completed")]

    async def do_lsub(self, cmd: c.Lsub) -> list[r.Response]:
        if cmd.pattern == "":
            return [
                r.Data((r.Atom("LSUB"), (r.Atom("\\Noselect"),), DELIMITER, "")),
                self._ok(cmd.tag, "LSUB completed"),
            ]
        boxes = await self._store().mailboxes()
        rx = _pattern_regex(_canonical_pattern(cmd.reference + cmd.pattern))
        out: list[r.Response] = [
            r.Data((r.Atom("LSUB"), (), DELIMITER, mutf7.encode(b.name)))
            for b in boxes
            if b.subscribed and rx.fullmatch(b.name)
        ]
        return [*out, self._ok(cmd.tag, "LSUB completed")]

    async def do_status(self, cmd: c.Status) -> list[r.Response]:
        info = await self._store().status(cmd.mailbox)
        values = {
            "MESSAGES": info.messages,
            "RECENT": info.recent,
            "UIDNEXT": info.uidnext,
            "UIDVALIDITY": info.uidvalidity,
            "UNSEEN": info.unseen,
            "SIZE": info.size,
        }
        items: list[r.Value] = []
        for name in cmd.items:
            items += [r.Atom(name), values[name]]
        return [
            r.Data((r.Atom("STATUS"), mutf7.encode(cmd.mailbox), tuple(items))),
            self._ok(cmd.tag, "STATUS completed"),
        ]

    async def do_append(self, cmd: c.Append) -> list[r.Response]:
        if "\\Recent" in cmd.flags:
            raise _Bad("\\Recent cannot be set by a client")
        if not cmd.message:
            raise _Bad("An empty message cannot be appended")
        res = await self._store().append(cmd.mailbox, cmd.message, cmd.flags, cmd.date)
        return [self._ok(cmd.tag, "APPEND completed", f"APPENDUID {res.uidvalidity} {res.uid}")]

    async def do_idle(self, cmd: c.Idle) -> list[r.Response]:
        """RFC 2177: untagged updates as they happen, until the client sends DONE."""
        await self.send(*await self._sync(allow_expunge=True), r.Continuation("idling"))
        sel = self.selected
        notifier = self.ctx.db.notifier
        with notifier.subscribe([sel.id] if sel is not None else []) as sub:
            read_task: asyncio.Task[bytes] | None = None
            wait_task: asyncio.Task[bool] | None = None
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.cfg.idle_timeout
            try:
                while True:
                    line = self.receiver.next_line()
                    if not isinstance(line, NeedData):
                        if line.strip().upper() == b"DONE":
                            return [*await self._sync(allow_expunge=True), self._ok(cmd.tag, "IDLE terminated")]
                        raise _Bad("Expected DONE to end IDLE")
                    if read_task is None:
                        read_task = asyncio.ensure_future(self.reader.read(READ_CHUNK))
                    if wait_task is None:
                        wait_task = asyncio.ensure_future(sub.wait())
                    left = deadline - loop.time()
                    if left <= 0:
                        await self.send(r.Untagged("BYE", "Autologout: idle for too long"))
                        raise Closing
                    done, _ = await asyncio.wait(
                        {read_task, wait_task}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                    )
                    if read_task in done:
                        data = read_task.result()
                        read_task = None
                        if not data:
                            raise Closing
                        self.receiver.feed(data)
                    if wait_task in done:
                        wait_task = None
                        await self.send(*await self._sync(allow_expunge=True))
            finally:
                for t in (read_task, wait_task):
                    if t is not None and not t.done():
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await t

    # --- selected -------------------------------------------------------------------------------------

    def _sel(self) -> Selected:
        if self.selected is None:  # pragma: no cover - the state table allows this only when selected
            raise RuntimeError("no mailbox selected")
        return self.selected

    def _writable(self) -> Selected:
        sel = self._sel()
        if sel.readonly:
            raise MailError("The mailbox is selected read-only (EXAMINE)", "READ-ONLY")
        return sel

    async def do_check(self, cmd: c.Check) -> list[r.Response]:
        return [self._ok(cmd.tag, "CHECK completed")]

    def _deselect(self) -> None:
        self.selected = None
        self.state = ImapState.AUTHENTICATED

    async def do_close(self, cmd: c.Close) -> list[r.Response]:
        sel = self._sel()
        if not sel.readonly:
            await self._store().expunge(sel.id, [u for u in sel.uids if "\\Deleted" in sel.flags[u]])
        self._deselect()
        return [self._ok(cmd.tag, "CLOSE completed")]

    async def do_unselect(self, cmd: c.Unselect) -> list[r.Response]:
        self._deselect()
        return [self._ok(cmd.tag, "UNSELECT completed")]

    async def do_expunge(self, cmd: c.Expunge) -> list[r.Response]:
        sel = self._writable()
        candidates = [u for u in sel.uids if "\\Deleted" in sel.flags[u] and u not in sel.pending_expunge]
        if cmd.uids is not None and sel.uids:
            wanted = set(cmd.uids.select(candidates, sel.uids[-1]))
            candidates = [u for u in candidates if u in wanted]
        gone = await self._store().expunge(sel.id, candidates) if candidates else []
        return [*sel.remove(gone), self._ok(cmd.tag, "EXPUNGE completed")]

    async def do_search(self, cmd: c.Search) -> list[r.Response]:
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            return [r.Tagged(cmd.tag, "NO", f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")]
        sel = self._sel()
        needs = msgs.search_needs(cmd.key)
        max_seq, max_uid = len(sel.uids), (sel.uids[-1] if sel.uids else 0)
        found: list[int] = []
        pairs = list(enumerate(sel.uids, 1))
        for i in range(0, len(pairs), SEARCH_BATCH if needs.rows else max(1, len(pairs))):
            batch = pairs[i : i + (SEARCH_BATCH if needs.rows else len(pairs))]
            data: dict[int, object] = {}
            if needs.rows:
                rows, _ = await self._store().fetch(
                    sel.id, [u for _, u in batch], meta=needs.meta, body=needs.body, mark_seen=False, audit=needs.body
                )
                data = {d.uid: d for d in rows}
            for seq, uid in batch:
                cand = msgs.Candidate(seq, uid, sel.flags[uid], uid in sel.recent, data.get(uid))  # type: ignore[arg-type]
                if needs.rows and cand.data is None:
                    continue  # expunged meanwhile
                if msgs.matches(cmd.key, cand, max_seq=max_seq, max_uid=max_uid):
                    found.append(uid if cmd.uid else seq)
        return [r.Data((r.Atom("SEARCH"), *found)), self._ok(cmd.tag, "SEARCH completed")]

    async def do_fetch(self, cmd: c.Fetch) -> list[r.Response]:
        sel = self._sel()
        pairs = sel.resolve(cmd.seqset, cmd.uid)
        needs = msgs.fetch_needs(cmd.items)
        mark_seen = needs.sets_seen and not sel.readonly
        out: list[r.Response] = []
        for i in range(0, len(pairs), FETCH_BATCH):
            batch = pairs[i : i + FETCH_BATCH]
            seq_of = {u: s for s, u in batch}
            if (
                needs.meta
                or needs.body
                or mark_seen
                or any(isinstance(x, c.FetchAttr) and x.name in ("INTERNALDATE", "RFC822.SIZE") for x in cmd.items)
            ):
                rows, new_flags = await self._store().fetch(
                    sel.id, list(seq_of), meta=needs.meta, body=needs.body, mark_seen=mark_seen, audit=needs.body
                )
            else:
                rows, new_flags = _flag_rows(sel, list(seq_of)), {}
            for d in rows:
                if d.uid not in sel.flags:
                    continue
                if d.uid in new_flags:
                    sel.flags[d.uid] = new_flags[d.uid]
                flags = sel.flags[d.uid]
                items = msgs.render_fetch(cmd.items, d, flags, d.uid in sel.recent, d.uid in new_flags)
                out.append(r.FetchData(seq_of[d.uid], items))
            if len(pairs) > FETCH_BATCH:  # stream big answers: write each batch as it is ready
                await self.send(*out)
                out = []
        return [*out, self._ok(cmd.tag, "FETCH completed")]

    async def do_store(self, cmd: c.Store) -> list[r.Response]:
        sel = self._writable()
        if "\\Recent" in cmd.flags:
            raise _Bad("\\Recent cannot be set by a client")
        pairs = sel.resolve(cmd.seqset, cmd.uid)
        seq_of = {u: s for s, u in pairs if u not in sel.pending_expunge}
        result = await self._store().store(sel.id, list(seq_of), cmd.mode, cmd.flags)
        out: list[r.Response] = []
        for uid, flags in result.items():
            sel.flags[uid] = flags
            if not cmd.silent:
                items: list[tuple[str, r.Value]] = [("FLAGS", msgs.flag_atoms(flags, uid in sel.recent))]
                if cmd.uid:
                    items.insert(0, ("UID", uid))
                out.append(r.FetchData(seq_of[uid], tuple(items)))
        return [*out, self._ok(cmd.tag, "STORE completed")]

    async def _copy(self, cmd: c.Copy | c.Move, move: bool) -> list[r.Response]:
        sel = self._writable() if move else self._sel()
        pairs = sel.resolve(cmd.seqset, cmd.uid)
        uids = [u for _, u in pairs if u not in sel.pending_expunge]
        res = await self._store().copy(sel.id, uids, cmd.mailbox, move=move)
        code = None
        if res.source_uids:
            src, dst = c.SequenceSet.of(res.source_uids), c.SequenceSet.of(res.dest_uids)
            # RFC 4315: UID sets in COPYUID keep the order of the copies; both lists ascend together
            code = f"COPYUID {res.uidvalidity} {src} {dst}"
        if not move:
            return [self._ok(cmd.tag, "COPY completed", code)]
        out: list[r.Response] = []
        if code:
            out.append(r.Untagged("OK", "Moved", code))
        out += sel.remove(res.source_uids)
        return [*out, self._ok(cmd.tag, "MOVE completed")]

    async def do_copy(self, cmd: c.Copy) -> list[r.Response]:
        return await self._copy(cmd, move=False)

    async def do_move(self, cmd: c.Move) -> list[r.Response]:
        return await self._copy(cmd, move=True)


def _flag_rows(sel: Selected, uids: Sequence[int]) -> list[MessageData]:
    """FETCH of FLAGS/UID only: answered from the session's view (just synchronised), no database read."""
    import datetime as dt

    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return [MessageData(u, sel.flags[u], epoch, 0) for u in uids if u in sel.flags]


def _canonical_pattern(p: str) -> str:
    if p.upper() == "INBOX" or p.upper().startswith("INBOX" + DELIMITER):
        return "INBOX" + p[5:]
    return p


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """RFC 3501 §6.3.8: ``*`` matches anything, ``%`` anything but the hierarchy delimiter."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)
