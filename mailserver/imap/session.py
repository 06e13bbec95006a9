"""One IMAP connection: reads bytes, feeds the sans-IO receiver, dispatches commands, writes responses.

Implementation notes (invariants):
- This is the only IMAP module that touches the socket. Parsing is ``protocol.parser``;
  the state machine, the BAD counter and the answers to parse errors are
  ``protocol.states.Connection``; the selected-mailbox view, its diffing and the
  EXPUNGE hold-back are ``protocol.selected``; LIST/LSUB are ``protocol.names``;
  SASL (PLAIN, XOAUTH2, OAUTHBEARER, EXTERNAL) is ``mailserver.sasl``; the commands that only talk to the store
  are ``handlers.MailHandlers`` and ``extensions.ExtensionHandlers`` (this class's bases); the work is
  ``mailstore.MailStore``.
- Dispatch is ``HANDLERS[type(command)]``, a table checked at import against
  ``commands.COMMANDS``: one handler per command class. The state table answers
  BAD before any handler runs. A handler returns its responses; the session
  puts the selected mailbox's news before the tagged one and writes. Only IDLE
  (``+ idling`` and its pushes), AUTHENTICATE (``+``), STARTTLS (its OK precedes
  the handshake), COMPRESS (its OK is the last octets in clear) and FETCH of
  more than ``handlers.FETCH_BATCH`` messages (memory) write before they return.
- After NOTIFY SET (RFC 5465, ``imap.notify``), the session waits for the next
  command and for the NOTIFY subscription at once, and writes the events in
  between without waiting for the client to read them (``_push_news``: past
  ``notify.MAX_BACKLOG`` unread octets, NOTIFICATIONOVERFLOW and NOTIFY off).
- After COMPRESS DEFLATE (RFC 4978) every read goes through ``_recv`` (inflated)
  and every write through ``send`` (deflated): ``compress.Deflate``.
- Every write of a selected session goes through ``Selected.announce``: a
  keyword reaches the client in FLAGS before any FETCH carries it.
- No database session is open while the client is idle or while responses are
  written: each MailStore call closes its unit of work before we write.
- LOGIN and AUTHENTICATE are refused before TLS (LOGINDISABLED; RFC 3501 §6.2.3).
- A session logged in with an app credential keeps its ``scope``
  (``AuthResult.scope``) and works on the store ``imap.scoped.open_store``
  gives it; before each of its commands the credential is checked again: once
  revoked or expired, the session is answered BYE (reason ``revoked``).
- Bounds (``[imap]`` config): MAX_LINE, MAX_LITERAL, nesting depth,
  BAD_COMMAND_LIMIT (consecutive, then BYE), idle timeouts (IDLE included).
- Logs carry ids only; LOGIN and AUTHENTICATE arguments are never logged. A
  tagged BAD is logged as ``imap.bad`` with the command name only (its text can
  quote the client), a tagged NO as ``imap.no`` with the command name and the
  response code; every connection ends with one ``imap.disconnect`` and its
  ``reason`` (logout, timeout, too-slow, too-many-bad, tls-failed,
  client-closed, shutdown, mailbox-gone, revoked, bad-compression, error).
- A command line has an absolute deadline (``[imap] line_deadline``) from its
  first byte, whatever the silences between bytes: a client trickling a byte at
  a time is answered BYE and closed (issue 14). The literals of an
  authenticated command (APPEND's message) are exempt: ``max_literal`` and the
  idle timeout bound them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import ssl
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from crypto.tls import peer_certificate
from mailserver import logs, metrics, sasl
from mailserver.errors import MailboxGone, MailError
from mailserver.imap.compress import Deflate
from mailserver.imap.errors import response_code
from mailserver.imap.extensions import ExtensionHandlers
from mailserver.imap.handlers import Bad, ok
from mailserver.imap.mailstore import MailStore
from mailserver.imap.notify import MAX_BACKLOG, Notifications, badevent, overflow
from mailserver.imap.protocol import capabilities as caps
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.parser import ImapParseError, ImapReceiver, NeedData, NeedLiteral
from mailserver.imap.protocol.selected import Selected, SequenceError
from mailserver.imap.protocol.states import Connection, ImapState
from mailserver.imap.scoped import open_store, still_valid
from mailserver.imap.tlsbuffer import share_tls_read_buffer

if TYPE_CHECKING:
    from directory.app_passwords import Scope
    from directory.auth import Authenticator, AuthResult
    from directory.limits import ConnectionCaps, Lease
    from mailserver.admission import Admission
    from mailserver.context import Context

log = logging.getLogger("masante.imap")

READ_CHUNK = 65536
CLOSE_TIMEOUT = 2.0  # seconds a closing connection waits for the peer's TLS close_notify
LINGER = 1.0  # seconds a closing plain connection reads (and drops) what the client still sends, until it closes


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
    line_deadline: float = 60.0
    caps: ConnectionCaps | None = None  # connections per source and per account (None: no caps)


class ImapSession(ExtensionHandlers):
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
        self.scope: Scope | None = None  # the app credential this session logged in with (None: the password)
        self.selected: Selected | None = None
        self.id = uuid.uuid4().hex[:12]
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) else "unknown"
        self._closing = False
        self.reason = "client-closed"  # why the connection ended (the ``imap.disconnect`` log line)
        self._command: str | None = None  # the command being answered (the BAD and NO log lines)
        self._line_started: float | None = None  # when the first byte of the current command line arrived
        self._line_exempt = False  # the current command is in an authenticated literal: no line deadline
        #: the SASL mechanisms offered over TLS (PLAIN; bearer tokens and EXTERNAL where configured)
        self.mechanisms = sasl_mechanisms(cfg)
        self.lease: Lease | None = None  # this connection's place in ``cfg.caps`` (set by the listener)
        self.deflate: Deflate | None = None  # COMPRESS=DEFLATE (RFC 4978) once the client asked for it
        self.notify: Notifications | None = None  # RFC 5465 NOTIFY SET in effect (``imap.notify``)

    @property
    def state(self) -> ImapState:
        return self.conn.state

    def _capability_code(self) -> str:
        return caps.capability_code(
            self.state,
            tls_active=self.tls_active,
            starttls_offered=self.cfg.tls is not None,
            mechanisms=self.mechanisms,
            append_limit=self.append_limit,
        )

    @property
    def append_limit(self) -> int:
        """RFC 7889 APPENDLIMIT: the largest message APPEND takes (message size and literal bounds)."""
        return min(self.ctx.config.limits.max_message_size, self.cfg.max_literal)

    # --- I/O ---------------------------------------------------------------------------------------------

    def names_in_utf8(self, on: bool) -> None:
        self.receiver.utf8 = on

    async def send(self, *responses: r.Response) -> None:
        if not responses:
            return
        self._write(responses)
        await self.writer.drain()

    def _write(self, responses: tuple[r.Response, ...]) -> None:
        """Put ``responses`` in the transport's buffer (``send`` then waits for the client to take them)."""
        out = self.selected.announce(responses) if self.selected is not None else responses
        for x in out:
            if isinstance(x, r.Tagged) and x.status in ("BAD", "NO"):
                self._log_refusal(x)
        data = b"".join(x.to_bytes() for x in out)
        self.writer.write(self.deflate.deflate(data) if self.deflate is not None else data)

    def _log_refusal(self, resp: r.Tagged) -> None:
        """``imap.bad`` / ``imap.no``: the command name (ours once parsed) and the code, never the text."""
        name = self._command or "unparsed"
        if resp.status == "BAD":
            log.info("imap.bad", extra={"fields": {"command": name}})
        else:
            code = resp.code.split()[0] if resp.code else None  # the code's atom, not its arguments
            log.info("imap.no", extra={"fields": {"command": name, "code": code}})

    def _line_done(self) -> None:
        """A command was answered: the next line's deadline starts with its first byte (now, if buffered)."""
        self._command = None
        self._line_exempt = False
        self._line_started = asyncio.get_running_loop().time() if self.receiver.buffered else None

    async def _bye(self, reason: str, text: str) -> NoReturn:
        self.reason = reason
        await self.send(r.Untagged("BYE", text))
        raise Closing

    async def _read(self) -> bytes:
        loop = asyncio.get_running_loop()
        timeout = self.cfg.login_timeout if self.state is ImapState.NOT_AUTHENTICATED else self.cfg.idle_timeout
        if self.state is not ImapState.NOT_AUTHENTICATED and self.receiver.in_literal:
            self._line_exempt = True  # an APPEND's message: max_literal and the idle timeout bound it
        deadline_bound = False
        if self._line_started is not None and not self._line_exempt:
            left = self._line_started + self.cfg.line_deadline - loop.time()
            if left < timeout:
                timeout, deadline_bound = max(left, 0.0), True
        try:
            # a timeout scope, not wait_for: no task of its own per read of every idle connection (issue 10)
            async with asyncio.timeout(timeout):
                data = await self._recv()
        except TimeoutError:
            if deadline_bound:  # issue 14: silence is not the only way to hold a connection
                await self._bye(
                    "too-slow", f"Too slow: a command line must arrive within {self.cfg.line_deadline:g} seconds"
                )
            await self._bye("timeout", "Autologout: idle for too long")
        if not data:
            raise Closing
        if self._line_started is None:
            self._line_started = loop.time()
        return data

    async def _read_notified(self) -> bytes:
        """``_read``; meanwhile, between commands, the events NOTIFY asked for are written as they happen."""
        if self.notify is None or self.receiver.buffered:
            return await self._read()
        read_task = asyncio.ensure_future(self._read())
        try:
            while self.notify is not None:
                wait_task = asyncio.ensure_future(self.notify.subscription().wait())
                try:
                    done, _ = await asyncio.wait({read_task, wait_task}, return_when="FIRST_COMPLETED")
                finally:
                    await _cancelled(wait_task)
                if read_task in done:
                    break
                await self._push_news()
            return await read_task
        finally:
            await _cancelled(read_task)

    async def _push_news(self) -> None:
        """Write what NOTIFY asked for, without waiting for the client to read it: one that leaves more than
        ``MAX_BACKLOG`` octets unread is told NOTIFICATIONOVERFLOW and NOTIFY is off (RFC 5465 §5.8)."""
        if self.notify is None:
            return
        if self.writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            self._notify_off()
            log.info("imap.notify-overflow")
            self._write((overflow(),))
            return
        try:
            news = await self.notify.news()
        except MailboxGone:
            await self._bye("mailbox-gone", "The selected mailbox was deleted by another session")
        if news:
            self._write(tuple(news))

    def _notify_off(self) -> None:
        if self.notify is not None:
            self.notify.close()
            self.notify = None

    async def do_notify(self, cmd: c.Notify) -> list[r.Response]:
        """RFC 5465: NOTIFY NONE, or NOTIFY SET replacing what was asked (the tagged OK implies a NOOP)."""
        refused = badevent(cmd)
        if refused is not None:
            return [refused]
        self._notify_off()
        if cmd.groups is None or self.store is None:
            return [ok(cmd.tag, "NOTIFY completed")]
        notify = Notifications(cmd, self, self.store.account.id)
        out = await notify.start(cmd.tag, cmd.status)
        last = out[-1]
        if isinstance(last, r.Tagged) and last.status == "OK":
            self.notify = notify
        else:
            notify.close()
        return out

    async def _recv(self) -> bytes:
        """The client's next octets, inflated once COMPRESS is on; b"" only at the end of the stream."""
        if self.deflate is None:
            return await self.reader.read(READ_CHUNK)
        while True:
            data = b"" if self.deflate.pending else await self.reader.read(READ_CHUNK)
            if not data and not self.deflate.pending:
                return b""
            try:
                out = self.deflate.inflate(data)
            except zlib.error:
                self.reason = "bad-compression"
                raise Closing from None
            if out:
                return out

    async def _read_line(self) -> bytes:
        while True:
            try:
                line = self.receiver.next_line()
            except ImapParseError as exc:
                raise Bad(exc.message) from None
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
            self.reason = "error"
            log.exception("imap.session-failed")
            with contextlib.suppress(Exception):
                await self.send(r.Untagged("BYE", "Internal server error, sorry", "SERVERBUG"))
        finally:
            self._notify_off()
            await self._close_transport()
            log.info("imap.disconnect", extra={"fields": {"reason": "shutdown" if self._closing else self.reason}})

    async def _close_transport(self) -> None:
        """Close politely (TLS close_notify), but never wait long for a peer that does not answer.

        Without TLS, the end of the stream is sent first and what the client still sends is read and dropped until
        it closes too (``LINGER`` seconds at most): closing a socket with unread input sends a reset, and a reset
        can destroy the goodbye (a BYE for a line that came too slowly) before the client reads it."""
        if self.writer.can_write_eof() and not self.writer.transport.is_closing():
            with contextlib.suppress(Exception):
                self.writer.write_eof()
                async with asyncio.timeout(LINGER):
                    while await self.reader.read(READ_CHUNK):
                        pass
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
                if answer[1]:
                    self.reason = "too-many-bad" if self.conn.over_limit else "bad-command"
                await self._answer(*answer)
                self._line_done()
                continue
            if isinstance(event, NeedData):
                self.receiver.feed(await self._read_notified())
            elif isinstance(event, NeedLiteral):
                if self.conn.literal_allowed(event.command):
                    await self.send(r.Continuation("Ready for literal data"))
                else:
                    self.receiver.reject_literal()
                    answer = self.conn.bad(event.tag, "Log in first")
                    if answer[1]:
                        self.reason = "too-many-bad"
                    await self._answer(*answer)
                    self._line_done()
            else:
                self._command = event.name
                await self._dispatch(event)
                self._line_done()
                if self.state is ImapState.LOGOUT:
                    self.reason = "logout"
                    raise Closing

    # --- dispatch ------------------------------------------------------------------------------------

    async def _dispatch(self, cmd: c.Command) -> None:
        try:
            out = await self._run(cmd)
        except MailboxGone:
            await self._bye("mailbox-gone", "The selected mailbox was deleted by another session")
        last = out[-1] if out else None
        status = last.status if isinstance(last, r.Tagged) else "OK"
        self.conn.completed(cmd, status)
        self._settle()
        if status == "BAD" and self.conn.over_limit:
            out.append(r.Untagged("BYE", "Too many invalid commands"))
            self.reason = "too-many-bad"
            await self._answer(out, True)
        if self.notify is not None:
            await self.notify.after(cmd)
        await self.send(*out)

    def _settle(self) -> None:
        """A mailbox is selected exactly in the SELECTED state (the state table decides)."""
        if self.state is not ImapState.SELECTED:
            self.selected = None

    async def _run(self, cmd: c.Command) -> list[r.Response]:
        refused = self.conn.check(cmd)
        if refused is not None:
            return [refused]
        if self.scope is not None and self.store is not None and not await still_valid(self.ctx, self.scope):
            await self._bye("revoked", "The app password of this session was revoked or has expired")
        log.debug("imap.command", extra={"fields": {"command": cmd.name, "tag": cmd.tag}})
        metrics.IMAP_COMMANDS.labels(cmd.name).inc()
        cmd = self._with_saved(cmd)
        try:
            out = await HANDLERS[type(cmd)](self, cmd)
        except (Bad, SequenceError) as exc:
            return [*await self._updates(cmd), r.Tagged(cmd.tag, "BAD", f"{cmd.name}: {exc.text}")]
        except MailboxGone:
            raise
        except MailError as exc:
            return [*await self._updates(cmd), r.Tagged(cmd.tag, "NO", exc.text, response_code(exc))]
        if out and type(cmd) not in (c.Logout, c.Idle):
            out = [*out[:-1], *await self._updates(cmd), out[-1]]
            last, sel = out[-1], self.selected
            if (
                isinstance(cmd, c.Expunge)
                and sel is not None
                and sel.qresync
                and isinstance(last, r.Tagged)
                and last.status == "OK"
            ):
                # RFC 7162 §3.2.10: with QRESYNC the tagged OK of (UID) EXPUNGE says HIGHESTMODSEQ, once
                # every change up to it was told (the news just above)
                out[-1] = r.Tagged(last.tag, last.status, last.text, f"HIGHESTMODSEQ {sel.highest_modseq()}")
        return out

    # --- any state, not authenticated ----------------------------------------------------------------

    async def do_capability(self, cmd: c.Capability) -> list[r.Response]:
        listed = caps.capabilities(
            self.state,
            tls_active=self.tls_active,
            starttls_offered=self.cfg.tls is not None,
            mechanisms=self.mechanisms,
            append_limit=self.append_limit,
        )
        return [r.Data((r.Atom("CAPABILITY"), *(r.Atom(x) for x in listed))), ok(cmd.tag, "Done")]

    async def do_starttls(self, cmd: c.StartTLS) -> list[r.Response]:
        if self.tls_active:
            raise Bad("TLS is already active")
        if self.cfg.tls is None:
            raise Bad("STARTTLS is not offered here")
        await self.send(ok(cmd.tag, "Begin TLS negotiation now"))
        # RFC 3501 §6.2.1 / RFC 7817: anything the client sent after STARTTLS in clear is dropped
        self.receiver.discard_buffer()
        timeout = self.cfg.tls_handshake_timeout
        try:
            # awaited directly, not in wait_for's task: start_tls must pause the plain reading before the
            # loop polls the socket again, or the ClientHello would land in the StreamReader
            await self.writer.start_tls(self.cfg.tls, ssl_handshake_timeout=timeout)
        except (ssl.SSLError, ConnectionAbortedError, TimeoutError) as exc:
            # asyncio ends a handshake that outlives ssl_handshake_timeout with ConnectionAbortedError
            reason = tls_reason(exc) if isinstance(exc, ssl.SSLError) else "timeout"
            log.info("imap.tls-failed", extra={"fields": {"endpoint": "starttls", "reason": reason}})
            self.reason = "tls-failed"
            raise Closing from None
        share_tls_read_buffer(self.writer)
        self.tls_active = True
        return []

    async def do_compress(self, cmd: c.Compress) -> list[r.Response]:
        """RFC 4978: the tagged OK is the last thing sent in clear; both directions are deflated after it."""
        if self.deflate is not None:
            return [r.Tagged(cmd.tag, "NO", "Compression is already active", "COMPRESSIONACTIVE")]
        if cmd.mechanism != "DEFLATE":
            return [r.Tagged(cmd.tag, "NO", f"{cmd.mechanism} is not offered: use COMPRESS DEFLATE", "CANNOT")]
        await self.send(ok(cmd.tag, "DEFLATE active"))
        self.deflate = Deflate()
        sent_on = self.receiver.take_buffer()  # a client that did not wait for the OK: already deflated
        if sent_on:
            try:
                self.receiver.feed(self.deflate.inflate(sent_on))
            except zlib.error:
                self.reason = "bad-compression"
                raise Closing from None
        return []

    async def _login(self, tag: str, user: str, password: str) -> list[r.Response]:
        result = await self.cfg.authenticator.authenticate(user, password, protocol="imap", peer=self.peer)
        return self._logged_in(tag, result, "Invalid user name or password")

    def _logged_in(self, tag: str, result: AuthResult, refusal: str) -> list[r.Response]:
        if result.refusal is not None:  # locked out (directory.limits): refused unchecked
            return [r.Tagged(tag, "NO", result.refusal, "UNAVAILABLE")]
        if not result.ok or result.account is None:
            return [r.Tagged(tag, "NO", refusal, "AUTHENTICATIONFAILED")]
        if self.lease is not None and self.cfg.caps is not None:
            refused = self.cfg.caps.login(self.lease, result.account.id)
            if refused is not None:
                return [r.Tagged(tag, "NO", refused, "LIMIT")]
        self.store = open_store(self.ctx, result.account, self.cfg.admission, result.scope)
        self.scope = result.scope
        self.receiver.max_literal = self.cfg.max_literal
        credential = result.scope.credential_id if result.scope is not None else None
        log.info("imap.login", extra={"fields": {"account": result.account.owner_id, "credential": credential}})
        code = caps.capability_code(
            ImapState.AUTHENTICATED, tls_active=True, starttls_offered=False, append_limit=self.append_limit
        )
        return [ok(tag, "Logged in", code)]

    async def do_login(self, cmd: c.Login) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Log in only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        return await self._login(cmd.tag, cmd.user, cmd.password)

    async def do_authenticate(self, cmd: c.Authenticate) -> list[r.Response]:
        if not self.tls_active:
            return [r.Tagged(cmd.tag, "NO", "Authenticate only over TLS: use STARTTLS first", "PRIVACYREQUIRED")]
        if cmd.mechanism not in self.mechanisms:
            offered = ", ".join(self.mechanisms)
            return [r.Tagged(cmd.tag, "NO", f"Unsupported mechanism {cmd.mechanism}; use {offered}", "CANNOT")]
        response: str | bytes | None = cmd.initial
        if response is None:
            response = await self._sasl_response("")
        if cmd.mechanism in ("XOAUTH2", "OAUTHBEARER"):
            return await self._authenticate_bearer(cmd, response)
        if cmd.mechanism == "EXTERNAL":
            return await self._authenticate_external(cmd, response)
        try:
            creds = sasl.decode_plain(response)
        except sasl.SaslError as exc:
            raise Bad(f"{exc.text} (PLAIN is base64 of authzid NUL user NUL password)") from None
        if creds.acts_as_another:
            return [r.Tagged(cmd.tag, "NO", "Acting as another user is not allowed", "AUTHORIZATIONFAILED")]
        return await self._login(cmd.tag, creds.authcid, creds.password)

    async def _sasl_response(self, challenge: str) -> bytes:
        """Send a ``+`` continuation (base64 ``challenge``) and read the client's response line."""
        await self.send(r.Continuation(challenge))
        self._line_started = None  # the SASL response is a line of its own, with its own deadline
        response = (await self._read_line()).strip()
        if response == b"*":  # RFC 3501 §6.2.2
            raise Bad("Authentication cancelled")
        return response

    async def _authenticate_bearer(self, cmd: c.Authenticate, response: str | bytes) -> list[r.Response]:
        """XOAUTH2 / OAUTHBEARER (RFC 7628): a failure is the JSON error challenge, the client's ^A, then NO."""
        try:
            creds = sasl.decode_bearer(cmd.mechanism, response)
        except sasl.SaslError as exc:
            raise Bad(exc.text) from None
        auth = self.cfg.authenticator
        result = await auth.authenticate_bearer(creds.token, creds.authzid, protocol="imap", peer=self.peer)
        if not result.ok:
            where = auth.bearer.settings.openid_configuration if auth.bearer is not None else None
            error = sasl.bearer_error(openid_configuration=where)
            # the client answers the error challenge with ^A (RFC 7628 §3.2.3), XOAUTH2 clients often with an
            # empty line; whatever it sends, the answer is the failure (a * cancels: BAD, as everywhere)
            await self._sasl_response(base64.b64encode(error).decode("ascii"))
        return self._logged_in(cmd.tag, result, "Invalid or expired token, or not for this mailbox")

    async def _authenticate_external(self, cmd: c.Authenticate, response: str | bytes) -> list[r.Response]:
        """EXTERNAL (RFC 4422 appendix A): the TLS client certificate, bound to an APP or ORG mailbox."""
        try:
            authzid = sasl.decode_external(response)
        except sasl.SaslError as exc:
            raise Bad(exc.text) from None
        der = peer_certificate(self.writer.get_extra_info("ssl_object"))
        result = await self.cfg.authenticator.authenticate_certificate(der, authzid, protocol="imap", peer=self.peer)
        refusal = "No client certificate bound to this mailbox" if der is not None else "No client certificate"
        return self._logged_in(cmd.tag, result, refusal)

    async def do_idle(self, cmd: c.Idle) -> list[r.Response]:
        """RFC 2177: untagged updates as they happen, until the client sends DONE."""
        await self.send(*await self._news(allow_expunge=True), r.Continuation("idling"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.idle_timeout
        read_task: asyncio.Task[bytes] | None = None
        wait_task: asyncio.Task[bool] | None = None
        with self.ctx.db.notifier.subscribe([self.selected.id] if self.selected is not None else []) as own:
            try:
                while True:
                    line = self.receiver.next_line()
                    if not isinstance(line, NeedData):
                        if line.strip().upper() == b"DONE":
                            return [*await self._news(allow_expunge=True), ok(cmd.tag, "IDLE terminated")]
                        raise Bad("Expected DONE to end IDLE")
                    read_task = read_task or asyncio.ensure_future(self._recv())
                    # RFC 5465 §4: with NOTIFY, IDLE tells exactly what NOTIFY asked for
                    sub = self.notify.subscription() if self.notify is not None else own
                    wait_task = wait_task or asyncio.ensure_future(sub.wait())
                    left = deadline - loop.time()
                    if left <= 0:
                        await self._bye("timeout", "Autologout: idle for too long")
                    done, _ = await asyncio.wait({read_task, wait_task}, timeout=left, return_when="FIRST_COMPLETED")
                    if read_task in done:
                        data, read_task = read_task.result(), None
                        if not data:
                            raise Closing
                        self.receiver.feed(data)
                    if wait_task in done:
                        wait_task = None
                        if self.notify is not None:
                            await self._push_news()
                        else:
                            await self.send(*await self._news(allow_expunge=True))
            finally:
                for t in (read_task, wait_task):
                    if t is not None and not t.done():
                        t.cancel()
                        with contextlib.suppress(asyncio.CancelledError, Exception):
                            await t


async def _cancelled(task: asyncio.Future[Any]) -> None:
    """``task`` cancelled (if still running) and awaited, its outcome dropped."""
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def sasl_mechanisms(cfg: SessionConfig) -> tuple[str, ...]:
    """PLAIN, then XOAUTH2 and OAUTHBEARER when ``[oauth]`` is set, EXTERNAL when ``[tls] account_ca`` is."""
    bearer = ("XOAUTH2", "OAUTHBEARER") if cfg.authenticator.bearer is not None else ()
    external = ("EXTERNAL",) if cfg.ctx.config.tls.account_ca else ()
    return (*caps.MECHANISMS, *bearer, *external)


def tls_reason(exc: BaseException) -> str:
    """The short name of a TLS failure (``WRONG_VERSION_NUMBER``, ``NO_SHARED_CIPHER``...): OpenSSL's, ours."""
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else type(exc).__name__


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
    c.Sort: ImapSession.do_sort,
    c.Thread: ImapSession.do_thread,
    c.Fetch: ImapSession.do_fetch,
    c.Store: ImapSession.do_store,
    c.Copy: ImapSession.do_copy,
    c.Move: ImapSession.do_move,
    c.Idle: ImapSession.do_idle,
    c.GetQuota: ImapSession.do_getquota,
    c.GetQuotaRoot: ImapSession.do_getquotaroot,
    c.SetQuota: ImapSession.do_setquota,
    c.Compress: ImapSession.do_compress,
    c.CancelUpdate: ImapSession.do_cancelupdate,
    c.Notify: ImapSession.do_notify,
}


def check_handlers(handlers: Mapping[type[c.Command], Handler] = HANDLERS) -> None:
    """Every command class of the grammar has exactly one handler, and no handler serves two."""
    missing = set(c.COMMANDS) - set(handlers)
    extra = set(handlers) - set(c.COMMANDS)
    shared = len(set(handlers.values())) != len(handlers)
    if missing or extra or shared:
        raise TypeError(f"IMAP handler table: missing {missing}, unknown {extra}, shared handlers: {shared}")


check_handlers()
