"""aiosmtpd's SMTP engine with the ESMTP this server promises: the wire stays aiosmtpd's, hooks stay thin.

Tested with aiosmtpd 1.4.6 (``setup.cfg`` pins ``>=1.4.6,<1.5``): besides the
public hooks, this subclass overrides command methods (``smtp_*``), ``push``,
``_handle_client`` (only to set the log context around it), ``_timeout_cb`` and
``_create_session``/``_create_envelope``, and calls ``_set_rset_state``,
``_set_post_data_state`` and ``_call_handler_hook``; each override says why.

What this subclass adds or changes (aiosmtpd 1.4 lacks them):
- EHLO advertises PIPELINING, SIZE, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES,
  DSN, STARTTLS (before TLS) and AUTH PLAIN LOGIN (after TLS, where AUTH is
  offered; XOAUTH2 OAUTHBEARER with ``[oauth]``, EXTERNAL with ``[tls] account_ca``).
  PIPELINING needs nothing else: commands are read from one stream
  and answered in order (RFC 2920).
- Every 2xx/4xx/5xx reply carries an enhanced status code (RFC 2034 §3), the
  greeting and the EHLO/HELO answer excepted.
- MAIL and RCPT are parsed here (``params``): the null reverse-path, RFC 3461
  DSN parameters (RET, ENVID, NOTIFY, ORCPT), SIZE with ``552 5.3.4``, BODY,
  SMTPUTF8, AUTH=. The handler's hooks receive parsed values.
- DATA is read by the sans-IO ``data.DataReader``: only ``CRLF.CRLF`` ends it;
  a bare CR or LF anywhere refuses the message (SMTP smuggling), as do NUL, an
  oversized message (``552 5.3.4``, stored no further once past the limit) and
  an overlong line; the reply waits for the end of the data (RFC 5321 §4.2.5).
- A message past ``gate.threshold`` octets is read on only with a slot of the
  process's ``smtp.gate.LargeMessageGate`` (held until the message is stored or
  refused, given back on every path); the wait stops the reading and counts
  against neither the DATA rate nor the idle timer; no slot in time: the rest is
  read, nothing kept, ``451 4.3.2``. A DATA keeping more than ``spool_threshold`` octets goes on to
  an encrypted temporary file (``smtp.dataspool``), deleted on every path once the DATA is answered
  or the client is gone. Once handed to the handler the DATA bytes
  are referenced by the envelope alone (the handler takes them from there).
- Every reply, multi-line ones included, is one write (``sslscan
  --starttls-smtp`` reads the EHLO reply as one segment). The replies of a
  pipelined group go out together (RFC 2920 §3.2, as Postfix does): the reply
  to MAIL, RCPT or RSET waits while the client's next command line is
  already read, and leaves with the next reply written (one TLS record, one
  write, instead of one per command).
- Slowness, not only silence: the idle timer is reset while bytes flow, but a
  command line must be complete ``line_deadline`` seconds after its first
  octet, and DATA must average ``data_min_rate`` octets/s once
  ``data_rate_grace`` has passed; past either, ``421 4.4.2`` and the
  connection is closed (a log line with the session id says which).
- On the MX port a client certificate whose key type is not in
  ``client_key_types`` (RSA by default, the MSSanté profile) is refused at MAIL.
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
import contextvars
import functools
import logging
import ssl
import unicodedata
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, Session, TLSSetupException

from crypto.tls import peer_key_type, peer_subject_dn
from mailserver import logs, metrics
from mailserver.admission import Resolved
from mailserver.smtp import replies as R
from mailserver.smtp.data import DataReader, DataResult, Spill
from mailserver.smtp.dataspool import DataSpool
from mailserver.smtp.gate import BUSY, LargeMessageGate
from mailserver.smtp.params import (
    MailParams,
    ParamError,
    RcptParams,
    has_control,
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
#: seconds a plain connection cut for slowness reads (and drops) what the client still sends before it closes:
#: closing with input unread sends a reset, which can destroy the 421 before the client reads it
LINGER = 1.0
#: command line limits per command, parameters included (RFC 5321 §4.5.3.1.4 plus extensions)
#: every mechanism a handler may offer (``handlers.SubmissionHandler.auth_*``)
ALL_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER", "EXTERNAL")
COMMAND_LIMITS = {"MAIL": 1024, "RCPT": 1024, "AUTH": MAX_COMMAND_LINE}
#: why a connection ended, the ``reason`` of the ``smtp.disconnect`` line (a closed set: ids, never client text)
DISCONNECT_REASONS = frozenset(
    {
        "quit",  # the client's QUIT (RFC 5321 §4.1.1.10)
        "client-closed",  # the client closed the connection (EOF) without QUIT
        "connection-lost",  # the connection broke (a reset, an error below TLS)
        "idle-timeout",  # silence past ``command_timeout`` (RFC 5321 §4.5.3.2)
        "too-slow",  # a command line past its deadline, or DATA below the minimum rate (``smtp.too-slow``)
        "tls-failed",  # the STARTTLS handshake failed (RFC 3207 §4.1)
        "too-many-errors",  # too many unrecognised commands (aiosmtpd's ``502 5.5.1`` and close)
        "too-many-commands",  # a command sent more times than aiosmtpd's call limit allows (``421 4.7.0``)
        "connection-cap",  # too many connections from the address (``421 4.7.0``, ``directory.limits``)
    }
)
#: the reason key of the ``smtp.refused`` line for the refusals the engine itself makes (the handlers' refusals
#: carry the policy's reason); a reply not listed here is logged by its enhanced code's class
ENGINE_REFUSALS: dict[Reply, str] = {
    R.MAIL_SYNTAX: "syntax",
    R.RCPT_SYNTAX: "syntax",
    R.BAD_PARAMETER: "bad-parameter",
    R.BAD_SENDER_SYNTAX: "bad-address",
    R.BAD_RECIPIENT_SYNTAX: "bad-address",
    R.CONTROL_IN_PARAMETER: "control-in-parameter",
    R.TOO_MANY_RECIPIENTS: "too-many-recipients",
    R.BARE_LINEFEED: "bare-linefeed",
    R.NUL_IN_DATA: "nul-in-data",
    R.LINE_TOO_LONG: "line-too-long",
    R.SPOOL_FAILURE: "spool-failed",
}
#: the stream reader's limit while DATA is read: how much is buffered before the socket is paused
DATA_PIECE = 256 * 1024


#: replies of a pipelined group held back at most before they are written (``MasanteSMTP._push_in_group``)
HELD_REPLIES = 64


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
        self.spool: Spill | None = None  # the message on disk instead of content_bytes (a large DATA)


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
        line_deadline: float = 0,
        data_min_rate: int = 0,
        data_rate_grace: float = 0,
        gate: LargeMessageGate | None = None,
        client_key_types: Collection[str] | None = None,
        mechanisms_off: Collection[str] = (),
        spool_dir: Path | None = None,
        spool_threshold: int = 0,
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
            # the handler's mechanisms not configured here (bearer tokens, EXTERNAL); all of them on the MX port
            auth_exclude_mechanism=list(mechanisms_off) if offer_auth else [*ALL_MECHANISMS],
            loop=loop,
        )
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit, COMMAND_LIMITS)
        self.offer_auth = offer_auth
        self.require_auth = require_auth
        self.max_recipients = max_recipients
        self.max_line_length = max_line_length
        self.session_id = uuid.uuid4().hex[:12]
        self._greeted = False
        #: replies to a pipelined group's commands, waiting to leave with the next reply (``_push_in_group``)
        self._held: list[bytes] = []
        self._last_data = self.loop.time()
        # slow clients (see "pace" below)
        self.line_deadline = line_deadline
        self.data_min_rate = data_min_rate
        self.data_rate_grace = data_rate_grace
        self._line_started: float | None = None
        self._data: DataReader | None = None
        self._data_started = 0.0
        self._data_octets = 0  # octets received since the 354
        #: large messages read at once in the process (``smtp.gate``); ``_gated``: this DATA holds a slot
        self.gate = gate
        self._gated = False
        self._gate_waiting = False
        #: a DATA keeping more than ``spool_threshold`` octets goes on to an encrypted file there (``smtp.dataspool``)
        self.spool_dir = spool_dir
        self.spool_threshold = spool_threshold
        self._pace_timer: asyncio.TimerHandle | None = None
        self._log_context: contextvars.Context | None = None
        # the disconnect line: the reason set where the server ends the session, logged once
        self._end_reason: str | None = None
        self._lingering = False  # the goodbye is written: what comes now is dropped until the close
        self._linger_timer: asyncio.TimerHandle | None = None
        self._handshaking = False
        self._disconnect_logged = False
        #: key types a client certificate may have (None: any)
        self.client_key_types = frozenset(client_key_types) if client_key_types is not None else None
        #: asked after a successful AUTH with the account id: a refusal's sentence (a cap on the account's
        #: open connections, ``directory.limits.ConnectionCaps``) or None; set by the listener
        self.on_login: Callable[[int], str | None] | None = None

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
        # overridden only to set the session id the log lines carry, then aiosmtpd's loop runs as is
        logs.session_id.set(self.session_id)
        self._log_context = contextvars.copy_context()
        log.info("smtp.connect", extra={"fields": {"peer": self.peer_ip, "port": self._local_port()}})
        await super()._handle_client()

    def _local_port(self) -> int | None:
        sock = self.transport.get_extra_info("sockname") if self.transport else None
        return int(sock[1]) if isinstance(sock, tuple) and len(sock) > 1 else None

    # --- replies -----------------------------------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        # overridden to add enhanced status codes to aiosmtpd's own replies (RFC 2034 §3), and to send the replies
        # held back for a pipelined group with this one; one write
        self._writer.write(self._held_and(self._encoded(status)))
        await self._writer.drain()

    async def _push_in_group(self, status: str) -> None:
        """The reply to a command RFC 2920 §3.1 lets a client pipeline anywhere in a group (MAIL, RCPT, RSET):
        held back while the client's next command line is already read, sent with the next reply. The next
        command is handled at once (its line is there), and every command answers: nothing stays held. At most
        ``HELD_REPLIES`` wait: a client that pipelines without end still has its replies written, and the
        transport's flow control (``drain``) still slows its reading."""
        if len(self._held) < HELD_REPLIES and self._next_line_read():
            self._held.append(self._encoded(status))
            return
        await self.push(status)

    def _next_line_read(self) -> bool:
        reader = self._reader
        buffer = getattr(reader, "_buffer", None)  # asyncio.StreamReader's: what was received and not read yet
        return isinstance(buffer, bytearray) and b"\n" in buffer and not reader.at_eof()

    def _encoded(self, status: AnyStr) -> bytes:
        if isinstance(status, str):
            # aiosmtpd's own loop ends the session after these two replies (then closes the transport)
            if status.startswith("502 5.5.1 Too many unrecognized commands"):
                self._end_reason = "too-many-errors"
            elif status.startswith("421 4.7.0 ") and "sent too many times" in status:
                self._end_reason = "too-many-commands"
            if self._greeted:
                status = R.with_enhanced_code(ascii_line(status))
            self._greeted = True
        metrics.smtp_reply(status)
        # as aiosmtpd's own ``push`` encodes (SMTPUTF8 is on)
        return (status.encode("utf-8") if isinstance(status, str) else status) + b"\r\n"

    def _held_and(self, reply: bytes) -> bytes:
        if not self._held:
            return reply
        self._held.append(reply)
        out = b"".join(self._held)
        self._held.clear()
        return out

    async def _reply(self, reply: Reply | str) -> None:
        await self.push(str(reply))

    async def _refuse(self, stage: str, reply: Reply) -> None:
        """A refusal the engine makes itself (syntax, parameters, limits, the data): logged with its codes and
        a reason key, never the client's text, then sent."""
        if reply.enhanced == "5.3.4":  # RFC 3463 §3.4: message too big (SIZE at MAIL, or the data)
            reason = "too-big"
        else:
            reason = ENGINE_REFUSALS.get(reply, "refused")
        log.info(
            "smtp.refused",
            extra={"fields": {"stage": stage, "reason": reason, "code": reply.code, "enhanced": reply.enhanced}},
        )
        await self._reply(reply)

    async def _raw_lines(self, lines: list[str]) -> None:
        """A multi-line 250 reply that must not get enhanced codes (EHLO, RFC 2034 §3), in one write:
        a client reading the first segment (``sslscan --starttls-smtp``) sees every line."""
        text = "\r\n".join(f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines))
        await self.push(text.encode())  # bytes: no enhanced code added

    async def handle_exception(self, error: Exception) -> str:
        """Any error a hook did not turn into a reply: logged with its type, answered ``451 4.3.0``
        (the client keeps the message and retries; the exception text is not shown). A failed TLS
        handshake (a client offering no suite we accept, a certificate from another CA) is the
        client's doing: logged as such, and the connection is gone."""
        if isinstance(error, TLSSetupException | ssl.SSLError):
            log.info("smtp.tls-failed", extra={"fields": R.error_fields(error)})
            self._end_reason = "tls-failed"
            return str(R.TLS_FAILED)
        log.error("smtp.internal-error", extra={"fields": R.error_fields(error)})
        return str(R.STORAGE_FAILURE)

    # --- greeting ----------------------------------------------------------------------------------------------

    async def smtp_HELO(self, hostname: str) -> None:
        if not hostname or has_control(hostname):  # the name goes into a Received field
            await self._reply(Reply(501, "5.5.4", "Syntax: HELO hostname"))
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        self.smtp_session.extended_smtp = False
        self.smtp_session.host_name = hostname
        await self._raw_lines([f"{self.hostname} Hello {hostname.split()[0][:64]}"])

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname or has_control(hostname):  # the name goes into a Received field
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
        self._handshaking = True  # a connection lost until the handshake is done is a failed handshake
        await super().smtp_STARTTLS(arg)
        self._handshaking = False

    async def smtp_QUIT(self, arg: str) -> None:
        # overridden only to record why the session ends (aiosmtpd's QUIT closes the transport)
        if not arg:
            self._end_reason = "quit"
        await super().smtp_QUIT(arg)

    def client_key_refusal(self) -> Reply | None:
        """The refusal for a client certificate of a key type not accepted here (RFC 8446 §4.4.2 gives the
        server no way to ask for RSA in the handshake with TLS 1.3, so it is checked after it)."""
        if self.client_key_types is None:
            return None
        kind = peer_key_type(self.ssl_object)
        if kind is None or kind in self.client_key_types:
            return None
        log.info("smtp.client-key-refused", extra={"fields": {"key_type": kind}})
        return R.CLIENT_KEY_TYPE

    async def smtp_NOOP(self, arg: str) -> None:
        await self._reply(R.NOOP)

    async def smtp_RSET(self, arg: str) -> None:
        if arg:
            await self._reply(Reply(501, "5.5.4", "Syntax: RSET (no argument)"))
            return
        self._set_rset_state()  # type: ignore[no-untyped-call]
        await self._push_in_group(str(R.RESET))

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
            offered = " or ".join(sorted(self._auth_methods))  # PLAIN, LOGIN and what is configured here
            await self._reply(R.UNKNOWN_MECHANISM.with_text(f"Unrecognised authentication mechanism: use {offered}"))
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
        refusal = self.client_key_refusal()
        if refusal is not None:
            await self._reply(refusal)
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
            await self._refuse("mail", exc.reply)
            return
        status = await self._call_handler_hook("MAIL", address, params)
        await self._push_in_group(str(R.OK) if status is MISSING else status)

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
            await self._refuse("rcpt", exc.reply)
            return
        if len(envelope.recipients) >= self.max_recipients:
            await self._refuse("rcpt", R.TOO_MANY_RECIPIENTS)
            return
        status = await self._call_handler_hook("RCPT", address, params)
        await self._push_in_group(str(RECIPIENT_OK) if status is MISSING else status)

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
        data = self._start_data()
        await self.push(b"354 End data with <CR><LF>.<CR><LF>")  # bytes: no enhanced code on a 3xx
        try:
            read = await self._read_data(data)
        except BaseException:
            data.discard()  # the client left mid-DATA (or the session was cancelled): the spool file goes
            self._leave_gate()
            raise
        finally:
            self._end_data()
        del data  # its result holds the bytes too: only the envelope (then the handler's Inbound) keeps them
        spool = read.spool
        try:
            if read.problem is not None:
                self._leave_gate()
                await self._refuse("data", read.problem)
                return
            envelope.content_bytes = read.content
            envelope.content = envelope.original_content = envelope.content_bytes
            envelope.spool = spool
            del read  # the handler may let the bytes go once parsed: no reference to them kept here
            try:
                status = await self._call_handler_hook("DATA")
            except Exception as exc:
                status = await self.handle_exception(exc)
            finally:
                self._leave_gate()
            await self.push(str(R.OK) if status is MISSING else status)
        finally:
            if spool is not None:
                spool.discard()  # stored, refused or failed: the file goes (the intake discards it once read)
            envelope.spool = None
            self._set_post_data_state()  # type: ignore[no-untyped-call]

    async def _enter_gate(self, gate: LargeMessageGate, data: DataReader) -> None:
        """A large message: a slot of the gate before reading on, or the rest read without keeping it (451)."""
        self._gate_waiting = True
        started = self.loop.time()
        try:
            self._gated = await gate.enter()
        finally:
            self._gate_waiting = False
            waited = self.loop.time() - started
            self._data_started += waited  # the server was the slow one: the rate is the client's own
            self._last_data = max(self._last_data, self.loop.time())
            self._arm_pace()
        if not self._gated:
            log.warning("smtp.busy", extra={"fields": {"what": "large message", "seconds": round(waited, 3)}})
            data.refuse(BUSY)

    def _leave_gate(self) -> None:
        if self._gated and self.gate is not None:
            self._gated = False
            self.gate.leave()

    async def _read_data(self, data: DataReader) -> DataResult:
        """The bytes after ``354`` fed to the sans-IO ``DataReader`` until it has the terminator.

        Read in pieces ending at ``.CRLF`` (``readuntil``), not line by line: a 2 MB message is a
        handful of reads, not 27,000; and as the terminator ends with ``.CRLF``, nothing after it is
        read, so commands pipelined behind the data stay in the stream for aiosmtpd's loop. While DATA
        is read the stream reader's limit (asyncio's private ``_limit``: there is no public setter) is
        raised to ``DATA_PIECE``, so that long stretches without ``.CRLF`` come in large pieces; the
        command phase keeps the short limit, which bounds what an idle client can make us buffer."""
        reader = self._reader
        saved = reader._limit  # type: ignore[attr-defined]
        reader._limit = DATA_PIECE  # type: ignore[attr-defined]
        try:
            while not data.done:
                try:
                    piece = await reader.readuntil(b".\r\n")
                except asyncio.LimitOverrunError as exc:  # a long stretch without ".CRLF": take it, read on
                    piece = await reader.readexactly(exc.consumed)
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("connection closed during DATA") from None
                if data.feed(piece):
                    raise RuntimeError("bytes read past the end of DATA")  # readuntil(".CRLF") cannot do this
                gate = self.gate
                if gate is not None and not self._gated and not data.refused and gate.needs_slot(data.size):
                    await self._enter_gate(gate, data)
        finally:
            reader._limit = saved  # type: ignore[attr-defined]
        return data.result()

    # --- pace: silence (RFC 5321 §4.5.3.2), and slowness ---------------------------------------------------
    # asyncio calls ``data_received`` with the clear bytes (after TLS too), before aiosmtpd's stream
    # reader sees them: the place to time a command line from its first octet and to count DATA octets.

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # after the goodbye: read and dropped, so that the close sends no reset
        now = self._last_data = self.loop.time()
        if self._data is not None:
            self._data_octets += len(data)
        elif self.line_deadline:
            nl = data.rfind(b"\n")
            if nl >= 0:  # a line ended; what follows it starts the next one
                self._line_started = now if nl < len(data) - 1 else None
            elif self._line_started is None:
                self._line_started = now
            self._arm_pace()
        super().data_received(data)

    def _start_data(self) -> DataReader:
        spill = None
        if self.spool_dir is not None and self.spool_threshold:
            spill = functools.partial(DataSpool, self.spool_dir)
        self._data = DataReader(
            size_limit=self.data_size_limit,
            max_line_length=self.max_line_length,
            spill_at=self.spool_threshold,
            spill=spill,
        )
        self._data_started = self.loop.time()
        self._data_octets = 0
        self._line_started = None
        self._arm_pace()
        return self._data

    def _end_data(self) -> None:
        self._data = None
        self._line_started = None

    def _pace_due(self) -> float | None:
        """When the current deadline falls, if any (loop time)."""
        if self._data is not None:
            rate = self.data_min_rate
            if self._gated and self.gate is not None:  # a slot is for a client that sends
                rate = max(rate, self.gate.min_rate)
            if not rate or self._gate_waiting:
                return None
            return self._data_started + max(self.data_rate_grace, self._data_octets / rate)
        if self._line_started is not None and self.line_deadline:
            return self._line_started + self.line_deadline
        return None

    def _arm_pace(self) -> None:
        """One timer per session, at the current deadline or before it (a check that finds the deadline
        moved on, as more octets came, re-arms itself): a TimerHandle per line or per DATA, not per read."""
        due = self._pace_due()
        if due is None:
            return
        when = max(due, self.loop.time() + 0.01)
        if self._pace_timer is not None:
            if self._pace_timer.when() <= when:
                return
            self._pace_timer.cancel()  # the deadline came closer (DATA began after a line's timer was set)
        self._pace_timer = self.loop.call_at(when, self._pace_check, context=self._log_context)

    def _pace_check(self) -> None:
        self._pace_timer = None
        due = self._pace_due()
        if due is None or self.transport is None:
            return
        if self.loop.time() + 0.005 < due:
            self._arm_pace()
            return
        in_data = self._data is not None
        reply = R.SLOW_DATA if in_data else R.SLOW_COMMAND
        fields: dict[str, object] = {"what": "data" if in_data else "command line"}
        if in_data:
            fields |= {"octets": self._data_octets, "seconds": round(self.loop.time() - self._data_started, 3)}
        log.warning("smtp.too-slow", extra={"fields": fields})
        self._end_reason = "too-slow"
        self._writer.write(self._held_and(f"{reply}\r\n".encode()))
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and transport.can_write_eof():
            # plain TCP: the reply, the end of the stream, then a clean close
            self._lingering = True
            transport.write_eof()
            self._linger_timer = self.loop.call_later(LINGER, transport.close)
        else:
            self.transport.close()  # the bytes written go out first; connection_lost stops the session

    def connection_lost(self, error: Exception | None) -> None:
        if self._pace_timer is not None:
            self._pace_timer.cancel()
            self._pace_timer = None
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        self._log_disconnect(error)
        super().connection_lost(error)

    def _log_disconnect(self, error: Exception | None) -> None:
        """One ``smtp.disconnect`` line per connection, with the reason from ``DISCONNECT_REASONS`` and the
        session id (asyncio calls ``connection_lost`` outside the session's task: the line is logged in
        the session's log context). No client text: an error is named by its type only."""
        if self._disconnect_logged or self.session is None:
            return
        self._disconnect_logged = True
        if self._end_reason is not None:
            reason = self._end_reason
        elif self._handshaking:
            reason = "tls-failed"
        else:
            reason = "client-closed" if error is None else "connection-lost"
        fields: dict[str, object] = {"reason": reason}
        if error is not None and reason in ("connection-lost", "tls-failed"):
            fields["error"] = type(error).__name__
        context = self._log_context
        if context is None or logs.session_id.get() == self.session_id:
            log.info("smtp.disconnect", extra={"fields": fields})
        else:
            context.run(log.info, "smtp.disconnect", extra={"fields": fields})

    def _timeout_cb(self) -> None:
        # overridden: aiosmtpd's timer counts from the last command; ours from the last octet received
        idle = 0.0 if self._gate_waiting else self.loop.time() - self._last_data
        if idle < self._timeout_duration:  # bytes kept coming (a large DATA): wait for real silence
            self._reset_timeout(self._timeout_duration - idle)
            return
        self._end_reason = "idle-timeout"
        super()._timeout_cb()  # type: ignore[no-untyped-call]
