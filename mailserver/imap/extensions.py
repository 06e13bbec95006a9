"""The handlers of the IMAP extensions that stand apart from the core commands: QUOTA (RFC 9208), CATENATE
(RFC 4469).

Implementation notes (invariants):
- ``ExtensionHandlers`` adds ``do_<command>`` methods to ``handlers.MailHandlers``
  and follows its rules: responses returned, tagged one last; a ``MailError``
  answers NO with its code.
- Quotas are the operator's (``[limits] quota_<kind>``, ``vault_quota``): GETQUOTA
  and GETQUOTAROOT report them (STORAGE in KiB, MESSAGE a count, ``mailserver.quota``), SETQUOTA
  is answered ``NO [NOPERM]`` and QUOTASET is not advertised (RFC 9208 §4.1.3).
- CATENATE: each message is put together from its TEXT literals and the
  octets its URLs name (``BODY[section]`` of a message this session may read:
  the store's ``mailboxes`` and ``fetch``, audited as any read), bounded by the
  APPEND limit as it grows; then it is appended as any other (quota, admission,
  MULTIAPPEND's all or none). A URL that names nothing: ``NO [BADURL url]``.

See Also: RFC 9208, RFC 4469, RFC 5092 (``protocol.urls``).
"""

from __future__ import annotations

from mailserver import quota
from mailserver.errors import BadUrl, NoPermission, NoSuchQuotaRoot, TooBig
from mailserver.imap.handlers import MailHandlers, ok
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.urls import parse_url
from mailserver.store.repositories.mail import canonical_name


def quota_response(root: quota.Root, utf8: bool = False) -> r.Data:
    """``* QUOTA root (STORAGE used limit MESSAGE used limit)`` (RFC 9208 §5.1: KiB; §5.2: a count)."""
    listed: list[r.Atom | int] = []
    for resource, used, limit in root.resources:
        listed += [r.Atom(resource), used, limit]
    return r.Data((r.Atom("QUOTA"), mutf7.wire(root.name, utf8), tuple(listed)))


class ExtensionHandlers(MailHandlers):
    async def do_getquota(self, cmd: c.GetQuota) -> list[r.Response]:
        found = await self._store().quota_root(cmd.root)
        if found is None:
            raise NoSuchQuotaRoot(f"No quota root {cmd.root!r} here: GETQUOTAROOT names the roots of a mailbox")
        return [quota_response(found, self.utf8), ok(cmd.tag, "GETQUOTA completed")]

    async def do_getquotaroot(self, cmd: c.GetQuotaRoot) -> list[r.Response]:
        name, roots = await self._store().quota_roots(cmd.mailbox)
        wire = [mutf7.wire(n, self.utf8) for n in (name, *(x.name for x in roots))]
        listed = r.Data((r.Atom("QUOTAROOT"), *wire))
        return [listed, *(quota_response(x, self.utf8) for x in roots), ok(cmd.tag, "GETQUOTAROOT completed")]

    async def do_setquota(self, cmd: c.SetQuota) -> list[r.Response]:
        raise NoPermission("Quotas are set by the operator of this server, not from a mail client")

    # --- CATENATE (RFC 4469) -------------------------------------------------------------------------------

    async def do_append(self, cmd: c.Append) -> list[r.Response]:
        """APPEND; a message given as CATENATE parts is put together first (RFC 4469 §3)."""
        if any(item.catenate for item in cmd.items):
            items = [await self._catenated(item) if item.catenate else item for item in cmd.items]
            first = items[0]
            cmd = c.Append(cmd.tag, cmd.mailbox, first.flags, first.date, first.message, tuple(items[1:]))
        return await super().do_append(cmd)

    async def _catenated(self, item: c.AppendItem) -> c.AppendItem:
        limit = min(self.ctx.config.limits.max_message_size, self.ctx.config.imap.max_literal)
        out = bytearray()
        for part in item.catenate:
            out += part.text if part.text is not None else await self._url_octets(part.url or "")
            if len(out) > limit:
                raise TooBig(f"The message put together is too big (the limit is {limit} bytes)")
        return c.AppendItem(item.flags, item.date, bytes(out))

    async def _url_octets(self, url: str) -> bytes:
        """``BODY[section]<partial>`` of the message ``url`` names, in this account, as this session sees it."""
        try:
            u = parse_url(url)
        except ValueError as exc:
            raise BadUrl(url, str(exc)) from None
        store = self._store()
        if u.user is not None and u.user.lower() != store.account.address.lower():
            raise BadUrl(url, "The URL names another user's mailbox")
        name = canonical_name(u.mailbox)
        box = next((b for b in await store.mailboxes() if b.name == name), None)
        if box is None or box.uidvalidity != u.uidvalidity:
            raise BadUrl(url, "No such mailbox here, or its UIDVALIDITY has changed")
        rows, _ = await store.fetch(box.id, [u.uid], meta=False, body=True, mark_seen=False, audit=True)
        if not rows:
            raise BadUrl(url, "No message with that UID in the mailbox")
        msg, section = rows[0], u.section
        if not section.part and section.text is None:
            data = msg.raw or b""
        else:
            data = msg.parsed.section(section.part, section.text)
            if section.part and msg.parsed.find_part(section.part) is None:
                raise BadUrl(url, "The message has no such part")
        if u.partial is not None:
            offset, length = u.partial
            data = data[offset : None if length is None else offset + length]
        return data
