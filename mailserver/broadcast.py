"""Broadcast information: one message to every active patient mailbox ("informations sur la santé").

The patient space sends its health information (campaigns, vaccination, prevention) to
every patient. ``BroadcastService.send`` builds the message once, parses it once, and
delivers it through the one delivery path (``delivery.deliver``) to the patients, a page
at a time in ascending account id.

Invariants:
- Every copy is sealed with its patient's own data key, as every message (no shared blob).
- Each page is one unit of work: the copies, their audit entries and the broadcast's
  ``cursor`` (the largest account id served) commit together. The broadcast row is locked
  for the page, so two runs of the same broadcast never serve the same page twice.
  Interrupted anywhere (^C, kill -9, a crash, a full disk), the broadcast resumes after
  ``cursor``: every patient ends with exactly one copy.
- The body is not stored beside the broadcast: a resumed broadcast rebuilds the message
  from the same file, subject and sender, with the ``Message-ID`` and ``Date`` recorded,
  so the copies are byte for byte identical; ``content_sha256`` says whether the file given
  is the one the broadcast started with. ``send`` resumes an unfinished broadcast of the
  same content by itself.
- Patients opened while a broadcast runs get it if their id is above the cursor when their
  page comes; closed, suspended or opposed mailboxes get nothing.
- Quotas (``mailserver.quota``, the account root): a patient whose mailbox has no room for the
  copy is skipped, not waited for, and counted (``skipped``) in the page's unit of work with its
  copies and cursor: the count at the end covers every run of a resumed broadcast.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from mailserver import delivery
from mailserver.context import Context
from mailserver.message import ParsedMessage, parse_message_async
from mailserver.store.models import Broadcast

AUDIENCES = ("patients",)
PAGE = 500


class BroadcastError(ValueError):
    """A broadcast that cannot be sent as asked (the sentence says why)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    broadcast_id: str
    delivered: int  # copies delivered so far, this broadcast (all runs)
    total: int  # delivered + skipped + patients still to serve
    resumed: bool
    skipped: int = 0  # patients skipped so far (all runs): their mailbox was full


def content_digest(audience: str, sender: str, subject: str, text: bytes) -> str:
    h = hashlib.sha256()
    for part in (audience.encode(), sender.encode(), subject.encode(), text):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


def build_message(*, sender: str, subject: str, text: str, message_id: str, date: str) -> bytes:
    """The information message as every patient receives it (text/plain, UTF-8)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = "undisclosed-recipients:;"
    msg["Subject"] = subject
    msg["Date"] = date
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no automatic reply to a broadcast
    msg.set_content(text, charset="utf-8")
    return msg.as_bytes()


def _check(subject: str, text: bytes) -> str:
    if not subject.strip():
        raise BroadcastError("a broadcast needs a subject")
    if any(ord(c) < 0x20 for c in subject):
        raise BroadcastError("the subject cannot hold control characters (a line break would start a new header)")
    try:
        body = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BroadcastError(f"the message file is not UTF-8 text (byte {exc.start})") from None
    if not body.strip():
        raise BroadcastError("the message file is empty")
    return body


class BroadcastService:
    def __init__(self, ctx: Context, *, page: int = PAGE) -> None:
        if page < 1:
            raise BroadcastError("a page holds at least one patient")
        self.ctx, self.page = ctx, page

    def default_sender(self) -> str:
        return f"Mon espace santé <information@{self.ctx.config.domains.patient}>"

    async def send(
        self,
        *,
        subject: str,
        text: bytes,
        audience: str = "patients",
        sender: str | None = None,
        actor: str = "system",
        progress: Callable[[Progress], None] | None = None,
    ) -> Progress:
        """Deliver (or finish delivering) this information to every active patient. Returns the final progress."""
        if audience not in AUDIENCES:
            raise BroadcastError(f"unknown audience {audience!r} (known: {', '.join(AUDIENCES)})")
        sender = sender or self.default_sender()
        body = _check(subject, text)
        digest = content_digest(audience, sender, subject, text)
        async with self.ctx.uow() as uow:
            row = await uow.broadcasts.unfinished(digest)
            resumed = row is not None
            if row is None:
                broadcast_id = str(uuid.uuid4())
                row = await uow.broadcasts.add(
                    Broadcast(
                        id=broadcast_id,
                        audience=audience,
                        sender=sender,
                        subject=subject,
                        content_sha256=digest,
                        message_id=f"<broadcast-{broadcast_id}@{self.ctx.config.domains.patient}>",
                        date=format_datetime(self.ctx.clock()),
                        created_by=actor,
                        created_at=self.ctx.clock(),
                        cursor=0,
                        delivered=0,
                    )
                )
                uow.audit(actor, "broadcast-start", f"broadcast:{row.id}", "ok", audience)
            else:
                uow.audit(actor, "broadcast-resume", f"broadcast:{row.id}", "ok", f"after account:{row.cursor}")
            await uow.commit()
        raw = build_message(sender=sender, subject=subject, text=body, message_id=row.message_id, date=row.date)
        message = await parse_message_async(raw)
        return await self._run(row.id, message, actor=actor, resumed=resumed, progress=progress)

    async def _run(
        self,
        broadcast_id: str,
        message: ParsedMessage,
        *,
        actor: str,
        resumed: bool,
        progress: Callable[[Progress], None] | None,
    ) -> Progress:
        while True:
            async with self.ctx.uow() as uow:
                row = await uow.broadcasts.get(broadcast_id, for_update=True)
                if row is None:
                    raise BroadcastError(f"broadcast {broadcast_id} vanished")
                patients = await uow.broadcasts.patients_after(row.cursor, self.page)
                if patients:
                    result = await delivery.deliver(
                        uow,
                        self.ctx.keyring,
                        message,
                        patients,
                        actor=actor,
                        source="broadcast",
                        limits=self.ctx.config.limits,
                        skip_full=True,
                    )
                    for account_id in result.skipped:
                        uow.audit(actor, "broadcast-skip", f"broadcast:{row.id}", "fail", f"account:{account_id} full")
                    row.cursor = patients[-1].id
                    row.delivered += len(patients) - len(result.skipped)
                    row.skipped += len(result.skipped)
                    left = await uow.broadcasts.patients_left(row.cursor)
                else:
                    left = 0
                    row.finished_at = self.ctx.clock()
                    uow.audit(
                        actor,
                        "broadcast-end",
                        f"broadcast:{row.id}",
                        "ok",
                        f"{row.delivered} copies, {row.skipped} full mailbox(es) skipped",
                    )
                state = Progress(row.id, row.delivered, row.delivered + row.skipped + left, resumed, row.skipped)
                await uow.commit()
            if progress is not None:
                progress(state)
            if not patients:
                return state

    async def list(self) -> list[Broadcast]:
        async with self.ctx.uow(readonly=True) as uow:
            return list(await uow.broadcasts.list())
