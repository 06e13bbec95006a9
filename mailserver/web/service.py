"""The small HTTPS service (aiohttp): client autoconfiguration, metrics and health, a ``Service`` of ``mailserver.app``.

| route                                                 | what                                              |
|-------------------------------------------------------|---------------------------------------------------|
| ``GET /.well-known/autoconfig/mail/config-v1.1.xml``  | Thunderbird autoconfig (domain from the address   |
| ``GET /mail/config-v1.1.xml?emailaddress=``           | or the Host, ``autoconfig.`` stripped)            |
| ``POST /autodiscover/autodiscover.xml``               | Microsoft Autodiscover, POX                       |
| ``GET /apple/mobileconfig?emailaddress=``             | an Apple configuration profile                    |
| ``GET /.well-known/mta-sts.txt`` (Host ``mta-sts.``)  | the MTA-STS policy (RFC 8461 §3.3)                |
| ``GET /metrics``                                      | Prometheus text format (``mailserver.metrics``)   |
| ``GET /healthz``                                      | 200 while the process runs                        |
| ``GET /readyz``                                       | 200 if the database answers and the KEK works     |
| ``GET/POST /enrol``, ``POST /enrol/verify``           | device enrolment with a one-time code (``enrol``) |

Invariants:
- One TLS profile for every port: the context comes from ``crypto.tls`` with
  the server's certificate, as the mail doors' (TLS 1.2+, MSSanté suites).
- Autoconfiguration answers only for our own domains (404 otherwise) and never
  says whether an account exists: the answer depends on the domain alone.
- No access log: request lines carry addresses (``?emailaddress=``). Errors are
  logged with the route's name, never the query.
- Skipped when ``ports.web`` is negative (the default).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from crypto.envelope import DataKey
from crypto.tls import server_context
from directory.addresses import Address, normalize_domain
from directory.auth import Authenticator
from directory.errors import InvalidAddress
from mailserver import metrics
from mailserver.endpoints import Endpoint, Service
from mailserver.store import health
from mailserver.web import autoconfig, enrol

if TYPE_CHECKING:
    from directory.auth import Authenticator
    from mailserver.context import Context

log = logging.getLogger("masante.web")

DESCRIPTION = "HTTPS autoconfig, /metrics, /healthz (TLS)"
XML = "application/xml"
#: the owner name of the data key /readyz wraps and unwraps to prove the KEK works
_READY_OWNER = "readyz"


class WebService:
    """The HTTPS listener; ``endpoints`` is the server's list of listening doors, complete when this starts."""

    name = "web"

    def __init__(
        self, ctx: Context, port: int, endpoints: Sequence[Endpoint], authenticator: Authenticator | None = None
    ) -> None:
        self.ctx = ctx
        self.authenticator = authenticator
        self.port = port
        self.endpoints = endpoints
        #: the process's one Authenticator (login limits shared with IMAP and SMTP), for pages that log in
        self.authenticator = authenticator
        self._runner: web.AppRunner | None = None

    # --- Service --------------------------------------------------------------------------------------------

    async def start(self) -> list[Endpoint]:
        cfg = self.ctx.config
        tls = server_context(cfg.resolve(cfg.tls.cert), cfg.resolve(cfg.tls.key))
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            cfg.server.bind,
            self.port,
            ssl_context=tls,
            reuse_address=True,
            reuse_port=cfg.server.shared_ports,
        )
        await site.start()
        port = int(self._runner.addresses[0][1])
        log.info("web.listening", extra={"fields": {"endpoint": self.name, "port": port}})
        return [Endpoint(self.name, cfg.server.bind, port, DESCRIPTION)]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=autoconfig.MAX_AUTODISCOVER_REQUEST)
        app.router.add_get("/.well-known/autoconfig/mail/config-v1.1.xml", self.thunderbird)
        app.router.add_get("/mail/config-v1.1.xml", self.thunderbird)
        for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
            app.router.add_post(path, self.autodiscover)
        app.router.add_get("/apple/mobileconfig", self.mobileconfig)
        app.router.add_get("/.well-known/mta-sts.txt", self.mta_sts)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        if self.authenticator is None:  # until app.py hands every door the one Authenticator
            self.authenticator = Authenticator(self.ctx)
        enrol.add_routes(app, self.ctx, self.authenticator)
        return app

    # --- autoconfiguration ----------------------------------------------------------------------------------

    def settings(self) -> autoconfig.MailSettings:
        ports = {e.name: e.port for e in self.endpoints}
        return autoconfig.MailSettings.from_ports(self.ctx.config.server.hostname, ports)

    async def _is_local(self, domain: str) -> bool:
        async with self.ctx.uow(readonly=True) as uow:
            return await uow.domains.get(domain) is not None

    async def _local_address(self, text: str) -> Address:
        """The address asked about, if it is at one of our domains; 400 or 404 otherwise."""
        try:
            address = Address.parse(text)
        except InvalidAddress:
            raise web.HTTPBadRequest(text="emailaddress is not an address") from None
        if not await self._is_local(address.domain):
            raise web.HTTPNotFound(text="not a domain of this server")
        return address

    async def thunderbird(self, request: web.Request) -> web.Response:
        asked = request.query.get("emailaddress")
        if asked is not None:
            domain = (await self._local_address(asked)).domain
        else:
            # Thunderbird asks https://autoconfig.<domain>/mail/... and https://<domain>/.well-known/...
            host = (request.url.host or "").removeprefix("autoconfig.")
            try:
                domain = normalize_domain(host)
            except InvalidAddress:
                raise web.HTTPBadRequest(text="give ?emailaddress=") from None
            if not await self._is_local(domain):
                raise web.HTTPNotFound(text="not a domain of this server")
        return web.Response(body=autoconfig.thunderbird(self.settings(), domain), content_type=XML, charset="utf-8")

    async def autodiscover(self, request: web.Request) -> web.Response:
        try:
            asked = autoconfig.autodiscover_address(await request.read())
        except autoconfig.AutoconfigError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        address = await self._local_address(asked)
        body = autoconfig.autodiscover(self.settings(), str(address))
        return web.Response(body=body, content_type=XML, charset="utf-8")

    async def mobileconfig(self, request: web.Request) -> web.Response:
        asked = request.query.get("emailaddress")
        if asked is None:
            raise web.HTTPBadRequest(text="give ?emailaddress=")
        address = await self._local_address(asked)
        try:
            body = autoconfig.mobileconfig(self.settings(), str(address))
        except autoconfig.AutoconfigError as exc:
            raise web.HTTPServiceUnavailable(text=str(exc)) from None
        return web.Response(
            body=body,
            content_type=autoconfig.MOBILECONFIG_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{address.domain}.mobileconfig"'},
        )

    async def mta_sts(self, request: web.Request) -> web.Response:
        """RFC 8461 §3.3: the policy for the domain whose ``mta-sts.`` host was asked."""
        host = request.url.host or ""
        if not host.startswith("mta-sts."):
            raise web.HTTPNotFound(text="ask mta-sts.<domain>")
        try:
            domain = normalize_domain(host.removeprefix("mta-sts."))
        except InvalidAddress:
            raise web.HTTPNotFound(text="ask mta-sts.<domain>") from None
        if not await self._is_local(domain):
            raise web.HTTPNotFound(text="not a domain of this server")
        return web.Response(text=autoconfig.mta_sts_policy(self.ctx.config.server.hostname), content_type="text/plain")

    # --- metrics and health ---------------------------------------------------------------------------------

    async def metrics(self, request: web.Request) -> web.Response:
        try:
            async with self.ctx.uow(readonly=True) as uow:
                depth, oldest = await uow.queue.depth()
            metrics.QUEUE_DEPTH.set(depth)
            metrics.QUEUE_OLDEST_AGE.set(_age(self.ctx.clock(), oldest))
        except Exception as exc:  # noqa: BLE001 - the process's own metrics are still worth serving
            log.warning("web.metrics-queue-failed", extra={"fields": {"error": type(exc).__name__}})
        return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.Response:
        problems = []
        try:
            await health.ping(self.ctx.db)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            problems.append(f"database: {type(exc).__name__}")
        try:
            key = DataKey.generate()
            ring = self.ctx.keyring
            if ring.unwrap(ring.wrap(key, owner=_READY_OWNER), owner=_READY_OWNER) != key:
                problems.append("kek: wrap and unwrap disagree")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"kek: {type(exc).__name__}")
        if problems:
            log.warning("web.not-ready", extra={"fields": {"problems": problems}})
            return web.Response(status=503, text="not ready: " + "; ".join(problems) + "\n")
        return web.Response(text="ready\n")


def _age(now: dt.datetime, oldest: dt.datetime | None) -> float:
    if oldest is None:
        return 0.0
    if oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=dt.UTC)
    return max(0.0, (now - oldest).total_seconds())


def build(ctx: Context, endpoints: Sequence[Endpoint], authenticator: Authenticator | None = None) -> list[Service]:
    """The HTTPS service if ``ports.web`` is not negative (``MASANTE_PORTS_WEB``)."""
    port = ctx.config.ports.web
    return [WebService(ctx, port, endpoints, authenticator)] if port >= 0 else []
