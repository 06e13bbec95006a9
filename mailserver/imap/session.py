"""One IMAP connection: reads bytes, feeds the sans-IO receiver, dispatches commands, writes responses.

Implementation notes (invariants):
- This is the only IMAP module that does I/O. Parsing is ``protocol.parser``;
  the state machine, the BAD counter and the answers to parse errors are
  ``protocol.states.Connection``; the selected-mailbox view, its diffing and the
  EXPUNGE hold-back are ``protocol.selected``; LIST/LSUB are ``protocol.names``;
  SASL PLAIN is ``mailserver.sasl``; the work is ``mailstore.MailStore``.
- Dispatch is ``HANDLERS[type(command)]``, a table checked at import against
  ``commands.COMMANDS``: one handler per command class. The state table answers
  BAD before any handler runs. A handler returns its responses; the session
  puts the selected mailbox's news before the tagged one and writes. Only IDLE
  (``+ idling`` and its pushes), AUTHENTICATE (``+``), STARTTLS (its OK precedes
  the handshake) and FETCH of more than FETCH_BATCH messages (memory) write
  before they return.
- Every write of a selected session goes through ``Selected.announce``: a
  keyword reaches the client in FLAGS before any FETCH carries it.
- No database session is open while the client is idle or while responses are
  written: each MailStore call closes its unit of work before we write.
- LOGIN and AUTHENTICATE are refused before TLS (LOGINDISABLED; RFC 3501 §6.2.3).
- Bounds (``[imap]`` config): MAX_LINE, MAX_LITERAL, nesting depth,
  BAD_COMMAND_LIMIT (consecutive, then BYE), idle timeouts (IDLE included).
- Logs carry ids only; LOGIN and AUTHENTICATE arguments are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import ssl
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailserver import __version__, logs, sasl
from mailserver.imap import messages as msgs
from mailserver.imap.errors import MailboxGone, MailError
from mailserver.imap.mailstore import MailStore, MessageData, Snapshot
from mailserver.imap.protocol import capabilities as caps
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7, names
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.parser import ImapParseError, ImapReceiver, NeedData, NeedLiteral
from mailserver.imap.protocol.selected import Selected, SequenceError, expunge_allowed
from mailserver.imap.protocol.states import Connection, ImapState

if TYPE_CHECKING:
    from directory.auth import Authenticator
    from mailserver.context import Context

log = logging.getLogger("masante.imap")

READ_CHUNK = 65536
CLOSE_TIMEOUT = 2.0  # seconds a closing connection waits for the peer's TLS close_notify
FETCH_BATCH = 100  # messages per unit of work in FETCH / SEARCH
SEARCH_BATCH = 200
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class Closing(Exception):
    """End the connection (after the BYE already written)."""


class _Bad(Exception):
    """A command that is well formed but makes no sense here: answered BAD."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass
class SessionConfig:
    """What a session needs from the service, shared by every connection of a listener."""

    ctx: Context
    authenticator: Authenticator
    tls: ssl.SSLContext | None  # for STARTTLS (None: not offered)
    max_line: int
    max_literal: int
    max_depth: int
    bad_command_limit: int
    login_timeout: float
    idle_timeout: float
    tls_handshake_timeout: float


def _view(snap: Snapshot, readonly: bool) -> Selected:
    m = snap.mailbox
    return Selected(
        mailbox_id=m.id,
        name=m.name,
        uidvalidity=m.uidvalidity,
        uidnext=m.uidnext,
        messages=snap.messages,
        recent=snap.recent,
        modseq=snap.modseq,
        readonly=readonly,
    )


def _ok(tag: str, text: str, code: str | None = None) -> r.Tagged:
    return r.Tagged(tag, "OK", text, code)


