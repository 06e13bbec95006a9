"""The IMAP listeners (IMAP with STARTTLS, IMAPS): ``Service``s (``mailserver.endpoints``) run by ``mailserver.app``.

Invariants:
- Both listeners use the one TLS profile of ``crypto.tls`` (TLS 1.2+, MSSanté suites).
- IMAPS accepts plain TCP and starts TLS itself, so that a failed handshake is
  logged (``imap.tls-failed`` with OpenSSL's short reason, then ``imap.disconnect``).
- One ``Authenticator`` (and so one set of login limits) is shared by every door of the process
  (``mailserver.app.build_services`` hands the same one to SMTP and the web service).
- Connections are capped per source address and per account (``directory.limits.ConnectionCaps``, one per
  process, shared with SMTP): past a cap the client gets ``* BYE [UNAVAILABLE] <why>`` instead of the
  greeting (or ``NO [LIMIT]`` to its LOGIN), and ``limits.connection-refused`` is logged.
- ``stop()`` closes the listener first, then says BYE to every open session.
- Memory per idle connection is bounded: asyncio's TLS layer allocates a
  256 KiB read buffer per connection by default; this process lowers it to
  ``TLS_READ_BUFFER`` (a TLS record carries at most 16 KiB, so reads still
  take whole records). 10,000 idle IMAPS clients would otherwise cost 2.5 GiB.
  Once a handshake is done, that buffer is the one shared by the connections
  of the event loop (``tlsbuffer.share_tls_read_buffer``, issue 10).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path

from crypto.tls import server_context
from directory.auth import Authenticator
from directory.limits import ConnectionCaps
from mailserver import metrics
from mailserver.admission import Admission
from mailserver.context import Context
from mailserver.endpoints import Endpoint, Service
from mailserver.imap.session import ImapSession, SessionConfig, tls_reason
from mailserver.imap.tlsbuffer import share_tls_read_buffer

log = logging.getLogger("masante.imap")

TLS_READ_BUFFER = 32 * 1024


def limit_tls_buffers() -> None:
    """Process-wide: the per-connection read buffer of asyncio's TLS protocol (see the module notes)."""
    from asyncio import sslproto

    sslproto.SSLProtocol.max_size = min(sslproto.SSLProtocol.max_size, TLS_READ_BUFFER)


