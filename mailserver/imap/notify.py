"""RFC 5465 NOTIFY: the events a session asked for, told as they happen, between commands too.

Implementation notes (invariants):
- One ``Notifications`` per session that sent a successful NOTIFY SET (NOTIFY
  NONE, an overflow or the end of the connection close it). It holds one
  ``ChangeNotifier`` subscription for every mailbox it watches, the selected one
  and the account's channel (``mailserver.notify.account_channel``: CREATE,
  DELETE, RENAME, SUBSCRIBE), re-made when that set changes; the subscription
  says which ids were published (``Subscription.take_changed``).
- A notification carries an id only: what is told is read from the store. The
  selected mailbox's news is the session's ``_sync`` (EXISTS, EXPUNGE or
  VANISHED, flag FETCH with UID) followed, for the new UIDs, by a UID FETCH of
  MessageNew's attributes; another mailbox's news is one ``* STATUS`` (MESSAGES
  UIDNEXT UIDVALIDITY UNSEEN, HIGHESTMODSEQ once CONDSTORE is on), told only when
  the values its events cover moved from the last ones told or read; a mailbox
  list change is one ``* LIST`` per affected name (``\\NonExistent`` when gone,
  ``OLDNAME`` when renamed, ``\\Subscribed`` when subscribed).
- SELECTED-DELAYED never sends EXPUNGE between commands (the MSNs stay put);
  SELECTED does. A selected mailbox without its own event group is left to the
  commands, as before NOTIFY.
- The session's own CREATE, DELETE, RENAME and (UN)SUBSCRIBE are not told back
  (RFC 5465 §5 SHOULD): after them the list is read again silently; after its
  own APPEND, COPY or MOVE into a watched mailbox, that mailbox's STATUS.
- Supported events: ``SUPPORTED``. Any other is ``NO [BADEVENT (...)]``, which
  lists them (§3.1). A NOTIFY SET watching more than ``MAX_WATCHED`` mailboxes is
  ``NO [NOTIFICATIONOVERFLOW]``; a client letting more than ``MAX_BACKLOG`` octets
  pile up unread gets ``* OK [NOTIFICATIONOVERFLOW]`` and NOTIFY NONE (§5.8).
- Mailbox names are compared canonically (INBOX in any case) and never expanded
  as patterns (§6.6); INBOXES is PERSONAL (§6.3: every mailbox may be delivered to).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailserver.errors import MailError
from mailserver.imap.handlers import ok, status_response
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.names import DELIMITER
from mailserver.notify import Subscription, account_channel
from mailserver.store.repositories.mail import canonical_name

if TYPE_CHECKING:
    from mailserver.imap.extensions import ExtensionHandlers
    from mailserver.imap.mailstore import MailboxInfo

#: the events told here (RFC 5465 §5), as BADEVENT lists them
SUPPORTED: tuple[str, ...] = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange")
#: mailboxes one NOTIFY SET may watch (each has its STATUS read when it is set)
MAX_WATCHED = 500
#: octets written to a NOTIFY session and not yet taken by its client past which it is told NOTIFICATIONOVERFLOW
MAX_BACKLOG = 1 << 20

_SUPPORTED_UPPER = frozenset(e.upper() for e in SUPPORTED)
_NAME_EVENTS = frozenset({"MAILBOXNAME", "SUBSCRIPTIONCHANGE"})
_OWN_LIST_CHANGES = (c.Create, c.Delete, c.Rename, c.Subscribe, c.Unsubscribe)
_OWN_MESSAGES_IN = (c.Append, c.Copy, c.Move)


def badevent(cmd: c.Notify) -> r.Tagged | None:
    """``NO [BADEVENT (supported...)]`` if ``cmd`` asks for an event not told here, else None."""
    asked = {e for g in cmd.groups or () for e in g.events}
    unknown = sorted(asked - _SUPPORTED_UPPER)
    if not unknown:
        return None
    return r.Tagged(cmd.tag, "NO", f"Event {unknown[0][:40]} is not supported", f"BADEVENT ({' '.join(SUPPORTED)})")


def overflow() -> r.Untagged:
    return r.Untagged("OK", "Too many notifications: NOTIFY is off, use NOTIFY SET again", "NOTIFICATIONOVERFLOW")


@dataclass(frozen=True, slots=True)
class _Told:
    """What the client was last told (or what was read) of a watched mailbox: the STATUS values."""

    messages: int
    uidnext: int
    uidvalidity: int
    unseen: int
    highestmodseq: int


def _under(name: str, roots: tuple[str, ...], *, subtree: bool) -> bool:
    canon = canonical_name(name)
    for root in roots:
        top = canonical_name(root)
        if canon == top or (subtree and canon.startswith(top.rstrip(DELIMITER) + DELIMITER)):
            return True
    return False


def matches(group: c.NotifyGroup, box: MailboxInfo) -> bool:
    """Whether a non-selected ``group`` covers ``box`` (RFC 5465 §6.2-6.6)."""
    if group.filter in ("PERSONAL", "INBOXES"):
        return True
    if group.filter == "SUBSCRIBED":
        return box.subscribed
    if group.filter == "SUBTREE":
        return _under(box.name, group.mailboxes, subtree=True)
    return group.filter == "MAILBOXES" and _under(box.name, group.mailboxes, subtree=False)


class Notifications:
    """One session's NOTIFY SET: what it watches, what it last told, its subscription."""

    def __init__(self, cmd: c.Notify, session: ExtensionHandlers, account_id: int) -> None:
        groups = cmd.groups or ()
        self.selected_group = next((g for g in groups if g.filter in c.NOTIFY_SELECTED), None)
        self.others = [g for g in groups if g.filter not in c.NOTIFY_SELECTED and g.events]
        self.session = session
        self.channel = account_channel(account_id)
        self.boxes: dict[int, MailboxInfo] = {}
        self.told: dict[int, _Told] = {}
        self._sub: Subscription | None = None
        self._stack = contextlib.ExitStack()

    # --- what is watched ---------------------------------------------------------------------------------

    def events_of(self, box: MailboxInfo) -> frozenset[str]:
        """The events asked for ``box`` as a non-selected mailbox (several groups may cover it)."""
        return frozenset(e for g in self.others if matches(g, box) for e in g.events)

    def watched(self) -> dict[int, MailboxInfo]:
        """The non-selected mailboxes whose message events are asked for."""
        sel = self.session.selected
        return {
            mid: b
            for mid, b in self.boxes.items()
            if (sel is None or mid != sel.id) and self.events_of(b) & c.NOTIFY_MESSAGE_EVENTS
        }

    def _names_asked(self) -> bool:
        return any(set(g.events) & _NAME_EVENTS or g.filter == "SUBSCRIBED" for g in self.others)

    def subscription(self) -> Subscription:
        """The subscription covering what is watched now (re-made when that changed)."""
        ids = set(self.watched())
        sel = self.session.selected
        if sel is not None and self.selected_group is not None and self.selected_group.events:
            ids.add(sel.id)
        if self._names_asked() or self.watched():
            ids.add(self.channel)  # a new mailbox may fall under PERSONAL or a SUBTREE
        if self._sub is None or self._sub.mailbox_ids != frozenset(ids):
            changed = self._sub.take_changed() if self._sub is not None else set()
            self._stack.close()
            self._stack = contextlib.ExitStack()
            self._sub = self._stack.enter_context(self.session.ctx.db.notifier.subscribe(ids))
            self._sub.changed |= changed
        return self._sub

    def close(self) -> None:
        self._stack.close()
        self._sub = None

    # --- reading and telling -----------------------------------------------------------------------------

    async def start(self, tag: str, status: bool) -> list[r.Response]:
        """NOTIFY SET: read the list and the watched mailboxes' STATUS (told with STATUS), then subscribe."""
        store = self.session._store()
        self.boxes = {b.id: b for b in await store.mailboxes()}
        watched = self.watched()
        if len(watched) > MAX_WATCHED:
            return [r.Tagged(tag, "NO", f"NOTIFY watches at most {MAX_WATCHED} mailboxes", "NOTIFICATIONOVERFLOW")]
        out: list[r.Response] = []
        for mid, box in sorted(watched.items(), key=lambda kv: kv[1].name):
            response = await self._status(mid, box, force=True)
            if status and response is not None:
                out.append(response)
        self.subscription()
        return [*out, ok(tag, "NOTIFY completed")]

    async def after(self, cmd: c.Command) -> None:
        """After each command: the session's own list changes are not told; the watched set follows."""
        if isinstance(cmd, _OWN_LIST_CHANGES) and self.session.store is not None:
            self.subscription().changed.discard(self.channel)
            self.boxes = {b.id: b for b in await self.session.store.mailboxes()}
        elif isinstance(cmd, _OWN_MESSAGES_IN):  # its own APPEND, COPY, MOVE into a watched mailbox: the new
            target = canonical_name(cmd.mailbox)  # values are read, not told
            for mid, box in self.watched().items():
                if box.name == target:
                    self.subscription().changed.discard(mid)
                    await self._status(mid, box, force=True)
        self.subscription()

    async def news(self) -> list[r.Response]:
        """Every event asked for since the last call, as untagged responses."""
        changed = self.subscription().take_changed()
        out: list[r.Response] = []
        sel = self.session.selected
        if sel is not None and sel.id in changed:
            out += await self._selected_news()
        if self.channel in changed and self.session.store is not None:
            boxes = {b.id: b for b in await self.session.store.mailboxes()}
            out += self._list_news(boxes)
            self.boxes = boxes
            changed |= set(self.watched()) - set(self.told)  # new under a filter: told once it has messages
        watched = self.watched()
        for mid in sorted(changed & set(watched)):
            response = await self._status(mid, watched[mid])
            if response is not None:
                out.append(response)
        self.subscription()
        return out

    async def _selected_news(self) -> list[r.Response]:
        s, group = self.session, self.selected_group
        sel = s.selected
        if sel is None or group is None or not group.events:
            return []
        known_max = sel.uids[-1] if sel.uids else 0
        news = await s._news(allow_expunge=group.filter == "SELECTED")  # CONTEXT updates too (RFC 5465 §5.2)
        if "FLAGCHANGE" not in group.events:  # the view moved on; the client asked not to hear of flags
            news = [x for x in news if not isinstance(x, r.FetchData)]
        new = [u for u in sel.uids if u > known_max]
        if new and group.fetch:
            items = group.fetch if c.FetchAttr("UID") in group.fetch else (c.FetchAttr("UID"), *group.fetch)
            fetched = await s.do_fetch(c.Fetch("notify", c.SequenceSet.of(new), items, uid=True))
            news += [x for x in fetched if not isinstance(x, r.Tagged)]
        return news

    def _list_news(self, boxes: dict[int, MailboxInfo]) -> list[r.Response]:
        """``* LIST`` for each mailbox created, deleted, renamed or (un)subscribed that a group covers."""
        out: list[r.Response] = []
        utf8 = self.session.utf8
        for mid, old in self.boxes.items():
            told = self._list_change(old, boxes.get(mid), utf8)
            out += [told] if told is not None else []
        for mid, new in boxes.items():
            if mid not in self.boxes and "MAILBOXNAME" in self.events_of(new):
                out.append(_list(new.name, _attrs(new), utf8))
        return out

    def _list_change(self, old: MailboxInfo, new: MailboxInfo | None, utf8: bool) -> r.Data | None:
        """The ``* LIST`` telling what became of ``old`` (gone, renamed, (un)subscribed), if a group asked."""
        if new is None:
            return _list(old.name, ("\\NonExistent",), utf8) if "MAILBOXNAME" in self.events_of(old) else None
        if new.name != old.name:
            named = "MAILBOXNAME" in self.events_of(old) | self.events_of(new)
            return _list(new.name, _attrs(new), utf8, oldname=old.name) if named else None
        if new.subscribed != old.subscribed and "SUBSCRIPTIONCHANGE" in self.events_of(new):
            return _list(new.name, _attrs(new), utf8)
        return None

    async def _status(self, mid: int, box: MailboxInfo, *, force: bool = False) -> r.Data | None:
        """``* STATUS`` of a watched mailbox if what its events cover moved since last told (always: ``force``)."""
        store = self.session._store()
        try:
            info = await store.status(box.name)
        except MailError:
            return None  # deleted meanwhile (MailboxName tells that, if asked) or no longer readable
        now = _Told(info.messages, info.uidnext, info.uidvalidity, info.unseen, info.highestmodseq)
        before = self.told.get(mid)
        self.told[mid] = now
        condstore = "CONDSTORE" in self.session.enabled
        if not force and before is not None:
            flags = "FLAGCHANGE" in self.events_of(box)
            moved = (now.messages, now.uidnext, now.uidvalidity) != (
                before.messages,
                before.uidnext,
                before.uidvalidity,
            )
            moved = moved or (flags and (now.unseen != before.unseen or (condstore and now != before)))
            if not moved:
                return None
        # RFC 5465 §3.1: NOTIFY SET STATUS with FlagChange says HIGHESTMODSEQ (we have CONDSTORE); later, once
        # the client enabled CONDSTORE (§5.1-5.3)
        modseq = condstore or (force and "FLAGCHANGE" in self.events_of(box))
        items = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", *(("HIGHESTMODSEQ",) if modseq else ()))
        return status_response(box.name, info, items, utf8=self.session.utf8)


def _attrs(box: MailboxInfo) -> tuple[str, ...]:
    return ("\\Subscribed",) if box.subscribed else ()


def _list(name: str, attrs: tuple[str, ...], utf8: bool, *, oldname: str | None = None) -> r.Data:
    """``* LIST (attrs) "/" name [("OLDNAME" (old))]`` (RFC 5465 §5.4, RFC 5258)."""
    values: list[r.Value] = [r.Atom("LIST"), tuple(r.Atom(a) for a in attrs), DELIMITER, mutf7.wire(name, utf8)]
    if oldname is not None:
        values.append(("OLDNAME", (mutf7.wire(oldname, utf8),)))
    return r.Data(tuple(values))
