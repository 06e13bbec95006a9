"""The enrolment page of the HTTPS service: address and password, then the one-time code, then an app password.

| route                    | what                                                                     |
|--------------------------|--------------------------------------------------------------------------|
| ``GET /enrol``           | the page (two small forms)                                               |
| ``POST /enrol``          | ``address``, ``password``, ``device`` -> ``enrolment`` id, code sent     |
| ``POST /enrol/verify``   | ``enrolment``, ``code`` -> the device's app password, shown once         |
| ``POST /enrol/devices``  | ``address``, ``password`` -> the account's app passwords (no secret)     |
| ``POST /enrol/revoke``   | ``address``, ``password``, ``name`` -> that app password revoked          |

Invariants:
- Requests are JSON or form-encoded; a JSON request gets JSON, a form gets a
  page. Every refusal is a sentence (``EnrolmentError``) with its status:
  401 wrong address or password (the same for both), 400 wrong code (tries
  left said), 410 locked, expired or used, 503 no notifier.
- Nothing of a request is logged: no access log (``web.service``), and the
  errors logged here carry the route and the error's class only.
- Answers carry ``Cache-Control: no-store``: the app password is not kept by
  any cache between the server and the person.
"""

from __future__ import annotations

import html
import json
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from directory.enrolment import EnrolmentError, EnrolmentService, WrongCode

if TYPE_CHECKING:
    from directory.auth import Authenticator
    from mailserver.context import Context

log = logging.getLogger("masante.web")

MAX_FIELD = 1024
NO_STORE = {"Cache-Control": "no-store"}

PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Inscrire un appareil</title></head>
<body><h1>Inscrire un appareil</h1>{message}
<form method="post" action="/enrol">
<p><label>Adresse <input name="address" type="email" required></label></p>
<p><label>Mot de passe <input name="password" type="password" required></label></p>
<p><label>Appareil <input name="device" value="Téléphone" required></label></p>
<p><button>Recevoir un code</button></p></form>
<form method="post" action="/enrol/verify">
<p><label>Code reçu <input name="code" inputmode="numeric" pattern="[0-9]{{6}}" required></label></p>
<input type="hidden" name="enrolment" value="{enrolment}">
<p><button>Valider</button></p></form></body></html>
"""


def add_routes(app: web.Application, ctx: Context, authenticator: Authenticator) -> None:
    page = EnrolPage(EnrolmentService(ctx, authenticator))
    app.router.add_get("/enrol", page.get)
    app.router.add_post("/enrol", page.start)
    app.router.add_post("/enrol/verify", page.verify)
    app.router.add_post("/enrol/devices", page.devices)
    app.router.add_post("/enrol/revoke", page.revoke)


def _peer(request: web.Request) -> str:
    return request.remote or "?"


class EnrolPage:
    def __init__(self, service: EnrolmentService) -> None:
        self.service = service

    async def _fields(self, request: web.Request) -> tuple[dict[str, str], bool]:
        """The request's fields and whether it was JSON."""
        if request.content_type == "application/json":
            try:
                data: Any = json.loads(await request.read())
            except (ValueError, UnicodeDecodeError):
                raise web.HTTPBadRequest(text="the body is not JSON") from None
            if not isinstance(data, dict):
                raise web.HTTPBadRequest(text="the body is not a JSON object")
            fields = {str(k): v for k, v in data.items() if isinstance(v, str)}
            as_json = True
        else:
            form = await request.post()
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            as_json = False
        if any(len(v) > MAX_FIELD for v in fields.values()):
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_FIELD, actual_size=max(map(len, fields.values())))
        return fields, as_json

    def _answer(
        self, as_json: bool, status: int, body: dict[str, Any], message: str, enrolment: str = ""
    ) -> web.Response:
        if as_json:
            return web.json_response(body, status=status, headers=NO_STORE)
        text = PAGE.format(message=f"<p>{html.escape(message)}</p>", enrolment=html.escape(enrolment, quote=True))
        return web.Response(text=text, status=status, content_type="text/html", headers=NO_STORE)

    def _refused(self, as_json: bool, exc: EnrolmentError, enrolment: str = "") -> web.Response:
        body: dict[str, Any] = {"error": str(exc)}
        if isinstance(exc, WrongCode):
            body["tries_left"] = exc.tries_left
        log.info("web.enrol-refused", extra={"fields": {"error": type(exc).__name__, "status": exc.status}})
        return self._answer(as_json, exc.status, body, str(exc), enrolment)

    async def get(self, request: web.Request) -> web.Response:
        return self._answer(False, 200, {}, "Saisissez votre adresse et votre mot de passe.")

    async def start(self, request: web.Request) -> web.Response:
        fields, as_json = await self._fields(request)
        address, password = fields.get("address", ""), fields.get("password", "")
        device = fields.get("device", "") or "Appareil"
        if not address or not password:
            return self._refused(as_json, EnrolmentError("give address and password"))
        try:
            started = await self.service.start(address, password, device, peer=_peer(request))
        except EnrolmentError as exc:
            return self._refused(as_json, exc)
        body = {"enrolment": started.nonce, "expires_at": started.expires_at.isoformat(), "sent_to": started.sent_to}
        message = f"Un code a été envoyé à {started.sent_to} ; saisissez-le ci-dessous."
        return self._answer(as_json, 200, body, message, started.nonce)

    async def verify(self, request: web.Request) -> web.Response:
        fields, as_json = await self._fields(request)
        nonce, code = fields.get("enrolment", ""), fields.get("code", "")
        if not nonce or not code:
            return self._refused(as_json, EnrolmentError("give enrolment and code"), nonce)
        try:
            enrolled = await self.service.verify(nonce, code)
        except EnrolmentError as exc:
            return self._refused(as_json, exc, nonce)
        body = {"name": enrolled.name, "address": enrolled.address, "password": enrolled.password}
        message = (
            f"Appareil « {enrolled.name} » inscrit. Son mot de passe, affiché une seule fois : {enrolled.password}"
        )
        return self._answer(as_json, 200, body, message)

    async def devices(self, request: web.Request) -> web.Response:
        fields, as_json = await self._fields(request)
        address, password = fields.get("address", ""), fields.get("password", "")
        try:
            views = await self.service.devices(address, password, peer=_peer(request))
        except EnrolmentError as exc:
            return self._refused(as_json, exc)
        now = self.service.ctx.clock()
        listed = [
            {
                "name": v.name,
                "kind": v.kind,
                "scope": ",".join(v.protocols),
                "folders": list(v.folders) if v.folders is not None else None,
                "created_at": v.created_at.isoformat(),
                "last_used_at": v.last_used_at.isoformat() if v.last_used_at else None,
                "state": v.state(now),
            }
            for v in views
        ]
        message = "; ".join(f"{d['name']} ({d['state']})" for d in listed) or "Aucun appareil inscrit."
        return self._answer(as_json, 200, {"devices": listed}, message)

    async def revoke(self, request: web.Request) -> web.Response:
        fields, as_json = await self._fields(request)
        address, password, name = fields.get("address", ""), fields.get("password", ""), fields.get("name", "")
        try:
            count = await self.service.revoke(address, password, name, peer=_peer(request))
        except EnrolmentError as exc:
            return self._refused(as_json, exc)
        return self._answer(as_json, 200, {"revoked": count}, f"« {name} » révoqué.")
