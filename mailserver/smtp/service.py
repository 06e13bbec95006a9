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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from pathlib import Path

from crypto.tls import server_context
from directory.auth import Authenticator
from mailserver import metrics
from mailserver.admission import Admission
from mailserver.context import Context
from mailserver.endpoints import Endpoint, Service
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


class SmtpRuntime:
    """What the three listeners and the worker share in one process."""

    def __init__(self, ctx: Context, admission: Admission) -> None:
        self.ctx = ctx
        self.admission = admission
        self.authenticator = Authenticator(ctx)
        self.bouncer = Bouncer(ctx)
        limits = ctx.config.limits  # one gate for every SMTP door of the process: large messages read at once
        self.gate = LargeMessageGate(
            threshold=limits.large_message_size,
            slots=limits.large_messages_at_once,
            wait=limits.large_message_wait,
            min_rate=limits.large_message_min_rate,
        )
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
        session = MasanteSMTP(
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
            client_key_types=cfg.smtp.mx_client_key_types if mx else None,
            mechanisms_off=self.rt.mechanisms_off,
        )
        self._sessions.add(session)
        metrics.CONNECTIONS.labels(self.name).inc()
        return session

    async def start(self) -> list[Endpoint]:
        loop = asyncio.get_running_loop()
        tls, implicit = self._contexts()
        bind = self.rt.ctx.config.server.bind
        self._server = await loop.create_server(
            lambda: self._protocol(tls, implicit is not None, loop),
            host=bind,
            port=self.port,
            ssl=implicit,
            reuse_address=True,
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


def build(ctx: Context, admission: Admission) -> list[Service]:
    """The SMTP listeners whose port is not negative, then the outbound queue worker."""
    runtime = SmtpRuntime(ctx, admission)
    ports = ctx.config.ports
    services: list[Service] = [
        SmtpListener(runtime, name, port)
        for name, port in (("mx", ports.mx), ("submission", ports.submission), ("submissions", ports.submissions))
        if port >= 0
    ]
    services.append(runtime.worker)
    return services
