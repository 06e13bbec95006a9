"""The aiosmtpd handlers of the two doors: thin hooks that ask the directory and answer its reply.

- ``MxHandler`` (port 25, other operators): MAIL asks ``Admission.mx_sender``
  with the subject DN of the verified client certificate; RCPT asks
  ``Admission.check_recipient`` and accepts only our own recipients (an MX never
  relays); DATA hands the message to ``Intake``.
- ``SubmissionHandler`` (587 STARTTLS, 465 TLS, professionals' and patients'
  mail clients): ``auth_PLAIN``/``auth_LOGIN`` (and, where configured,
  ``auth_XOAUTH2``/``auth_OAUTHBEARER``/``auth_EXTERNAL``) ask ``directory.auth.Authenticator``
  (awaited: aiosmtpd's ``authenticator`` callback cannot be); MAIL asks
  ``Admission.check_submission_sender``; RCPT asks ``Admission.check_recipient`` (local
  recipients are delivered, trust-space ones queued); DATA hands over to ``Intake``.

A hook parses nothing (``protocol`` did), decides nothing itself, and returns
``str(decision.reply)``.
"""

from __future__ import annotations

import base64
import binascii
import logging
from base64 import b64decode

from aiosmtpd.smtp import MISSING, AuthResult

from crypto.tls import peer_certificate
from directory.auth import Authenticator
from mailserver import metrics, sasl
from mailserver.admission import Admission
from mailserver.smtp import replies as R
from mailserver.smtp.engine import MasanteSMTP, Recipient, SmtpEnvelope, SmtpSession
from mailserver.smtp.intake import Inbound, Intake
from mailserver.smtp.params import MailParams, RcptParams
from mailserver.store.models import Account
from policies import Decision

log = logging.getLogger("masante.smtp")


def _refusal(stage: str, decision: Decision) -> None:
    if not decision.allowed:
        log.info(
            "smtp.refused",
            extra={
                "fields": {
                    "stage": stage,
                    "reason": decision.reason,
                    "code": decision.reply.code,
                    "enhanced": decision.reply.enhanced,
                }
            },
        )
        metrics.REFUSALS.labels(stage, decision.reason).inc()


class _Doors:
    door = "?"

    def __init__(self, admission: Admission, intake: Intake) -> None:
        self.admission = admission
        self.intake = intake

    async def handle_RCPT(
        self, server: MasanteSMTP, session: SmtpSession, envelope: SmtpEnvelope, address: str, params: RcptParams
    ) -> str:
        if envelope.sender_party is None:
            return str(R.NEED_MAIL)
        decision, resolved = await self.admission.check_recipient(envelope.sender_party, address)
        if decision.allowed and resolved is not None:
            if not self.may_take(resolved.account is not None):
                decision = Decision.refuse(R.RELAY_DENIED, "mx-relay-attempt")
            else:
                envelope.recipients.append(Recipient(address, params, resolved))
        _refusal("rcpt", decision)
        return str(decision.reply)

    def may_take(self, local: bool) -> bool:
        """May this door take a recipient that is (not) one of our accounts?"""
        return True

    async def handle_DATA(self, server: MasanteSMTP, session: SmtpSession, envelope: SmtpEnvelope) -> str:
        if envelope.sender_party is None or envelope.mail_from is None:
            return str(R.NEED_MAIL)
        inbound = Inbound(
            door=self.door,
            mail_from=envelope.mail_from,
            params=envelope.params,
            recipients=list(envelope.recipients),
            sender_party=envelope.sender_party,
            raw=envelope.content_bytes,
            spool=envelope.spool,
            helo=session.host_name,
            peer_ip=server.peer_ip,
            tls=server.tls_info(),
            account=session.account,
        )
        # the Inbound holds the only reference, so that Intake can let the bytes go once parsed
        envelope.content_bytes = envelope.content = envelope.original_content = b""
        result = await self.intake.accept(inbound)
        return str(result.reply)