class ImapListener:
    def __init__(self, name: str, port: int, *, implicit_tls: bool, session_config: SessionConfig) -> None:
        self.name = name
        self.port = port
        self.implicit_tls = implicit_tls
        self.cfg = session_config
        self._server: asyncio.Server | None = None
        self._sessions: set[ImapSession] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        return len(self._sessions)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.implicit_tls and not await self._handshake(writer):
            return
        session = ImapSession(self.cfg, reader, writer, implicit_tls=self.implicit_tls)
        metrics.CONNECTIONS.labels(self.name).inc()
        caps = self.cfg.caps
        if caps is not None:
            lease = caps.open(self.name, session.peer, lambda: session.store is not None)
            if isinstance(lease, str):
                await self._refuse(writer, lease)
                return
            session.lease = lease
        self._sessions.add(session)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await session.run()
        finally:
            if caps is not None and session.lease is not None:
                caps.release(session.lease)
            self._sessions.discard(session)
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _refuse(writer: asyncio.StreamWriter, why: str) -> None:
        """A connection past a cap: BYE as the greeting (RFC 9051 §7.1.5), then closed."""
        with contextlib.suppress(Exception):
            writer.write(f"* BYE [UNAVAILABLE] {why}\r\n".encode())
            await asyncio.wait_for(writer.drain(), 5)
            writer.close()
            await asyncio.wait_for(writer.wait_closed(), 5)
        log.info("imap.disconnect", extra={"fields": {"reason": "connection-cap"}})

    async def _handshake(self, writer: asyncio.StreamWriter) -> bool:
        """IMAPS: the TLS handshake, here rather than in asyncio's server, so that a failure is logged (issue 11)."""
        tls, timeout = self.cfg.tls, self.cfg.tls_handshake_timeout
        if tls is None:  # build() always gives one; a listener without TLS has no IMAPS to offer
            writer.transport.abort()
            return False
        try:
            # awaited directly, not in wait_for's task: start_tls must pause the plain reading before the
            # loop polls the socket again, or a ClientHello already sent would land in the StreamReader
            await writer.start_tls(tls, ssl_handshake_timeout=timeout)
            share_tls_read_buffer(writer)
            return True
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as exc:
            # asyncio ends a handshake that outlives ssl_handshake_timeout with ConnectionAbortedError
            timed_out = isinstance(exc, TimeoutError | ConnectionAbortedError)
            reason = "timeout" if timed_out else tls_reason(exc)
            log.info("imap.tls-failed", extra={"fields": {"endpoint": self.name, "reason": reason}})
            log.info("imap.disconnect", extra={"fields": {"reason": "tls-failed"}})
            with contextlib.suppress(Exception):
                writer.transport.abort()
            return False

    async def start(self) -> list[Endpoint]:
        config = self.cfg.ctx.config
        limit_tls_buffers()
        self._server = await asyncio.start_server(
            self._handle,
            config.server.bind,
            self.port,
            # IMAPS: the handshake is ``_handshake``'s, so that its failures are logged
            backlog=1024,
            reuse_port=config.server.shared_ports,
        )
        port = self._server.sockets[0].getsockname()[1]
        desc = "IMAPS (TLS)" if self.implicit_tls else "IMAP (STARTTLS required before login)"
        log.info("imap.listening", extra={"fields": {"endpoint": self.name, "port": port}})
        return [Endpoint(self.name, config.server.bind, port, desc)]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        sessions = list(self._sessions)
        await asyncio.gather(*(s.shutdown() for s in sessions), return_exceptions=True)
        tasks = list(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None


def session_config(
    ctx: Context,
    tls: ssl.SSLContext | None,
    authenticator: Authenticator,
    admission: Admission,
    caps: ConnectionCaps | None = None,
) -> SessionConfig:
    imap = ctx.config.imap
    return SessionConfig(
        ctx=ctx,
        authenticator=authenticator,
        caps=caps,
        admission=admission,
        tls=tls,
        max_line=imap.max_line,
        max_literal=imap.max_literal,
        max_depth=imap.max_depth,
        bad_command_limit=imap.bad_command_limit,
        login_timeout=imap.login_timeout,
        idle_timeout=imap.idle_timeout,
        tls_handshake_timeout=imap.tls_handshake_timeout,
        line_deadline=imap.line_deadline,
    )


def build(
    ctx: Context,
    admission: Admission,
    authenticator: Authenticator | None = None,
    caps: ConnectionCaps | None = None,
) -> list[Service]:
    """The IMAP listeners configured (a negative port disables one); the process's ``authenticator`` and
    ``caps`` (made here when not given)."""
    ports = ctx.config.ports
    if ports.imap < 0 and ports.imaps < 0:
        return []
    cfg = ctx.config
    # with [tls] account_ca a client certificate is asked for (optional) and must chain to it (SASL EXTERNAL)
    account_ca = cfg.resolve(Path(cfg.tls.account_ca)) if cfg.tls.account_ca else None
    tls = server_context(cfg.resolve(cfg.tls.cert), cfg.resolve(cfg.tls.key), client_ca_file=account_ca)
    authenticator = authenticator if authenticator is not None else Authenticator(ctx)
    caps = caps if caps is not None else ConnectionCaps.for_context(ctx)
    shared = session_config(ctx, tls, authenticator, admission, caps)
    out: list[Service] = []
    if ports.imap >= 0:
        out.append(ImapListener("imap", ports.imap, implicit_tls=False, session_config=shared))
    if ports.imaps >= 0:
        out.append(ImapListener("imaps", ports.imaps, implicit_tls=True, session_config=shared))
    return out
