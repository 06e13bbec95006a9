"""DKIM for the SMTP doors: sign what leaves for another operator, verify what arrives, say so in a header.

Invariants:
- Outbound: a message submitted by one of our accounts is signed with its
  domain's current key (``keys.dkim_dir``); a domain without a key sends
  unsigned (logged once per domain), never blocked.
- Inbound (MX): every signature is checked against the key table (and DNS if
  enabled), off the event loop; the results go into one
  ``Authentication-Results`` field (RFC 8601) at the top, after removing any
  field that claims our own authserv-id (RFC 8601 §5: a forgery).
- When the trust space marks the sender's domain as signing, a message without
  a passing signature aligned with that domain (``d=`` the domain or a parent)
  is refused ``550 5.7.20``; a temporary key lookup failure defers it ``451 4.7.5``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from crypto import dkim as dkimlib
from directory.dkim import DkimKeys
from directory.trust import TrustSpace
from mailserver.context import Context
from mailserver.message import ParsedMessage
from mailserver.message.headers import HeaderField
from mailserver.message.offload import in_thread
from mailserver.smtp import message as M
from mailserver.smtp import replies as R
from policies.reply import Reply

log = logging.getLogger("masante.smtp.dkim")

#: how long a domain's signing key stays cached before the key directory is read again
KEY_CACHE_SECONDS = 60.0


class DkimSigner:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._cache: dict[str, tuple[float, tuple[str, bytes] | None]] = {}

    def _key(self, domain: str) -> tuple[str, bytes] | None:
        now = self.ctx.clock.monotonic()  # the injected clock: a test advances it past KEY_CACHE_SECONDS
        hit = self._cache.get(domain)
        if hit is not None and now - hit[0] < KEY_CACHE_SECONDS:
            return hit[1]
        key = dkimlib.load_current(self.ctx.config.resolve(self.ctx.config.keys.dkim_dir), domain)
        if key is None and (hit is None or hit[1] is not None):
            log.info("dkim.no-signing-key", extra={"fields": {"domain": domain}})
        self._cache[domain] = (now, key)
        return key

    async def sign(self, msg: ParsedMessage, domain: str) -> bytes:
        """The message's bytes signed for ``domain``, or unchanged if signing is off or the domain has no key."""
        raw = msg.raw
        if not self.ctx.config.smtp.dkim_sign:
            return raw
        key = self._key(domain.lower())
        if key is None:
            return raw
        selector, pem = key
        try:
            return await in_thread(dkimlib.sign, raw, domain=domain, selector=selector, private_pem=pem)
        except dkimlib.DkimError as exc:
            log.warning("dkim.sign-failed", extra={"fields": {"domain": domain, "reason": str(exc)}})
            return raw


@dataclass(frozen=True, slots=True)
class Verdict:
    results: tuple[dkimlib.Result, ...]
    refusal: Reply | None  # set when the sender's domain must sign and did not

    @property
    def passed(self) -> tuple[str, ...]:
        """The ``d=`` domains of the signatures that verified (what DMARC-style From alignment reads)."""
        return tuple(r.domain.lower() for r in self.results if r.status is dkimlib.Status.PASS and r.domain)


class DkimVerifier:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.keys = DkimKeys(ctx)
        self.trust = TrustSpace(ctx)

    async def verify(self, msg: ParsedMessage) -> list[dkimlib.Result]:
        if not msg.has("dkim-signature"):  # the header index answers: dkimpy is not woken for unsigned mail
            return []
        raw = msg.raw
        sigs = dkimlib.signatures(raw)
        if not sigs:
            return []
        found = await self.keys.find(s.key_name for s in sigs)

        def run() -> list[dkimlib.Result]:
            out = []
            for s in sigs:
                if s.key_name in found.temporary:
                    out.append(
                        dkimlib.Result(
                            dkimlib.Status.TEMPERROR, s.domain, s.selector, s.b_prefix, "key lookup timed out"
                        )
                    )
                else:
                    out.append(dkimlib.verify(raw, s, found.records.get))
            return out

        return await asyncio.to_thread(run)

    async def judge(self, msg: ParsedMessage, sender_domain: str | None) -> Verdict:
        results = tuple(await self.verify(msg))
        if sender_domain is None:
            return Verdict(results, None)
        operator = await self.trust.lookup(sender_domain)
        if operator is None or not operator.dkim_signing:
            return Verdict(results, None)
        aligned = [r for r in results if r.domain and _aligned(r.domain, sender_domain)]
        if any(r.status is dkimlib.Status.PASS for r in aligned):
            return Verdict(results, None)
        if any(r.status is dkimlib.Status.TEMPERROR for r in aligned):
            return Verdict(results, R.DKIM_TEMPFAIL)
        return Verdict(results, R.DKIM_REQUIRED)


def _aligned(d: str, domain: str) -> bool:
    d, domain = d.lower(), domain.lower()
    return domain == d or domain.endswith("." + d)


def sender_domain(mail_from: str, msg: ParsedMessage) -> str | None:
    """The domain DKIM must align with: the envelope sender's, or for a bounce the From header's."""
    if mail_from:
        return mail_from.rpartition("@")[2].lower() or None
    for addr in msg.addresses("from"):
        return addr.rpartition("@")[2].lower()
    return None


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "").replace('"', "'")[:120] + '"'


def authentication_results(authserv_id: str, results: Sequence[dkimlib.Result]) -> bytes:
    """One Authentication-Results field for the DKIM results (RFC 8601 §2.2; ``dkim=none`` if unsigned)."""
    if not results:
        return M.fold("Authentication-Results", [f"{authserv_id};", "dkim=none"])
    parts = [f"{authserv_id};"]
    for i, r in enumerate(results):
        item = [f"dkim={r.status.value}"]
        if r.status is not dkimlib.Status.PASS:
            item.append(f"reason={_quote(r.reason)}")
        if r.domain:
            item.append(f"header.d={r.domain}")
        if r.selector:
            item.append(f"header.s={r.selector}")
        if r.b_prefix:
            item.append(f"header.b={r.b_prefix}")
        if i < len(results) - 1:
            item[-1] += ";"
        parts += item
    return M.fold("Authentication-Results", parts)


def strip_own_results(msg: ParsedMessage, authserv_id: str) -> ParsedMessage:
    """Remove Authentication-Results fields that claim to be ours (RFC 8601 §5)."""
    own = authserv_id.lower()

    def claims_ours(f: HeaderField) -> bool:
        return f.key == "authentication-results" and f.value.split(";", 1)[0].strip().lower() == own

    return msg.remove(claims_ours)
