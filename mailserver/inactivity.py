"""Mailboxes nobody uses (CNIL): listed, their owners warned by mail once, then closed after a grace period.

``masante-admin retention inactive --days 365 [--grace-days 30] [--dry-run]`` runs ``Inactivity.review``.

Invariants:
- A mailbox is unused when its account is ``active`` and its last successful
  login (``account_activity.last_login_at``, kept by ``directory.auth`` at every
  login on every door, to the minute: ``directory.auth.LAST_LOGIN_EVERY``) or,
  never logged in, its creation is older than ``days`` on the context's clock.
- Its owner is warned once: a message delivered into its INBOX
  (``mailserver.delivery.deliver``, in the unit of work that records
  ``warned_at`` and audits ``account.inactivity-warning``), saying when the
  mailbox will close and that logging in keeps it. A login after the warning
  voids it: the mailbox is no longer unused, and a later idle spell warns again.
- ``grace_days`` after the warning, a mailbox still unused is closed through the
  one closure path (``AccountService.close``: data kept for the retention
  period, then crypto-shredded by ``retention run``), audited as the
  administrator's act.
- ``dry_run`` lists what would be done and changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from directory.accounts import AccountService
from mailserver.context import Context
from mailserver.delivery import deliver
from mailserver.store.models import Account, AccountActivity

#: what ``review`` did (or would do) with a mailbox
WARNED, WAITING, CLOSED = "warned", "waiting", "closed"


@dataclass(frozen=True)
class Unused:
    address: str
    last_login: dt.datetime | None  # None: never logged in
    since: dt.datetime  # the last login, or the creation
    warned_at: dt.datetime | None  # the warning in force (after the last login), if any
    closes_on: dt.datetime | None  # when the grace period ends (None: not warned yet)
    action: str  # warned, waiting (warned, grace running) or closed; in a dry run, what would be done


class Inactivity:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def review(self, *, days: int, grace_days: int = 30, actor: str, dry_run: bool = False) -> list[Unused]:
        if days < 0 or grace_days < 0:
            raise ValueError("--days and --grace-days are counts of days, 0 or more")
        now = self.ctx.clock()
        grace = dt.timedelta(days=grace_days)
        async with self.ctx.uow(readonly=True) as uow:
            rows = await uow.activity.unused_since(now - dt.timedelta(days=days))
        out: list[Unused] = []
        for account, activity in rows:
            last = activity.last_login_at if activity is not None else None
            warned = _warning_in_force(activity)
            since = last or account.created_at
            if warned is None:
                if not dry_run:
                    warned = await self._warn(account, since, now + grace, actor)
                out.append(Unused(account.address, last, since, warned, (warned or now) + grace, WARNED))
            elif now >= warned + grace:
                if not dry_run:
                    await AccountService(self.ctx).close(account.address, actor=actor)
                out.append(Unused(account.address, last, since, warned, warned + grace, CLOSED))
            else:
                out.append(Unused(account.address, last, since, warned, warned + grace, WAITING))
        return out

    async def _warn(self, account: Account, since: dt.datetime, closes_on: dt.datetime, actor: str) -> dt.datetime:
        now = self.ctx.clock()
        raw = warning_message(account.address, since, closes_on, now, self.ctx.config.server.hostname)
        async with self.ctx.uow() as uow:
            current = await uow.accounts.get(account.id)
            if current is None:  # deleted meanwhile: nobody to warn
                return now
            await deliver(uow, self.ctx.keyring, raw, [current], mailbox="INBOX", actor=actor, source="inactivity")
            await uow.activity.warned(account.id, now)
            uow.audit(
                actor,
                "account.inactivity-warning",
                account.owner_id,
                "ok",
                f"unused since {since.date().isoformat()}; closes on {closes_on.date().isoformat()}",
                at=now,
            )
            await uow.commit()
        return now


def _warning_in_force(activity: AccountActivity | None) -> dt.datetime | None:
    if activity is None or activity.warned_at is None:
        return None
    if activity.last_login_at is not None and activity.last_login_at >= activity.warned_at:
        return None  # logged in since: that warning no longer counts
    return activity.warned_at


def warning_message(address: str, since: dt.datetime, closes_on: dt.datetime, now: dt.datetime, host: str) -> bytes:
    """The warning, in French then English (the service's users are in France)."""
    msg = EmailMessage()
    msg["From"] = f"Messagerie MSSante <postmaster@{host}>"
    msg["To"] = address
    msg["Subject"] = "Votre messagerie sera fermée faute d'utilisation / Your mailbox will be closed"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain=host)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic answer to this
    last, close = since.date().isoformat(), closes_on.date().isoformat()
    msg.set_content(
        f"Bonjour,\n\n"
        f"La boîte {address} n'a pas été utilisée depuis le {last}. Sans connexion d'ici le {close}, "
        f"elle sera fermée ; ses messages seront conservés pendant la durée légale puis détruits.\n"
        f"Pour la garder, connectez-vous simplement avec votre logiciel de messagerie.\n\n"
        f"Hello,\n\n"
        f"The mailbox {address} has not been used since {last}. Unless someone logs in by {close}, "
        f"it will be closed; its messages are kept for the legal period, then destroyed.\n"
        f"To keep it, just log in with your mail client.\n"
    )
    return bytes(msg)
