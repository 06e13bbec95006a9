"""aiosmtpd's SMTP engine with the ESMTP this server promises: the wire stays aiosmtpd's, hooks stay thin.

What this subclass adds or changes (aiosmtpd 1.4 lacks them):
- EHLO advertises PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
  DSN, STARTTLS (before TLS) and AUTH PLAIN LOGIN (after TLS, where AUTH is
  offered). PIPELINING needs nothing else: commands are read from one stream
  and answered in order (RFC 2920).
- Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034 §3), the
  greeting and the EHLO/HELO answer excepted.
- MAIL and RCPT are parsed here (``params``): the null reverse-path, RFC 3461
  DSN parameters (RET, ENVID, NOTIFY, ORCPT), SIZE with ``552 5.3.4``, BODY,
  SMTPUTF8, AUTH=. The handler's hooks receive parsed values.
- DATA is read here: only ``CRLF.CRLF`` ends it; a bare CR or LF anywhere
  refuses the message (SMTP smuggling), as do an oversized message
  (``552 5.3.4``) and an overlong line; the reply waits for the end of the data
  (RFC 5321 §4.2.5). The idle timer is reset while data flows.
- AUTH is refused before TLS with ``530 5.7.0`` (also on the implicit-TLS
  port, where aiosmtpd would not see the TLS); the mechanisms are the
  handler's ``async def auth_PLAIN/auth_LOGIN`` (aiosmtpd's ``authenticator`` is
  synchronous and cannot ask the database).
- A second STARTTLS is refused; after STARTTLS the session starts over (RFC 3207 §4.2).

Hooks (``handle_MAIL(server, session, envelope, address, MailParams)``,
``handle_RCPT(..., address, RcptParams)``, ``handle_DATA(server, session,
envelope)``) record what they accept on the envelope and return the reply line.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
import unicodedata
import uuid
from dataclasses import dataclass, field
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from crypto.tls import peer_subject_dn
from mailserver import logs
from mailserver.admission import Resolved
from mailserver.smtp import replies as R
from mailserver.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    parse_mail_params,
    parse_mailbox,
    parse_rcpt_params,
    split_path,
)
from mailserver.store.models import Account
from policies import Party
from policies.reply import RECIPIENT_OK, Reply

log = logging.getLogger("masante.smtp")

#: longest command line (RFC 4954 §4: an AUTH line may reach 12288 octets)
MAX_COMMAND_LINE = 12288
#: command line limits per command, parameters included (RFC 5321 §4.5.3.1.4 plus extensions)
COMMAND_LIMITS = {"MAIL": 1024, "RCPT": 1024, "AUTH": MAX_COMMAND_LINE}
#: the stream reader's limit while DATA is read: how much is buffered before the socket is paused
DATA_PIECE = 256 * 1024


@dataclass(frozen=True, slots=True)
class TlsInfo:
    version: str
    cipher: str
    bits: int
    peer_dn: str | None  # the verified client certificate's subject (MX)

    def describe(self) -> str:
        text = f"using {self.version} with cipher {self.cipher}, {self.bits} bits"
        if self.peer_dn:
            text += f"; client certificate {self.peer_dn} verified"
        return text


@dataclass
class Recipient:
    """An accepted RCPT: what the client wrote, its DSN parameters, and who it is."""

    given: str
    params: RcptParams
    resolved: Resolved

    @property
    def address(self) -> str:
        return self.resolved.party.address

    @property
    def party(self) -> Party:
        return self.resolved.party

    @property
    def account(self) -> Account | None:
        return self.resolved.account


class SmtpSession(Session):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.account: Account | None = None  # the authenticated account (submission)


class SmtpEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.params: MailParams = MailParams()
        self.recipients: list[Recipient] = []
        self.sender_party: Party | None = None
        self.content_bytes: bytes = b""


@dataclass
class _DataRead:
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    problem: Reply | None = None


def ascii_line(text: str) -> str:
    """Reply texts go out in ASCII (RFC 5321 §4.2): accents folded, anything else dropped."""
    if text.isascii():
        return text
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


class MasanteSMTP(SMTP):
    # the stream reader's limit: the longest command; DATA lines are bounded by ``max_line_length``
    line_length_limit = MAX_COMMAND_LINE + 2

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str,
        loop: asyncio.AbstractEventLoop,
        starttls_context: ssl.SSLContext | None,
        require_tls: bool,
        offer_auth: bool,
        require_auth: bool,
        data_size_limit: int,
        max_recipients: int,
        max_line_length: int,
        timeout: float,
    ) -> None:
        super().__init__(
            handler,
            data_size_limit=data_size_limit,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            ident="ESMTP masante-mail",
            tls_context=starttls_context,
            require_starttls=require_tls,
            timeout=timeout,
            auth_required=False,
            auth_require_tls=False,
            auth_exclude_mechanism=None if offer_auth else ["PLAIN", "LOGIN"],
            loop=loop,
        )
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, COMMAND_LIMITS)
        self.offer_auth = offer_auth
        self.require_auth = require_auth
        self.max_recipients = max_recipients
        self.max_line_length = max_line_length
        self.session_id = uuid.uuid4().hex[:12]
        self._greeted = False
        self._last_data = self.loop.time()

    # --- session and envelope ------------------------------------------------------------------------------

    def _create_session(self) -> SmtpSession:
        return SmtpSession(self.loop)

    def _create_envelope(self) -> SmtpEnvelope:
        return SmtpEnvelope()

    @property
    def smtp_session(self) -> SmtpSession:
        return cast(SmtpSession, self.session)  # always made by _create_session

    @property
    def smtp_envelope(self) -> SmtpEnvelope:
        return cast(SmtpEnvelope, self.envelope)  # always made by _create_envelope

    @property
    def ssl_object(self) -> ssl.SSLObject | ssl.SSLSocket | None:
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return obj if isinstance(obj, ssl.SSLObject | ssl.SSLSocket) else None

    @property
    def tls_active(self) -> bool:
        return self.ssl_object is not None

    def tls_info(self) -> TlsInfo | None:
        obj = self.ssl_object
        if obj is None:
            return None
        name, _proto, bits = obj.cipher() or ("unknown", "", 0)
        return TlsInfo(obj.version() or "TLS", name, bits or 0, peer_subject_dn(obj))

    @property
    def peer_ip(self) -> str | None:
        peer = self.session.peer if self.session else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else None

    async def _handle_client(self) -> None:
        logs.session_id.set(self.session_id)
        log.info("smtp.connect", extra={"fields": {"peer": self.peer_ip, "port": self._local_port()}})
        await super()._handle_client()

    def _local_port(self) -> int | None:
        sock = self.transport.get_extra_info("sockname") if self.transport else None
        return int(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else None

    # --- replies -----------------------------------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            if self._greeted:
                status = R.with_enhanced_code(ascii_line(status))
            self._greeted = True
        await super().push(status)

    async def _reply(self, reply: Reply | str) -> None:
        await self.push(str(reply))

    async def _raw_lines(self, lines: list[str]) -> None:
        """A multi-line 250 reply that must not get enhanced codes (EHLO, RFC 2034 §3)."""
        for i, text in enumerate(lines):
            sep = " " if i == len(lines) - 1 else "-"
            await SMTP.push(self, f"250{sep}{text}")

    async def handle_exception(self, error: Exception) -> str:
        """Any error a hook did not turn into a reply: logged with its type, answered ``451 4.3.0``
        (the client keeps the message and retries; the exception text is not shown). A failed TLS
        handshake (a client offering no suite we accept, a certificate from another CA) is the
        client's doing: logged as such, and the connection is gone."""
        if isinstance(error, TLSSetupException | ssl.SSLError):
            log.info("smtp.tls-failed", extra={"fields": R.error_fields(error)})
            return str(R.TLS_FAILED)
        log.error("smtp.internal-error", extra={"fields": R.error_fields(error)})
        return str(R.STORAGE_FAILURE)

    # --- greeting ----------------------------------------------------------------------------------------------

    async def smtp_HELO(self, hostname: str) -> None:
        if not hostname:
            await self._reply(Reply(501, "5.5.4", "Syntax: HELO hostname"))
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.smtp_session.extended_smtp = False
        self.smtp_session.host_name = hostname
        await self._raw_lines([f"{self.hostname} Hello {hostname.split()[0][:64]}"])

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self._reply(Reply(501, "5.5.4", "Syntax: EHLO hostname"))
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        session = self.smtp_session
        session.extended_smtp = True
        session.host_name = hostname
        lines = [f"{self.hostname} Hello {hostname.split()[0][:64]}", "PIPELINING"]
        if self.data_size_limit:
            lines.append(f"SIZE {self.data_size_limit}")
        lines += ["8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN"]
        if self.tls_context is not None and not self.tls_active:
            lines.append("STARTTLS")
        if self.offer_auth and self.tls_active:
            lines.append("AUTH " + " ".join(sorted(self._auth_methods)))
        lines.append("HELP")
        await self._raw_lines(lines)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: STARTTLS (no argument)"))
            return
        if self.tls_active:
            await self._reply(R.TLS_ALREADY)
            return
        if self.tls_context is None:
            await self._reply(R.TLS_UNAVAILABLE)
            return
        await super().smtp_STARTTLS(arg)

    async def smtp_NOOP(self, arg: str) -> None:
        await self._reply(R.NOOP)

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: RSET (no argument)"))
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        await self._reply(R.RESET)

    async def smtp_VRFY(self, arg: str) -> None:
        # RFC 5321 §3.5.3: no address harvesting; 252 says "send it and see"
        await self._reply(R.CANNOT_VRFY if arg else Reply(501, "5.5.4", "Syntax: VRFY <address>"))

    async def smtp_EXPN(self, arg: str) -> None:
        await self._reply(Reply(502, "5.5.1", "EXPN is not offered"))

    # --- AUTH (RFC 4954) ---------------------------------------------------------------------------------------

    async def smtp_AUTH(self, arg: str) -> None:
        session = self.smtp_session
        if not self.offer_auth:
            await self._reply(R.AUTH_NOT_HERE)
            return
        if not session.host_name or not session.extended_smtp:
            await self._reply(R.NEED_EHLO)
            return
        if not self.tls_active:
            await self._reply(R.STARTTLS_FIRST)
            return
        if session.authenticated:
            await self._reply(R.ALREADY_AUTHENTICATED)
            return
        if self.smtp_envelope.mail_from is not None:
            await self._reply(R.AUTH_NOT_DURING_MAIL)
            return
        args = (arg or "").split()
        if not args or len(args) > 2:
            await self._reply(Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"))
            return
        mechanism = args[0].upper()
        method = self._auth_methods.get(mechanism)
        if method is None:
            await self._reply(R.UNKNOWN_MECHANISM)
            return
        result = await method.method(self, [mechanism, *args[1:]])
        if not isinstance(result, AuthResult):
            await self._reply(R.AUTH_FAILED)
            return
        if result.success:
            session.authenticated = True
            session.auth_data = result.auth_data
            await self._reply(result.message or R.AUTH_OK)
        elif not result.handled:
            await self._reply(result.message or R.AUTH_FAILED)

    async def check_auth_needed(self, caller_method: str) -> bool:
        if self.require_auth and not self.smtp_session.authenticated:
            await self._reply(R.AUTH_REQUIRED)
            return True
        return False

    # --- MAIL, RCPT --------------------------------------------------------------------------------------------

    async def smtp_MAIL(self, arg: str | None) -> None:
        session, envelope = self.smtp_session, self.smtp_envelope
        if not session.host_name:
            await self._reply(R.NEED_EHLO)
            return
        if await self.check_auth_needed("MAIL"):
            return
        if envelope.mail_from is not None:
            await self._reply(R.NESTED_MAIL)
            return
        if arg is None or arg[:5].upper() != "FROM:":
            await self._reply(R.MAIL_SYNTAX)
            return
        try:
            path, rest = split_path(arg[5:])
            if rest and not session.extended_smtp:
                raise ParamError(R.MAIL_SYNTAX)
            params = parse_mail_params(rest, size_limit=self.data_size_limit)
            address = parse_mailbox(path, smtputf8=params.smtputf8, null_ok=True, bad=R.BAD_SENDER_SYNTAX)
        except ParamError as exc:
            await self._reply(exc.reply)
            return
        status = await self._call_handler_hook("MAIL", address, params)
        await self.push(str(R.OK) if status is MISSING else status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        session, envelope = self.smtp_session, self.smtp_envelope
        if not session.host_name:
            await self._reply(R.NEED_EHLO)
            return
        if await self.check_auth_needed("RCPT"):
            return
        if envelope.mail_from is None:
            await self._reply(R.NEED_MAIL)
            return
        if arg is None or arg[:3].upper() != "TO:":
            await self._reply(R.RCPT_SYNTAX)
            return
        try:
            path, rest = split_path(arg[3:])
            if rest and not session.extended_smtp:
                raise ParamError(R.RCPT_SYNTAX)
            params = parse_rcpt_params(rest)
            address = parse_mailbox(path, smtputf8=envelope.params.smtputf8, null_ok=False, bad=R.BAD_RECIPIENT_SYNTAX)
        except ParamError as exc:
            await self._reply(exc.reply)
            return
        if len(envelope.recipients) >= self.max_recipients:
            await self._reply(R.TOO_MANY_RECIPIENTS)
            return
        status = await self._call_handler_hook("RCPT", address, params)
        await self.push(str(RECIPIENT_OK) if status is MISSING else status)

    # --- DATA --------------------------------------------------------------------------------------------------

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.smtp_envelope
        if not self.smtp_session.host_name:
            await self._reply(R.NEED_EHLO)
            return
        if await self.check_auth_needed("DATA"):
            return
        if envelope.mail_from is None:
            await self._reply(R.NEED_MAIL)
            return
        if not envelope.recipients:
            await self._reply(R.NO_VALID_RECIPIENTS)
            return
        if arg:
            await self._reply(R.DATA_SYNTAX)
            return
        await SMTP.push(self, "354 End data with <CR><LF>.<CR><LF>")
        read = await self._read_data()
        try:
            if read.problem is not None:
                await self._reply(read.problem)
                return
            envelope.content_bytes = b"".join(read.chunks)
            read.chunks.clear()
            envelope.content = envelope.original_content = envelope.content_bytes
            try:
                status = await self._call_handler_hook("DATA")
            except Exception as exc:
                status = await self.handle_exception(exc)
            await self.push(str(R.OK) if status is MISSING else status)
        finally:
            self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _read_data(self) -> _DataRead:
        """The message up to ``CRLF.CRLF``, dot-unstuffed (RFC 5321 §4.5.2); problems are noted and the
        rest drained. Read in pieces ending at ``.CRLF`` (a line's end before the dot decides whether it
        ends the data), not line by line: a 2 MB message is a handful of reads, not 27,000."""
        read = _DataRead()
        limit = self.data_size_limit or 0
        reader = self._reader
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = DATA_PIECE  # type: ignore[attr-defined]  # bounded buffering while reading DATA
        tail = b"\r\n"  # the CRLF of the DATA command precedes the first line
        try:
            while True:
                found = True
                try:
                    piece = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # a long stretch without ".CRLF": keep it, read on
                    piece, found = await reader.readexactly(exc.consumed), False
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("connection closed during DATA") from None
                end = found and (tail + piece[:-3])[-2:] == b"\r\n"
                part = piece[:-3] if end else piece
                read.size += len(part)
                if read.problem is None:
                    if limit and read.size > limit:
                        read.problem = R.message_too_big(limit)
                        read.chunks.clear()
                    else:
                        read.chunks.append(part)
                if end:
                    break
                tail = (tail + piece)[-2:]
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        if read.problem is None:
            read.problem = self._check_lines(read.chunks)
            if read.problem is not None:
                read.chunks.clear()
        return read

    def _check_lines(self, chunks: list[bytes]) -> Reply | None:
        """Bare CR or LF anywhere (RFC 5321 §2.3.8; SMTP smuggling), or a line over ``max_line_length``;
        then the dot-unstuffing, in place."""
        raw = b"".join(chunks)
        crlf = raw.count(b"\r\n")
        if raw.count(b"\r") != crlf or raw.count(b"\n") != crlf:
            return R.BARE_LINEFEED
        # a line holds max_line_length octets with its CRLF, one more with a transparency dot
        if raw and max(map(len, raw.split(b"\r\n"))) > self.max_line_length - 1:
            return R.LINE_TOO_LONG
        if raw.startswith(b"."):
            raw = raw[1:]
        chunks[:] = [raw.replace(b"\r\n.", b"\r\n")]
        return None

    # --- idle timeout: silence, not slowness (RFC 5321 §4.5.3.2) ------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        idle = self.loop.time() - self._last_data
        if idle < self._timeout_duration:  # bytes kept coming (a large DATA): wait for real silence
            self._reset_timeout(self._timeout_duration - idle)
            return
        super()._timeout_cb()  # type: ignore[no-untyped-call]
