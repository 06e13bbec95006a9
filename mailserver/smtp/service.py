"""The SMTP listeners (MX, submission, submissions) and the queue worker as ``Service``s that ``mailserver.app`` runs.

| endpoint    | port (demo) | TLS                                   | who                                  |
|-------------|-------------|---------------------------------------|--------------------------------------|
| mx          | 25 (2525)   | STARTTLS required before MAIL; client | other operators' MTAs (trust space)  |
|             |             | certificate asked, checked vs. CA     |                                      |
| submission  | 587 (2587)  | STARTTLS required before AUTH         | professionals' and patients' clients |
| submissions | 465 (2465)  | implicit TLS                          | same                                 |

Every listener runs on the application's event loop (``loop.create_server``,
not aiosmtpd's threaded ``Controller``), speaks TLS 1.2+ with the MSSanté
suites (``crypto.tls``), and is skipped when its port is negative. Stopping
closes the listening socket, tells open sessions ``421 4.3.2`` and closes them.

The process's one ``Authenticator`` (login limits shared with IMAP and the web
service) and ``ConnectionCaps`` are handed in by ``mailserver.app``. A connection
past a cap is answered ``421 4.7.0 <why>`` instead of the greeting and closed;
submission connections not logged in count against the lower unauthenticated
cap, MX connections against the per-source cap only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import cast

from crypto.tls import server_context
from directory.auth import Authenticator
from directory.limits import ConnectionCaps, Lease
from mailserver import metrics
from mailserver.admission import Admission
from mailserver.context import Context
from mailserver.endpoints import Endpoint, Service
from mailserver.smtp import dataspool
from mailserver.smtp import replies as R
from mailserver.smtp.bounces import Bouncer
from mailserver.smtp.engine import MasanteSMTP
from mailserver.smtp.gate import LargeMessageGate
from mailserver.smtp.handlers import MxHandler, SubmissionHandler
from mailserver.smtp.intake import Intake
from mailserver.smtp.queue import QueueWorker
from mailserver.smtp.signing import DkimSigner, DkimVerifier

log = logging.getLogger("masante.smtp")

SHUTDOWN_REPLY = b"421 4.3.2 Server shutting down, try again later\r\n"

_DESCRIPTION = {
    "mx": "SMTP MX for operators (STARTTLS, client cert)",
    "submission": "SMTP submission (STARTTLS, then AUTH)",
    "submissions": "SMTP submissions (implicit TLS, AUTH)",
}


class ImplicitTLS(asyncio.Protocol):
    """Implicit TLS (port 465, RFC 8314 §3.3) started here rather than in asyncio's server: a handshake
    that fails (a client offering no suite we accept, a certificate from another CA, or no TLS at all)
    is logged (``smtp.tls-failed`` with the error's type, then ``smtp.disconnect`` reason ``tls-failed``)
    instead of vanishing into asyncio's own log. The SMTP session starts on the TLS transport once the
    handshake is done, as if the server had made it."""

    def __init__(
        self,
        session: Callable[[], MasanteSMTP],
        tls: ssl.SSLContext,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        door: str,
    ) -> None:
        self._session, self._tls, self._loop, self._timeout, self._door = session, tls, loop, timeout, door
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        plain = cast(asyncio.Transport, transport)  # a TCP server's transport
        plain.pause_reading()  # the ClientHello waits for start_tls (it resumes reading)
        self._task = self._loop.create_task(self._handshake(plain))

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # before the handshake: ``_handshake`` sees it fail and logs it

    async def _handshake(self, plain: asyncio.Transport) -> None:
        session = self._session()
        try:
            secure = await self._loop.start_tls(
                plain, session, self._tls, server_side=True, ssl_handshake_timeout=self._timeout
            )
        except (OSError, ssl.SSLError, ConnectionError, TimeoutError) as exc:
            fields = {"door": self._door, "error": type(exc).__name__, "reason": "tls-failed"}
            log.info("smtp.tls-failed", extra={"fields": fields})
            log.info("smtp.disconnect", extra={"fields": fields})
            plain.abort()
            return
        if secure is None:  # the client went away as the handshake ended
            plain.abort()
            return
        session.connection_made(secure)


class CappedSMTP(MasanteSMTP):
    """A session that takes its place in the process's ``ConnectionCaps`` before the greeting."""

    caps: ConnectionCaps | None = None
    door = "smtp"
    lease: Lease | None = None

    async def _handle_client(self) -> None:
        if self.caps is not None:
            lease = self.caps.open(
                self.door,
                self.peer_ip or "?",
                lambda: self.smtp_session.account is not None,
                counts_unauthenticated=self.door != "mx",
            )
            if isinstance(lease, str):
                self._end_reason = "connection-cap"
                await self.push(str(R.TOO_MANY_CONNECTIONS.with_text(lease)))
                if self.transport is not None:
                    self.transport.close()
                return
            self.lease = lease
            self.on_login = self._account_refusal
        await super()._handle_client()

    def _account_refusal(self, account_id: int) -> str | None:
        if self.caps is None or self.lease is None:
            return None
        return self.caps.login(self.lease, account_id)

    def connection_lost(self, error: Exception | None) -> None:
        if self.caps is not None and self.lease is not None:
            self.caps.release(self.lease)
        super().connection_lost(error)


class SmtpRuntime:
    """What the three listeners and the worker share in one process."""

    def __init__(
        self,
        ctx: Context,
        admission: Admission,
        authenticator: Authenticator | None = None,
        caps: ConnectionCaps | None = None,
    ) -> None:
        self.ctx = ctx
        self.admission = admission
        self.authenticator = authenticator if authenticator is not None else Authenticator(ctx)
        self.caps = caps if caps is not None else ConnectionCaps.for_context(ctx)
        self.bouncer = Bouncer(ctx)
        limits = ctx.config.limits  # one gate for every SMTP door of the process: large messages read at once
        self.gate = LargeMessageGate(
            threshold=limits.large_message_size,
            slots=limits.large_messages_at_once,
            wait=limits.large_message_wait,
            min_rate=limits.large_message_min_rate,
        )
        #: large DATA spooled here, encrypted (``smtp.dataspool``); a dead process's files are removed now
        self.spool_dir = ctx.config.resolve(ctx.config.smtp.spool_dir) if limits.spool_threshold else None
        if self.spool_dir is not None:
            dataspool.prepare(self.spool_dir)
        self.worker = QueueWorker(ctx, self.bouncer)
        self.intake = Intake(
            ctx,
            self.admission,
            signer=DkimSigner(ctx),
            verifier=DkimVerifier(ctx),
            bouncer=self.bouncer,
            wake_queue=self.worker.wake,
        )
        self.mx_handler = MxHandler(self.admission, self.intake)
        self.submission_handler = SubmissionHandler(self.admission, self.intake, self.authenticator)
        #: SASL mechanisms of the handler not configured here: bearer tokens without [oauth], EXTERNAL without
        #: [tls] account_ca
        self.mechanisms_off: tuple[str, ...] = (
            *(("XOAUTH2", "OAUTHBEARER") if self.authenticator.bearer is None else ()),
            *(("EXTERNAL",) if not ctx.config.tls.account_ca else ()),
        )


class SmtpListener:
    """One listening socket (a ``Service``)."""

    def __init__(self, runtime: SmtpRuntime, name: str, port: int) -> None:
        if name not in _DESCRIPTION:
            raise ValueError(f"unknown SMTP endpoint {name}")
        self.rt = runtime
        self.name = name
        self.port = port
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[MasanteSMTP] = weakref.WeakSet()

    def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext | None]:
        cfg = self.rt.ctx.config
        cert, key = cfg.resolve(cfg.tls.cert), cfg.resolve(cfg.tls.key)
        if self.name == "mx":
            tls = server_context(cert, key, client_ca_file=cfg.resolve(cfg.tls.trust_ca))
            return tls, None
        # with [tls] account_ca a client certificate is asked for (optional) and must chain to it (SASL EXTERNAL)
        account_ca = cfg.resolve(Path(cfg.tls.account_ca)) if cfg.tls.account_ca else None
        tls = server_context(cert, key, client_ca_file=account_ca)
        return tls, (tls if self.name == "submissions" else None)

    def _protocol(self, tls: ssl.SSLContext, implicit: bool, loop: asyncio.AbstractEventLoop) -> MasanteSMTP:
        cfg = self.rt.ctx.config
        mx = self.name == "mx"
        session = CappedSMTP(
            self.rt.mx_handler if mx else self.rt.submission_handler,
            hostname=cfg.server.hostname,
            loop=loop,
            starttls_context=None if implicit else tls,
            require_tls=not implicit,
            offer_auth=not mx,
            require_auth=not mx,
            data_size_limit=cfg.limits.max_message_size,
            max_recipients=cfg.smtp.max_recipients,
            max_line_length=cfg.smtp.max_line_length,
            timeout=cfg.smtp.command_timeout,
            line_deadline=cfg.smtp.command_line_deadline,
            data_min_rate=cfg.smtp.data_min_rate,
            data_rate_grace=cfg.smtp.data_rate_grace,
            gate=self.rt.gate,
            spool_dir=self.rt.spool_dir,
            spool_threshold=cfg.limits.spool_threshold,
            client_key_types=cfg.smtp.mx_client_key_types if mx else None,
            mechanisms_off=self.rt.mechanisms_off,
        )
        session.caps, session.door = self.rt.caps, self.name
        self._sessions.add(session)
        metrics.CONNECTIONS.labels(self.name).inc()
        return session

    async def start(self) -> list[Endpoint]:
        loop = asyncio.get_running_loop()
        tls, implicit = self._contexts()
        bind = self.rt.ctx.config.server.bind
        if implicit is None:
            factory: Callable[[], asyncio.BaseProtocol] = lambda: self._protocol(tls, False, loop)  # noqa: E731
        else:  # submissions: the handshake is ours (``ImplicitTLS``), so that a failed one is logged
            timeout = self.rt.ctx.config.imap.tls_handshake_timeout
            factory = lambda: ImplicitTLS(lambda: self._protocol(tls, True, loop), implicit, loop, timeout, self.name)  # noqa: E731
        self._server = await loop.create_server(
            factory,
            host=bind,
            port=self.port,
            reuse_address=True,
            reuse_port=self.rt.ctx.config.server.shared_ports,
        )
        sock = self._server.sockets[0].getsockname()
        log.info("smtp.listening", extra={"fields": {"endpoint": self.name, "port": sock[1]}})
        return [Endpoint(self.name, bind, int(sock[1]), _DESCRIPTION[self.name])]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        sessions = list(self._sessions)
        for session in sessions:
            transport = session.transport
            if transport is not None and not transport.is_closing():
                with contextlib.suppress(Exception):
                    transport.write(SHUTDOWN_REPLY)  # type: ignore[attr-defined]
                transport.close()
        await asyncio.sleep(0.05)  # let the goodbyes and TLS close_notify go out
        for session in sessions:
            for t in (session.transport, session._original_transport):
                if t is not None and not t.is_closing():
                    t.abort()  # type: ignore[attr-defined]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 5)
        self._server = None


def build(
    ctx: Context,
    admission: Admission,
    authenticator: Authenticator | None = None,
    caps: ConnectionCaps | None = None,
) -> list[Service]:
    """The SMTP listeners whose port is not negative, then the outbound queue worker."""
    runtime = SmtpRuntime(ctx, admission, authenticator, caps)
    ports = ctx.config.ports
    services: list[Service] = [
        SmtpListener(runtime, name, port)
        for name, port in (("mx", ports.mx), ("submission", ports.submission), ("submissions", ports.submissions))
        if port >= 0
    ]
    services.append(runtime.worker)
    return services
