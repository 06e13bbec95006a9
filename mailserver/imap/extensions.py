"""The handlers of the IMAP extensions that stand apart from the core commands: QUOTA (RFC 9208).

Implementation notes (invariants):
- ``ExtensionHandlers`` adds ``do_<command>`` methods to ``handlers.MailHandlers``
  and follows its rules: responses returned, tagged one last; a ``MailError``
  answers NO with its code.
- Quotas are the operator's (``[limits] quota_<kind>``, ``vault_quota``): GETQUOTA
  and GETQUOTAROOT report them (STORAGE in KiB, ``mailserver.quota``), SETQUOTA
  is answered ``NO [NOPERM]`` and QUOTASET is not advertised (RFC 9208 §4.1.3).

See Also: RFC 9208.
"""

from __future__ import annotations

from mailserver import quota
from mailserver.errors import NoPermission, NoSuchQuotaRoot
from mailserver.imap.handlers import MailHandlers, ok
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r


def quota_response(root: quota.Root) -> r.Data:
    """``* QUOTA root (STORAGE used limit)`` (RFC 9208 §5.1: KiB)."""
    used, limit = root.storage
    return r.Data((r.Atom("QUOTA"), mutf7.encode(root.name), (r.Atom("STORAGE"), used, limit)))


class ExtensionHandlers(MailHandlers):
    async def do_getquota(self, cmd: c.GetQuota) -> list[r.Response]:
        found = await self._store().quota_root(cmd.root)
        if found is None:
            raise NoSuchQuotaRoot(f"No quota root {cmd.root!r} here: GETQUOTAROOT names the roots of a mailbox")
        return [quota_response(found), ok(cmd.tag, "GETQUOTA completed")]

    async def do_getquotaroot(self, cmd: c.GetQuotaRoot) -> list[r.Response]:
        name, roots = await self._store().quota_roots(cmd.mailbox)
        listed = r.Data((r.Atom("QUOTAROOT"), mutf7.encode(name), *(mutf7.encode(x.name) for x in roots)))
        return [listed, *(quota_response(x) for x in roots), ok(cmd.tag, "GETQUOTAROOT completed")]

    async def do_setquota(self, cmd: c.SetQuota) -> list[r.Response]:
        raise NoPermission("Quotas are set by the operator of this server, not from a mail client")