class MxHandler(_Doors):
    door = "mx"

    def may_take(self, local: bool) -> bool:
        return local  # RFC 5321 §3.6.2: an MX takes mail for its own domains, and relays nothing

    async def handle_MAIL(
        self, server: MasanteSMTP, session: SmtpSession, envelope: SmtpEnvelope, address: str, params: MailParams
    ) -> str:
        info = server.tls_info()
        decision, party = await self.admission.mx_sender(address, info.peer_dn if info else None)
        if decision.allowed and party is not None:
            envelope.mail_from, envelope.params, envelope.sender_party = address, params, party
        _refusal("mail", decision)
        return str(decision.reply)


class SubmissionHandler(_Doors):
    door = "submission"

    def __init__(self, admission: Admission, intake: Intake, authenticator: Authenticator) -> None:
        super().__init__(admission, intake)
        self.authenticator = authenticator

    async def handle_MAIL(
        self, server: MasanteSMTP, session: SmtpSession, envelope: SmtpEnvelope, address: str, params: MailParams
    ) -> str:
        account = session.account
        if account is None:  # the engine asks for AUTH first; never reached
            return str(R.AUTH_REQUIRED)
        decision = await self.admission.check_submission_sender(account, address)
        if decision.allowed:
            envelope.mail_from, envelope.params = address, params
            envelope.sender_party = Admission.party_of(account)
        _refusal("mail", decision)
        return str(decision.reply)

    # --- RFC 4954 mechanisms, awaited by the engine ---------------------------------------------------------

    async def auth_PLAIN(self, server: MasanteSMTP, args: list[str]) -> AuthResult:
        """RFC 4616: ``[authzid] NUL authcid NUL passwd``; an authzid other than the login is refused."""
        data = await self._response(server, args, "")
        if data is None:
            return AuthResult(success=False, handled=True)
        try:
            creds = sasl.parse_plain(data)  # the one PLAIN decoder, shared with IMAP
        except sasl.SaslError as exc:
            await server.push(str(R.AUTH_SYNTAX.with_text(exc.text)))
            return AuthResult(success=False, handled=True)
        if creds.acts_as_another:
            return AuthResult(success=False, handled=False, message=str(R.AUTH_FAILED))
        return await self._check(server, creds.authcid.encode(), creds.password.encode(), "PLAIN")

    async def auth_LOGIN(self, server: MasanteSMTP, args: list[str]) -> AuthResult:
        login = await self._response(server, args, "Username:")
        if login is None:
            return AuthResult(success=False, handled=True)
        password = await self._response(server, [args[0]], "Password:")
        if password is None:
            return AuthResult(success=False, handled=True)
        return await self._check(server, login, password, "LOGIN")

    async def auth_XOAUTH2(self, server: MasanteSMTP, args: list[str]) -> AuthResult:
        """Google's XOAUTH2: ``user=<address>^Aauth=Bearer <token>^A^A`` (offered only with ``[oauth]``)."""
        return await self._bearer(server, args, "XOAUTH2")

    async def auth_OAUTHBEARER(self, server: MasanteSMTP, args: list[str]) -> AuthResult:
        """RFC 7628: ``n,a=<address>,^Aauth=Bearer <token>^A^A`` (offered only with ``[oauth]``)."""
        return await self._bearer(server, args, "OAUTHBEARER")

    async def _bearer(self, server: MasanteSMTP, args: list[str], mechanism: str) -> AuthResult:
        data = await self._response(server, args, "", limit=sasl.MAX_BEARER)
        if data is None:
            return AuthResult(success=False, handled=True)
        try:
            creds = sasl.parse_xoauth2(data) if mechanism == "XOAUTH2" else sasl.parse_oauthbearer(data)
        except sasl.SaslError as exc:
            await server.push(str(R.AUTH_SYNTAX.with_text(exc.text)))
            return AuthResult(success=False, handled=True)
        auth = self.authenticator
        result = await auth.authenticate_bearer(creds.token, creds.authzid, protocol="smtp", peer=server.peer_ip or "?")
        if result.refusal is not None:  # locked out (directory.limits): refused unchecked
            return AuthResult(success=False, handled=False, message=str(R.LOCKED_OUT.with_text(result.refusal)))
        if result.account is None:
            log.info("smtp.auth", extra={"fields": {"outcome": "fail", "mechanism": mechanism}})
            where = auth.bearer.settings.openid_configuration if auth.bearer is not None else None
            # RFC 7628 §3.2.2: the error as a 334 challenge; the client's ^A (or empty line) is read, then 535
            answer = await server.challenge_auth(sasl.bearer_error(openid_configuration=where))
            if answer is MISSING:
                return AuthResult(success=False, handled=True)  # * or bad base64: challenge_auth answered 501
            return AuthResult(success=False, handled=False, message=str(R.AUTH_FAILED))
        return self._authenticated(server, result.account, mechanism)

    async def auth_EXTERNAL(self, server: MasanteSMTP, args: list[str]) -> AuthResult:
        """RFC 4422 appendix A: the TLS client certificate bound to an APP or ORG mailbox; the response is
        the mailbox (or empty: the one the certificate is bound to). Offered only with ``[tls] account_ca``."""
        data = await self._response(server, args, "", limit=sasl.MAX_EXTERNAL)
        if data is None:
            return AuthResult(success=False, handled=True)
        try:
            authzid = sasl.decode_external(base64.b64encode(data))
        except sasl.SaslError as exc:
            await server.push(str(R.AUTH_SYNTAX.with_text(exc.text)))
            return AuthResult(success=False, handled=True)
        der = peer_certificate(server.ssl_object)
        result = await self.authenticator.authenticate_certificate(
            der, authzid, protocol="smtp", peer=server.peer_ip or "?"
        )
        if result.refusal is not None:  # locked out (directory.limits): refused unchecked
            return AuthResult(success=False, handled=False, message=str(R.LOCKED_OUT.with_text(result.refusal)))
        if result.account is None:
            log.info("smtp.auth", extra={"fields": {"outcome": "fail", "mechanism": "EXTERNAL"}})
            return AuthResult(success=False, handled=False, message=str(R.AUTH_FAILED))
        return self._authenticated(server, result.account, "EXTERNAL")

    @staticmethod
    def _authenticated(server: MasanteSMTP, account: Account, mechanism: str) -> AuthResult:
        """A verified login, whatever the mechanism: within the account's cap of open connections, the session's."""
        refusal = server.on_login(account.id) if server.on_login is not None else None
        if refusal is not None:  # the account is at its cap of open connections
            log.info("smtp.auth", extra={"fields": {"outcome": "connection-cap", "mechanism": mechanism}})
            return AuthResult(success=False, handled=False, message=str(R.ACCOUNT_CONNECTIONS.with_text(refusal)))
        server.smtp_session.account = account
        log.info("smtp.auth", extra={"fields": {"outcome": "ok", "mechanism": mechanism, "account": account.owner_id}})
        return AuthResult(success=True, auth_data=account.address)

    @staticmethod
    async def _response(
        server: MasanteSMTP, args: list[str], challenge: str, *, limit: int = sasl.MAX_MESSAGE
    ) -> bytes | None:
        """The initial response (``=`` is empty, RFC 4954 §4) or the answer to a 334 challenge."""
        if len(args) > 1:
            text = args[1]
            if text == "=":
                return b""
            if len(text) > 4 * ((limit + 2) // 3):
                await server.push(str(R.AUTH_SYNTAX.with_text("The authentication data is too long")))
                return None
            try:
                return b64decode(text.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                await server.push(str(R.AUTH_SYNTAX))
                return None
        answer = await server.challenge_auth(challenge)
        return None if answer is MISSING else bytes(answer)  # challenge_auth already answered 501

    async def _check(self, server: MasanteSMTP, login: bytes, password: bytes, mechanism: str) -> AuthResult:
        try:
            address, secret = login.decode("utf-8"), password.decode("utf-8")
        except UnicodeDecodeError:
            return AuthResult(success=False, handled=False, message=str(R.AUTH_FAILED))
        result = await self.authenticator.authenticate(address, secret, protocol="smtp", peer=server.peer_ip or "?")
        if result.refusal is not None:  # locked out (directory.limits): refused unchecked
            log.info("smtp.auth", extra={"fields": {"outcome": "locked"}})
            return AuthResult(success=False, handled=False, message=str(R.LOCKED_OUT.with_text(result.refusal)))
        if result.account is None:
            log.info("smtp.auth", extra={"fields": {"outcome": "fail"}})
            return AuthResult(success=False, handled=False, message=str(R.AUTH_FAILED))
        return self._authenticated(server, result.account, mechanism)