class ImapSession:
    def __init__(
        self, cfg: SessionConfig, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, implicit_tls: bool
    ) -> None:
        self.cfg, self.ctx, self.reader, self.writer = cfg, cfg.ctx, reader, writer
        self.tls_active = implicit_tls
        self.conn = Connection(cfg.bad_command_limit)
        # before login a literal can only hold a user name or a password: no room for megabytes
        self.receiver = ImapReceiver(
            max_line=cfg.max_line, max_literal=min(cfg.max_line, cfg.max_literal), max_depth=cfg.max_depth
        )
        self.store: MailStore | None = None
        self.selected: Selected | None = None
        self.id = uuid.uuid4().hex[:12]
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self._closing = False

    @property
    def state(self) -> ImapState:
        return self.conn.state

    def _capability_code(self) -> str:
        return caps.capability_code(self.state, tls_active=self.tls_active, starttls_offered=self.cfg.tls is not None)

    # --- I/O ---------------------------------------------------------------------------------------------

    async def send(self, *responses: r.Response) -> None:
        if not responses:
            return
        out = self.selected.announce(responses) if self.selected is not None else responses
        self.writer.write(b"".join(x.to_bytes() for x in out))
        await self.writer.drain()

    async def _read(self) -> bytes:
        timeout = self.cfg.login_timeout if self.state is ImapState.NOT_AUTHENTICATED else self.cfg.idle_timeout
        try:
            data = await asyncio.wait_for(self.reader.read(READ_CHUNK), timeout)
        except TimeoutError:
            await self.send(r.Untagged("BYE", "Autologout: idle for too long"))
            raise Closing from None
        if not data:
            raise Closing
        return data

    async def _read_line(self) -> bytes:
        while True:
            try:
                line = self.receiver.next_line()
            except ImapParseError as exc:
                raise _Bad(exc.message) from None
            if not isinstance(line, NeedData):
                return line
            self.receiver.feed(await self._read())

    async def shutdown(self) -> None:
        """Server stopping: say goodbye and close."""
        self._closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.send(r.Untagged("BYE", "Server shutting down")), 2)
        with contextlib.suppress(Exception):
            self.writer.close()

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

    async def _answer(self, out: list[r.Response], close: bool) -> None:
        await self.send(*out)
        if close:
            raise Closing

    async def _loop(self) -> None:
        while not self._closing:
            try:
                event = self.receiver.next()
            except ImapParseError as exc:
                answer = self.conn.parse_error(exc)
                self._settle()
                await self._answer(*answer)
                continue
            if isinstance(event, NeedData):
                self.receiver.feed(await self._read())
            elif isinstance(event, NeedLiteral):
                if self.conn.literal_allowed(event.command):
                    await self.send(r.Continuation("Ready for literal data"))
                else:
                    self.receiver.reject_literal()
                    await self._answer(*self.conn.bad(event.tag, "Log in first"))
            else:
                await self._dispatch(event)
                if self.state is ImapState.LOGOUT:
                    raise Closing

    # --- dispatch ------------------------------------------------------------------------------------

    async def _dispatch(self, cmd: c.Command) -> None:
        try:
            out = await self._run(cmd)
        except MailboxGone:
            await self.send(r.Untagged("BYE", "The selected mailbox was deleted by another session"))
            raise Closing from None
        last = out[-1] if out else None
        status = last.status if isinstance(last, r.Tagged) else "OK"
        self.conn.completed(cmd, status)
        self._settle()
        if status == "BAD" and self.conn.over_limit:
            out.append(r.Untagged("BYE", "Too many invalid commands"))
            await self._answer(out, True)
        await self.send(*out)

    def _settle(self) -> None:
        """A mailbox is selected exactly in the SELECTED state (the state table decides)."""
        if self.state is not ImapState.SELECTED:
            self.selected = None

    async def _run(self, cmd: c.Command) -> list[r.Response]:
        refused = self.conn.check(cmd)
        if refused is not None:
            return [refused]
        log.debug("imap.command", extra={"fields": {"command": cmd.name, "tag": cmd.tag}})
        try:
            out = await HANDLERS[type(cmd)](self, cmd)
        except (_Bad, SequenceError) as exc:
            return [*await self._updates(cmd), r.Tagged(cmd.tag, "BAD", f"{cmd.name}: {exc.text}")]
        except MailboxGone:
            raise
        except MailError as exc:
            return [*await self._updates(cmd), r.Tagged(cmd.tag, "NO", exc.text, exc.code)]
        if out and type(cmd) not in (c.Logout, c.Idle):
            out = [*out[:-1], *await self._updates(cmd), out[-1]]
        return out

    async def _updates(self, cmd: c.Command) -> list[r.Response]:
        """Untagged news for the selected mailbox, before a tagged response."""
        return await self._sync(allow_expunge=expunge_allowed(cmd))

    async def _sync(self, *, allow_expunge: bool) -> list[r.Response]:
        sel, store = self.selected, self.store
        if sel is None or store is None:
            return []
        ch = await store.changes(sel.id, sel.modseq, claim_recent=not sel.readonly)
        return sel.apply(ch, allow_expunge=allow_expunge)

    def _store(self) -> MailStore:
        if self.store is None:  # pragma: no cover - the state table allows this only after login
            raise RuntimeError("no account in this state")
        return self.store

    def _sel(self, *, writable: bool = False) -> Selected:
        if self.selected is None:  # pragma: no cover - the state table allows this only when selected
            raise RuntimeError("no mailbox selected")
        if writable and self.selected.readonly:
            raise MailError("The mailbox is selected read-only (EXAMINE)", "READ-ONLY")
        return self.selected

    # --- any state, not authenticated ----------------------------------------------------------------

    async def do_capability(self, cmd: c.Capability) -> list[r.Response]:
        listed = caps.capabilities(self.state, tls_active=self.tls_active, starttls_offered=self.cfg.tls is not None)
        return [r.Data((r.Atom("CAPABILITY"), *(r.Atom(x) for x in listed))), _ok(cmd.tag, "Done")]

    async def do_noop(self, cmd: c.Noop) -> list[r.Response]:
        return [_ok(cmd.tag, "NOOP completed")]

    async def do_check(self, cmd: c.Check) -> list[r.Response]:
        return [_ok(cmd.tag, "CHECK completed")]

    async def do_logout(self, cmd: c.Logout) -> list[r.Response]:
        return [r.Untagged("BYE", "Logging out"), _ok(cmd.tag, "LOGOUT completed")]

    async def do_id(self, cmd: c.Id) -> list[r.Response]:
        # RFC 2971: the client's fields are not logged (they may identify a person's device)
        return [r.Data((r.Atom("ID"), ("name", "masante-mail", "version", __version__))), _ok(cmd.tag, "ID completed")]

    async def do_starttls(self, cmd: c.StartTLS) -> list[r.Response]:
        if self.tls_active:
            raise _Bad("TLS is already active")
        if self.cfg.tls is None:
            raise _Bad("STARTTLS is not offered here")
        await self.send(_ok(cmd.tag, "Begin TLS negotiation now"))
        # RFC 3501 §6.2.1 / RFC 7817: anything the client sent after STARTTLS in clear is dropped
        self.receiver.discard_buffer()
        timeout = self.cfg.tls_handshake_timeout
        await asyncio.wait_for(self.writer.start_tls(self.cfg.tls, ssl_handshake_timeout=timeout), timeout + 5)
        self.tls_active = True
        return []

    async def _login(self, tag: str, user: str, password: str) -> list[r.Response]:
        result = await self.cfg.authenticator.authenticate(user, password, protocol="imap", peer=self.peer)
        if not result.ok or result.account is None:
            return [r.Tagged(tag, "NO", "Invalid user name or password", "AUTHENTICATIONFAILED")]
        self.store = MailStore(self.ctx, result.account)
        self.receiver.max_literal = self.cfg.max_literal
        log.info("imap.login", extra={"fields": {"account": result.account.owner_id}})
        code = caps.capability_code(ImapState.AUTHENTICATED, tls_active=True, starttls_offered=False)
        return [_ok(tag, "Logged in", code)]

    async def do_login(self, cmd: c.Login) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Log in only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        return await self._login(cmd.tag, cmd.user, cmd.password)

    async def do_authenticate(self, cmd: c.Authenticate) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Authenticate only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        if cmd.mechanism not in caps.MECHANISMS:
            return [r.Tagged(cmd.tag, "NO", f"Unsupported mechanism {cmd.mechanism}; use PLAIN", "CANNOT")]
        response: str | bytes | None = cmd.initial
        if response is None:
            await self.send(r.Continuation(""))
            response = (await self._read_line()).strip()
            if response == b"*":  # RFC 3501 §6.2.2
                raise _Bad("Authentication cancelled")
        try:
            creds = sasl.decode_plain(response)
        except sasl.SaslError as exc:
            raise _Bad(f"{exc.text} (PLAIN is base64 of authzid NUL user NUL password)") from None
        if creds.acts_as_another:
            return [r.Tagged(cmd.tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED")]
        return await self._login(cmd.tag, creds.authcid, creds.password)

    # --- authenticated -------------------------------------------------------------------------------

    async def do_enable(self, cmd: c.Enable) -> list[r.Response]:
        return [r.Data((r.Atom("ENABLED"),)), _ok(cmd.tag, "ENABLE completed")]

    async def do_namespace(self, cmd: c.Namespace) -> list[r.Response]:
        personal = (("", names.DELIMITER),)
        return [r.Data((r.Atom("NAMESPACE"), personal, None, None)), _ok(cmd.tag, "NAMESPACE completed")]

    async def _select(self, cmd: c.Select | c.Examine, readonly: bool) -> list[r.Response]:
        self.selected = None  # RFC 3501 §6.3.1: a failed SELECT leaves none selected (states.TRANSITIONS)
        self.selected = _view(await self._store().select(cmd.mailbox, readonly=readonly), readonly)
        return self.selected.select_responses(cmd.tag, cmd.name)

    async def do_select(self, cmd: c.Select) -> list[r.Response]:
        return await self._select(cmd, readonly=False)

    async def do_examine(self, cmd: c.Examine) -> list[r.Response]:
        return await self._select(cmd, readonly=True)

    async def do_create(self, cmd: c.Create) -> list[r.Response]:
        why = names.hierarchy_refusal(cmd.mailbox)
        if why is not None:
            raise MailError(why, "CANNOT")
        await self._store().create(cmd.mailbox)
        return [_ok(cmd.tag, "CREATE completed")]

    async def do_delete(self, cmd: c.Delete) -> list[r.Response]:
        await self._store().delete(cmd.mailbox)
        return [_ok(cmd.tag, "DELETE completed")]

    async def do_rename(self, cmd: c.Rename) -> list[r.Response]:
        why = names.hierarchy_refusal(cmd.new)
        if why is not None:
            raise MailError(why, "CANNOT")
        await self._store().rename(cmd.old, cmd.new)
        return [_ok(cmd.tag, "RENAME completed")]

    async def do_subscribe(self, cmd: c.Subscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, True)
        return [_ok(cmd.tag, "SUBSCRIBE completed")]

    async def do_unsubscribe(self, cmd: c.Unsubscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, False)
        return [_ok(cmd.tag, "UNSUBSCRIBE completed")]

    async def do_list(self, cmd: c.List) -> list[r.Response]:
        boxes = [] if cmd.patterns == ("",) and not cmd.select_options else await self._store().mailboxes()
        return [*names.list_responses(boxes, cmd), _ok(cmd.tag, "LIST completed")]

    async def do_lsub(self, cmd: c.Lsub) -> list[r.Response]:
        boxes = [] if cmd.pattern == "" else await self._store().mailboxes()
        return [*names.lsub_responses(boxes, cmd), _ok(cmd.tag, "LSUB completed")]

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
        items = tuple(v for name in cmd.items for v in (r.Atom(name), values[name]))
        return [r.Data((r.Atom("STATUS"), mutf7.encode(cmd.mailbox), items)), _ok(cmd.tag, "STATUS completed")]

    async def do_append(self, cmd: c.Append) -> list[r.Response]:
        if c.RECENT in cmd.flags:
            raise _Bad("\\Recent cannot be set by a client")
        if not cmd.message:
            raise _Bad("An empty message cannot be appended")
        res = await self._store().append(cmd.mailbox, cmd.message, cmd.flags, cmd.date)
        return [_ok(cmd.tag, "APPEND completed", f"APPENDUID {res.uidvalidity} {res.uid}")]

    async def do_idle(self, cmd: c.Idle) -> list[r.Response]:
        """RFC 2177: untagged updates as they happen, until the client sends DONE."""
        await self.send(*await self._sync(allow_expunge=True), r.Continuation("idling"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.idle_timeout
        read_task: asyncio.Task[bytes] | None = None
        wait_task: asyncio.Task[bool] | None = None
        with self.ctx.db.notifier.subscribe([self.selected.id] if self.selected is not None else []) as sub:
            try:
                while True:
                    line = self.receiver.next_line()
                    if not isinstance(line, NeedData):
                        if line.strip().upper() == b"DONE":
                            return [*await self._sync(allow_expunge=True), _ok(cmd.tag, "IDLE terminated")]
                        raise _Bad("Expected DONE to end IDLE")
                    read_task = read_task or asyncio.ensure_future(self.reader.read(READ_CHUNK))
                    wait_task = wait_task or asyncio.ensure_future(sub.wait())
                    left = deadline - loop.time()
                    if left <= 0:
                        await self.send(r.Untagged("BYE", "Autologout: idle for too long"))
                        raise Closing
                    done, _ = await asyncio.wait({read_task, wait_task}, timeout=left, return_when="FIRST_COMPLETED")
                    if read_task in done:
                        data, read_task = read_task.result(), None
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

    async def do_close(self, cmd: c.Close) -> list[r.Response]:
        sel = self._sel()
        if not sel.readonly:
            await self._store().expunge(sel.id, [u for u in sel.uids if "\\Deleted" in sel.flags[u]])
        self.selected = None  # RFC 3501 §6.4.2: no EXPUNGE responses
        return [_ok(cmd.tag, "CLOSE completed")]

    async def do_unselect(self, cmd: c.Unselect) -> list[r.Response]:
        self.selected = None
        return [_ok(cmd.tag, "UNSELECT completed")]

    async def do_expunge(self, cmd: c.Expunge) -> list[r.Response]:
        sel = self._sel(writable=True)
        candidates = sel.deleted()
        if cmd.uids is not None and sel.uids:
            wanted = set(cmd.uids.select(candidates, sel.uids[-1]))
            candidates = [u for u in candidates if u in wanted]
        gone = await self._store().expunge(sel.id, candidates) if candidates else []
        return [*sel.remove(gone), _ok(cmd.tag, "EXPUNGE completed")]

    async def do_search(self, cmd: c.Search) -> list[r.Response]:
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            return [r.Tagged(cmd.tag, "NO", f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")]
        sel = self._sel()
        needs = msgs.search_needs(cmd.key)
        max_seq, max_uid = len(sel.uids), (sel.uids[-1] if sel.uids else 0)
        found: list[int] = []
        pairs = list(enumerate(sel.uids, 1))
        step = SEARCH_BATCH if needs.rows else max(1, len(pairs))
        for i in range(0, len(pairs), step):
            batch = pairs[i : i + step]
            data: dict[int, MessageData] = {}
            if needs.rows:
                rows, _ = await self._store().fetch(
                    sel.id, [u for _, u in batch], meta=needs.meta, body=needs.body, mark_seen=False, audit=needs.body
                )
                data = {d.uid: d for d in rows}
            for seq, uid in batch:
                cand = msgs.Candidate(seq, uid, sel.flags[uid], uid in sel.recent, data.get(uid))
                if needs.rows and cand.data is None:
                    continue  # expunged meanwhile
                if msgs.matches(cmd.key, cand, max_seq=max_seq, max_uid=max_uid):
                    found.append(uid if cmd.uid else seq)
        return [r.Data((r.Atom("SEARCH"), *found)), _ok(cmd.tag, "SEARCH completed")]

    async def do_fetch(self, cmd: c.Fetch) -> list[r.Response]:
        sel = self._sel()
        pairs = sel.resolve(cmd.seqset, cmd.uid)
        needs = msgs.fetch_needs(cmd.items)
        mark_seen = needs.sets_seen and not sel.readonly
        row_attrs = ("INTERNALDATE", "RFC822.SIZE")
        loads = needs.meta or needs.body or mark_seen
        loads = loads or any(isinstance(x, c.FetchAttr) and x.name in row_attrs for x in cmd.items)
        out: list[r.Response] = []
        for i in range(0, len(pairs), FETCH_BATCH):
            seq_of = {u: s for s, u in pairs[i : i + FETCH_BATCH]}
            if loads:
                rows, new_flags = await self._store().fetch(
                    sel.id, list(seq_of), meta=needs.meta, body=needs.body, mark_seen=mark_seen, audit=needs.body
                )
            else:  # FLAGS/UID only: answered from the session's view (just synchronised), no database read
                rows, new_flags = [MessageData(u, sel.flags[u], _EPOCH, 0) for u in seq_of if u in sel.flags], {}
            for d in rows:
                if d.uid not in sel.flags:
                    continue
                if d.uid in new_flags:
                    sel.set_flags(d.uid, new_flags[d.uid])
                items = msgs.render_fetch(cmd.items, d, sel.flags[d.uid], d.uid in sel.recent, d.uid in new_flags)
                out.append(r.FetchData(seq_of[d.uid], items))
            if len(pairs) > FETCH_BATCH:  # stream big answers: write each batch as it is ready
                await self.send(*out)
                out = []
        return [*out, _ok(cmd.tag, "FETCH completed")]

    async def do_store(self, cmd: c.Store) -> list[r.Response]:
        sel = self._sel(writable=True)
        if c.RECENT in cmd.flags:
            raise _Bad("\\Recent cannot be set by a client")
        seq_of = sel.live(sel.resolve(cmd.seqset, cmd.uid))
        result = await self._store().store(sel.id, list(seq_of), cmd.mode, cmd.flags) if seq_of else {}
        for uid, flags in result.items():
            sel.set_flags(uid, flags)
        out: list[r.Response] = [] if cmd.silent else [sel.flag_fetch(u, with_uid=cmd.uid) for u in result]
        return [*out, _ok(cmd.tag, "STORE completed")]

    async def _copy(self, cmd: c.Copy | c.Move, move: bool) -> list[r.Response]:
        sel = self._sel(writable=move)
        uids = list(sel.live(sel.resolve(cmd.seqset, cmd.uid)))
        res = await self._store().copy(sel.id, uids, cmd.mailbox, move=move)
        code = None
        if res.source_uids:
            # RFC 4315: UID sets in COPYUID keep the order of the copies; both lists ascend together
            code = f"COPYUID {res.uidvalidity} {c.SequenceSet.of(res.source_uids)} {c.SequenceSet.of(res.dest_uids)}"
        if not move:
            return [_ok(cmd.tag, "COPY completed", code)]
        moved: list[r.Response] = [r.Untagged("OK", "Moved", code)] if code else []
        return [*moved, *sel.remove(res.source_uids), _ok(cmd.tag, "MOVE completed")]

    async def do_copy(self, cmd: c.Copy) -> list[r.Response]:
        return await self._copy(cmd, move=False)

    async def do_move(self, cmd: c.Move) -> list[r.Response]:
        return await self._copy(cmd, move=True)


Handler = Callable[[ImapSession, Any], Awaitable[list[r.Response]]]

#: one handler per command class (checked below against ``commands.COMMANDS``)
HANDLERS: Mapping[type[c.Command], Handler] = {
    c.Capability: ImapSession.do_capability,
    c.Noop: ImapSession.do_noop,
    c.Logout: ImapSession.do_logout,
    c.StartTLS: ImapSession.do_starttls,
    c.Login: ImapSession.do_login,
    c.Authenticate: ImapSession.do_authenticate,
    c.Enable: ImapSession.do_enable,
    c.Id: ImapSession.do_id,
    c.Namespace: ImapSession.do_namespace,
    c.Select: ImapSession.do_select,
    c.Examine: ImapSession.do_examine,
    c.Create: ImapSession.do_create,
    c.Delete: ImapSession.do_delete,
    c.Rename: ImapSession.do_rename,
    c.Subscribe: ImapSession.do_subscribe,
    c.Unsubscribe: ImapSession.do_unsubscribe,
    c.List: ImapSession.do_list,
    c.Lsub: ImapSession.do_lsub,
    c.Status: ImapSession.do_status,
    c.Append: ImapSession.do_append,
    c.Check: ImapSession.do_check,
    c.Close: ImapSession.do_close,
    c.Unselect: ImapSession.do_unselect,
    c.Expunge: ImapSession.do_expunge,
    c.Search: ImapSession.do_search,
    c.Fetch: ImapSession.do_fetch,
    c.Store: ImapSession.do_store,
    c.Copy: ImapSession.do_copy,
    c.Move: ImapSession.do_move,
    c.Idle: ImapSession.do_idle,
}


def check_handlers(handlers: Mapping[type[c.Command], Handler] = HANDLERS) -> None:
    """Every command class of the grammar has exactly one handler, and no handler serves two."""
    missing = set(c.COMMANDS) - set(handlers)
    extra = set(handlers) - set(c.COMMANDS)
    shared = len(set(handlers.values())) != len(handlers)
    if missing or extra or shared:
        raise TypeError(f"IMAP handler table: missing {missing}, unknown {extra}, shared handlers: {shared}")


check_handlers()
