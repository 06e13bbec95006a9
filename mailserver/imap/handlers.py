"""The IMAP command handlers that need no socket: a command and the session's view in, responses out.

Implementation notes (invariants):
- ``MailHandlers`` holds what a logged-in session works on: its ``MailStore``
  (one account) and its ``Selected`` view. Each ``do_<command>`` returns the
  command's responses, the tagged one last; the session (``session.py``, a
  subclass) adds the selected mailbox's news before it and writes them.
- A handler raises ``Bad`` (or ``SequenceError``) for a command that is well
  formed but makes no sense (answered BAD) and a ``MailError`` for one that
  cannot be done (answered NO with its code); it never formats a protocol line
  of its own.
- Handlers do not move the connection state: ``states.TRANSITIONS`` does, from
  the tagged status; a handler only sets or drops ``selected`` to match.
- The one exception to "return, do not write": FETCH of more than FETCH_BATCH
  messages writes each batch as it is ready (``send``), so that a large
  ``FETCH 1:* BODY[]`` is never held in memory whole.

- A CONDSTORE enabling command (RFC 7162 §3.1) calls ``_enable("CONDSTORE")``;
  ``enabled`` lives on the session and is copied onto each new ``Selected``.
  QRESYNC parameters (SELECT, FETCH VANISHED) are BAD until ENABLE QRESYNC.
- SEARCH and SORT choose messages through one ``_matching`` loop (batched
  reads; SORT keeps only each match's sort key); THREAD too (``thread.py``).
  OLDER/YOUNGER are measured from one reading of ``ctx.clock`` (``within.py``).
- Work on message bodies (matching SEARCH BODY/TEXT/header keys, rendering
  FETCH body sections) runs in a worker thread, one batch at a time, on
  objects no other task touches: the event loop keeps serving other sessions.
- ``$`` (RFC 5182) is replaced by the saved result before a handler runs
  (``_with_saved``, ``searchres.py``); ``saved`` starts empty at each SELECT.
- RFC 5267 CONTEXT: PARTIAL answers a slice of the result; a SEARCH or SORT with
  UPDATE is kept in ``contexts`` (``context.py``) and run again, after the news of
  each command that may say EXPUNGE and in IDLE (``_news``), to say what changed.

See Also: RFC 3501 §6.3 (authenticated state), §6.4 (selected state), RFC 4315, RFC 6851, RFC 7162,
RFC 4731 (ESEARCH), RFC 5256 (SORT), RFC 5258/5819 (LIST-EXTENDED, LIST-STATUS), RFC 6154 §3, RFC 7889,
RFC 5256 (THREAD), RFC 5182 (SEARCHRES), RFC 5032 (WITHIN), RFC 8474 (OBJECTID), RFC 8514 (SAVEDATE),
RFC 8970 (PREVIEW), RFC 5267 (ESORT, CONTEXT=SEARCH, CONTEXT=SORT), RFC 5957 (SORT=DISPLAY).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING

from mailserver import __version__
from mailserver.errors import MailboxCannot, MailboxNotFound, ReadOnly, SpecialUseRefused
from mailserver.imap import context, esort, objectid, searchres, within
from mailserver.imap import messages as msgs
from mailserver.imap import sort as sorting
from mailserver.imap import thread as threads
from mailserver.imap.mailstore import MailStore, MessageData, NewMessage, Snapshot, StatusInfo
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import mutf7, names
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.selected import Selected, expunge_allowed, vanished
from mailserver.mailboxes import validate_name

FETCH_BATCH = 100  # messages per unit of work in FETCH
SEARCH_BATCH = 200  # messages per unit of work in SEARCH
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

if TYPE_CHECKING:
    from mailserver.context import Context


class Bad(Exception):
    """A command that is well formed but makes no sense here: answered BAD."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


#: what ENABLE turns on (RFC 5161), by upper-case name; QRESYNC implies CONDSTORE (RFC 7162 §3.2.3); IMAP4rev2
#: (RFC 9051) and UTF8=ACCEPT (RFC 6855) put mailbox names in UTF-8, and IMAP4rev2 its own differences
ENABLABLE = {"CONDSTORE": "CONDSTORE", "QRESYNC": "QRESYNC", "IMAP4REV2": "IMAP4rev2", "UTF8=ACCEPT": "UTF8=ACCEPT"}


def view(snap: Snapshot, readonly: bool) -> Selected:
    m = snap.mailbox
    return Selected(
        mailbox_id=m.id,
        name=m.name,
        uidvalidity=m.uidvalidity,
        uidnext=m.uidnext,
        messages=snap.messages,
        recent=snap.recent,
        modseq=snap.modseq,
        readonly=readonly,
        modseqs=snap.modseqs,
    )


#: the special uses CREATE may give (RFC 6154 §2); \\All and \\Flagged would be virtual mailboxes, not kept here
CREATABLE_USES = {u.upper(): u for u in ("\\Archive", "\\Drafts", "\\Junk", "\\Sent", "\\Trash")}


def status_response(
    mailbox: str, info: StatusInfo, items: tuple[str, ...], mailbox_id: str | None = None, *, utf8: bool = False
) -> r.Data:
    """``* STATUS name (item value ...)`` (RFC 3501 §7.2.4), for STATUS and LIST-STATUS; MAILBOXID (RFC 8474 §4.2)."""
    values: dict[str, r.Value] = {
        "MAILBOXID": (r.Atom(mailbox_id),) if mailbox_id else None,
        "MESSAGES": info.messages,
        "RECENT": info.recent,
        "UIDNEXT": info.uidnext,
        "UIDVALIDITY": info.uidvalidity,
        "UNSEEN": info.unseen,
        "SIZE": info.size,
        "HIGHESTMODSEQ": info.highestmodseq,
        "APPENDLIMIT": info.append_limit,
        "DELETED": info.deleted,
    }
    pairs = tuple(v for name in items for v in (r.Atom(name), values[name]))
    return r.Data((r.Atom("STATUS"), mutf7.wire(mailbox, utf8), pairs))


def _matches(key: c.SearchKey, cands: list[msgs.Candidate], max_seq: int, max_uid: int) -> list[msgs.Candidate]:
    return [x for x in cands if msgs.matches(key, x, max_seq=max_seq, max_uid=max_uid)]


def _render(
    items: tuple[c.FetchItem, ...], shown: list[tuple[int, MessageData, frozenset[str], bool, bool]]
) -> list[r.Response]:
    """FETCH responses for (sequence number, message, flags, \\Recent, \\Seen just set) tuples."""
    return [r.FetchData(seq, msgs.render_fetch(items, d, fl, recent, seen)) for seq, d, fl, recent, seen in shown]


def esearch(cmd: c.Search, found: list[int], modseq: int | None) -> r.Data:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b COUNT n ALL set [MODSEQ m]`` (RFC 4731 §3.1, RFC 7162 §3.1.5).

    ``RETURN ()`` is ``RETURN (ALL)``; with nothing found only COUNT (0) is said; PARTIAL: RFC 5267 §4.4."""
    wanted = context.result_items(cmd.returns)
    out: list[r.Value] = [r.Atom("ESEARCH"), (r.Atom("TAG"), cmd.tag)]
    if cmd.uid:
        out.append(r.Atom("UID"))
    if found:
        if "MIN" in wanted:
            out += [r.Atom("MIN"), min(found)]
        if "MAX" in wanted:
            out += [r.Atom("MAX"), max(found)]
    if "COUNT" in wanted:
        out += [r.Atom("COUNT"), len(found)]
    if found and "ALL" in wanted:
        out += [r.Atom("ALL"), r.Atom(str(c.SequenceSet.of(found)))]
    if cmd.partial is not None:
        out += context.partial_data(cmd.partial, found, lambda x: str(c.SequenceSet.of(x)))
    if found and modseq is not None:
        out += [r.Atom("MODSEQ"), modseq]
    return r.Data(tuple(out))


def ok(tag: str, text: str, code: str | None = None) -> r.Tagged:
    return r.Tagged(tag, "OK", text, code)


class MailHandlers:
    """The commands of a logged-in session that only talk to the store."""

    ctx: Context
    store: MailStore | None
    selected: Selected | None
    #: extensions this session turned on: ENABLE, or a CONDSTORE enabling command (RFC 7162 §3.1)
    enabled: frozenset[str] = frozenset()
    #: RFC 5182 SEARCHRES: the UIDs the last SEARCH RETURN (SAVE) of this selection kept (``searchres``)
    saved: tuple[int, ...] = ()
    _contexts: context.Contexts | None = None

    @property
    def contexts(self) -> context.Contexts:
        """RFC 5267 §4.3: the searches of this session kept up to date (made on first use)."""
        if self._contexts is None:
            self._contexts = context.Contexts()
        return self._contexts

    def _with_saved(self, cmd: c.Command) -> c.Command:
        """``cmd`` with each ``$`` replaced by the saved search result (RFC 5182)."""
        return cmd if self.selected is None else searchres.substitute(cmd, self.saved, self.selected)

    def _enable(self, *names: str) -> list[str]:
        """Turn ``names`` on for the session (and its selected view); the ones that were not on yet."""
        fresh = [n for n in names if n not in self.enabled]
        if "QRESYNC" in fresh and "CONDSTORE" not in self.enabled and "CONDSTORE" not in fresh:
            fresh.insert(0, "CONDSTORE")
        self.enabled = self.enabled | set(fresh)
        if self.selected is not None:
            self.selected.condstore = "CONDSTORE" in self.enabled
            self.selected.qresync = "QRESYNC" in self.enabled
        if fresh:
            self.names_in_utf8(self.utf8)
        return fresh

    @property
    def utf8(self) -> bool:
        """Mailbox names in UTF-8 both ways (RFC 9051 §5.1, RFC 6855 §3), not modified UTF-7."""
        return "IMAP4rev2" in self.enabled or "UTF8=ACCEPT" in self.enabled

    @property
    def rev2(self) -> bool:
        """IMAP4rev2 behaviour (RFC 9051 Appendix E): no \\Recent, ESEARCH for SEARCH, a LIST in SELECT."""
        return "IMAP4rev2" in self.enabled

    def names_in_utf8(self, on: bool) -> None:
        """The session reads mailbox names from then on as UTF-8 (its receiver: ``ImapReceiver.utf8``)."""

    async def send(self, *responses: r.Response) -> None:
        raise NotImplementedError  # the session writes

    async def _updates(self, cmd: c.Command) -> list[r.Response]:
        """Untagged news for the selected mailbox, before a tagged response."""
        return await self._news(allow_expunge=expunge_allowed(cmd))

    async def _news(self, *, allow_expunge: bool) -> list[r.Response]:
        """The mailbox's news, then (where EXPUNGE may be said) what changed in the kept searches (RFC 5267)."""
        out = await self._sync(allow_expunge=allow_expunge)
        if allow_expunge and self._contexts is not None:
            for kept in self._contexts.due(self.selected):
                update = self._contexts.record(kept, await self._result_uids(kept.cmd))
                out += [update] if update is not None else []
        return out

    async def _result_uids(self, cmd: c.Search | c.Sort) -> list[int]:
        """The UIDs ``cmd`` finds now, in its order (ascending for SEARCH, sorted for SORT)."""
        if isinstance(cmd, c.Sort):
            return [u for _, _, u in await self._sorted(cmd)]
        uids: list[int] = []
        await self._matching(cmd.key, lambda cand: uids.append(cand.uid))
        return uids

    def _keep(self, cmd: c.Search | c.Sort, uids: list[int]) -> list[r.Response]:
        """RFC 5267 §4.3: keep a SEARCH or SORT with UPDATE; ``* NO [NOUPDATE]`` when it cannot be."""
        if cmd.returns is None or "UPDATE" not in cmd.returns:
            return []
        refused = self.contexts.keep(cmd, self._sel(), uids)
        return [refused] if refused is not None else []

    async def do_cancelupdate(self, cmd: c.CancelUpdate) -> list[r.Response]:
        """RFC 5267 §4.3.5: no more updates for those searches; a tag that names none is BAD."""
        unknown = self.contexts.cancel(cmd.tags)
        if unknown:
            raise Bad(f"No search with tag {unknown[0][:40]!r} is kept up to date; nothing was cancelled")
        return [ok(cmd.tag, "CANCELUPDATE completed")]

    async def _sync(self, *, allow_expunge: bool) -> list[r.Response]:
        sel, store = self.selected, self.store
        if sel is None or store is None:
            return []
        ch = await store.changes(sel.id, sel.modseq, claim_recent=not sel.readonly)
        return sel.apply(ch, allow_expunge=allow_expunge)

    def _store(self) -> MailStore:
        if self.store is None:  # pragma: no cover - the state table allows this only after login
            raise RuntimeError("no account in this state")
        return self.store

    def _sel(self, *, writable: bool = False) -> Selected:
        if self.selected is None:  # pragma: no cover - the state table allows this only when selected
            raise RuntimeError("no mailbox selected")
        if writable and self.selected.readonly:
            raise ReadOnly("The mailbox is selected read-only (EXAMINE)")
        return self.selected

    async def do_noop(self, cmd: c.Noop) -> list[r.Response]:
        return [ok(cmd.tag, "NOOP completed")]

    async def do_check(self, cmd: c.Check) -> list[r.Response]:
        return [ok(cmd.tag, "CHECK completed")]

    async def do_logout(self, cmd: c.Logout) -> list[r.Response]:
        return [r.Untagged("BYE", "Logging out"), ok(cmd.tag, "LOGOUT completed")]

    async def do_id(self, cmd: c.Id) -> list[r.Response]:
        # RFC 2971: the client's fields are not logged (they may identify a person's device)
        return [r.Data((r.Atom("ID"), ("name", "masante-mail", "version", __version__))), ok(cmd.tag, "ID completed")]

    # --- authenticated -------------------------------------------------------------------------------

    async def do_enable(self, cmd: c.Enable) -> list[r.Response]:
        asked = [ENABLABLE[x] for x in cmd.capabilities if x in ENABLABLE]
        # RFC 5161 §3.2: ENABLED names what was asked and is now on (as Dovecot: QRESYNC alone, though it
        # turns CONDSTORE on too)
        fresh = [x for x in self._enable(*asked) if x in asked]
        return [r.Data((r.Atom("ENABLED"), *(r.Atom(x) for x in fresh))), ok(cmd.tag, "ENABLE completed")]

    async def do_namespace(self, cmd: c.Namespace) -> list[r.Response]:
        personal = (("", names.DELIMITER),)
        return [r.Data((r.Atom("NAMESPACE"), personal, None, None)), ok(cmd.tag, "NAMESPACE completed")]

    async def _select(self, cmd: c.Select | c.Examine, readonly: bool) -> list[r.Response]:
        self.selected = None  # RFC 3501 §6.3.1: a failed SELECT leaves none selected (states.TRANSITIONS)
        self.saved = ()  # RFC 5182 §2.1
        if cmd.qresync is not None and "QRESYNC" not in self.enabled:
            raise Bad("QRESYNC parameters need ENABLE QRESYNC first (RFC 7162)")
        if cmd.condstore:
            self._enable("CONDSTORE")
        sel = view(await self._store().select(cmd.mailbox, readonly=readonly), readonly)
        sel.condstore = "CONDSTORE" in self.enabled
        sel.qresync = "QRESYNC" in self.enabled
        sel.rev2 = self.rev2
        self.selected = sel
        out = sel.select_responses(cmd.tag, cmd.name, utf8=self.utf8)
        mid = r.Untagged("OK", "Mailbox id", f"MAILBOXID ({objectid.mailbox_id(sel.id, sel.uidvalidity)})")
        out.insert(-1, mid)  # RFC 8474 §4.1
        q = cmd.qresync
        if q is None or q.uidvalidity != sel.uidvalidity:
            return out  # RFC 7162 §3.2.5.2: another UIDVALIDITY: the client starts again, nothing more said
        top = max([sel.uidnext - 1, *sel.uids, 1])
        known_uids = q.known_uids

        def known(uid: int) -> bool:
            return known_uids is None or known_uids.contains(uid, top)

        gone = [u for u in await self._store().vanished(sel.id, q.modseq) if known(u)]
        resync: list[r.Response] = [vanished(gone, earlier=True)] if gone else []
        resync += [sel.flag_fetch(u) for u in sel.uids if sel.modseqs.get(u, 0) > q.modseq and known(u)]
        return [*out[:-1], *resync, out[-1]]

    async def do_select(self, cmd: c.Select) -> list[r.Response]:
        return await self._select(cmd, readonly=False)

    async def do_examine(self, cmd: c.Examine) -> list[r.Response]:
        return await self._select(cmd, readonly=True)

    async def do_create(self, cmd: c.Create) -> list[r.Response]:
        why = names.hierarchy_refusal(cmd.mailbox)
        if why is not None:
            raise MailboxCannot(why)
        use = None
        if cmd.special_use:  # RFC 6154 §3 CREATE-SPECIAL-USE
            if len(cmd.special_use) > 1:
                raise SpecialUseRefused("A mailbox here has one special use at most")
            use = CREATABLE_USES.get(cmd.special_use[0].upper())
            if use is None:
                offered = " ".join(CREATABLE_USES.values())
                raise SpecialUseRefused(f"{cmd.special_use[0]} cannot be given to a mailbox here; use one of {offered}")
        await self._store().create(cmd.mailbox, special_use=use)
        made = await self._store().info(validate_name(cmd.mailbox))
        return [ok(cmd.tag, "CREATE completed", f"MAILBOXID ({objectid.mailbox_id(made.id, made.uidvalidity)})")]

    async def do_delete(self, cmd: c.Delete) -> list[r.Response]:
        await self._store().delete(cmd.mailbox)
        return [ok(cmd.tag, "DELETE completed")]

    async def do_rename(self, cmd: c.Rename) -> list[r.Response]:
        why = names.hierarchy_refusal(cmd.new)
        if why is not None:
            raise MailboxCannot(why)
        await self._store().rename(cmd.old, cmd.new)
        return [ok(cmd.tag, "RENAME completed")]

    async def do_subscribe(self, cmd: c.Subscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, True)
        return [ok(cmd.tag, "SUBSCRIBE completed")]

    async def do_unsubscribe(self, cmd: c.Unsubscribe) -> list[r.Response]:
        await self._store().subscribe(cmd.mailbox, False)
        return [ok(cmd.tag, "UNSUBSCRIBE completed")]

    async def do_list(self, cmd: c.List) -> list[r.Response]:
        boxes = [] if cmd.patterns == ("",) and not cmd.select_options else await self._store().mailboxes()
        if not cmd.status_items:
            return [*names.list_responses(boxes, cmd, utf8=self.utf8), ok(cmd.tag, "LIST completed")]
        # RFC 5819 LIST-STATUS: each selectable mailbox listed is followed by its STATUS (the store's
        # ``status``: a scoped session sees the mailboxes of its grant only, as LIST itself)
        if "HIGHESTMODSEQ" in cmd.status_items:
            self._enable("CONDSTORE")
        out: list[r.Response] = []
        for entry in names.list_entries(boxes, cmd):
            out.append(entry.response(self.utf8))
            if entry.selectable and not entry.childinfo:
                try:
                    info = await self._store().status(entry.name, deleted="DELETED" in cmd.status_items)
                    mid = await self._object_id(entry.name, cmd)
                except MailboxNotFound:
                    continue  # deleted meanwhile: listed, no status (RFC 5819 §2 allows leaving it out)
                out.append(status_response(entry.name, info, cmd.status_items, mid, utf8=self.utf8))
        return [*out, ok(cmd.tag, "LIST completed")]

    async def do_lsub(self, cmd: c.Lsub) -> list[r.Response]:
        boxes = [] if cmd.pattern == "" else await self._store().mailboxes()
        return [*names.lsub_responses(boxes, cmd, utf8=self.utf8), ok(cmd.tag, "LSUB completed")]

    async def _object_id(self, mailbox: str, cmd: c.Status | c.List) -> str | None:
        """The MAILBOXID of ``mailbox`` when the command asks for it (RFC 8474 §4.2)."""
        if "MAILBOXID" not in (cmd.items if isinstance(cmd, c.Status) else cmd.status_items):
            return None
        m = await self._store().info(mailbox)
        return objectid.mailbox_id(m.id, m.uidvalidity)

    async def do_status(self, cmd: c.Status) -> list[r.Response]:
        info = await self._store().status(cmd.mailbox, deleted="DELETED" in cmd.items)
        if "HIGHESTMODSEQ" in cmd.items:
            self._enable("CONDSTORE")
        mid = await self._object_id(cmd.mailbox, cmd)
        response = status_response(cmd.mailbox, info, cmd.items, mid, utf8=self.utf8)
        return [response, ok(cmd.tag, "STATUS completed")]

    async def do_append(self, cmd: c.Append) -> list[r.Response]:
        """APPEND, of several messages with MULTIAPPEND (RFC 3502): all or none, one APPENDUID with a UID set."""
        if any(c.RECENT in item.flags for item in cmd.items):
            raise Bad("\\Recent cannot be set by a client")
        if not all(item.message for item in cmd.items):
            raise Bad("An empty message cannot be appended")
        items = [NewMessage(item.message, item.flags, item.date) for item in cmd.items]
        sel = self.selected  # an APPEND into the mailbox selected read-write claims its \\Recent at once
        done = await self._store().append_many(
            cmd.mailbox, items, recent_for=sel.id if sel is not None and not sel.readonly else None
        )
        uids = c.SequenceSet.of([d.uid for d in done])
        return [ok(cmd.tag, "APPEND completed", f"APPENDUID {done[0].uidvalidity} {uids}")]

    # --- selected -------------------------------------------------------------------------------------

    async def do_close(self, cmd: c.Close) -> list[r.Response]:
        sel = self._sel()
        if not sel.readonly:
            await self._store().expunge(sel.id, [u for u in sel.uids if "\\Deleted" in sel.flags[u]])
        self.selected = None  # RFC 3501 §6.4.2: no EXPUNGE responses
        return [ok(cmd.tag, "CLOSE completed")]

    async def do_unselect(self, cmd: c.Unselect) -> list[r.Response]:
        self.selected = None
        return [ok(cmd.tag, "UNSELECT completed")]

    async def do_expunge(self, cmd: c.Expunge) -> list[r.Response]:
        sel = self._sel(writable=True)
        candidates = sel.deleted()
        if cmd.uids is not None and sel.uids:
            wanted = set(cmd.uids.select(candidates, sel.uids[-1]))
            candidates = [u for u in candidates if u in wanted]
        gone = await self._store().expunge(sel.id, candidates) if candidates else []
        return [*sel.remove(gone), ok(cmd.tag, "EXPUNGE completed")]

    async def _matching(
        self,
        key: c.SearchKey,
        on_match: Callable[[msgs.Candidate], None],
        *,
        meta: bool = False,
        rows: bool = False,
        body: bool = False,
    ) -> None:
        """Call ``on_match`` for each message of the view that ``key`` matches, in sequence order.

        Messages are read SEARCH_BATCH at a time, only when the key (or ``meta``/``rows``: what SORT
        needs) asks for more than the view holds; a batch's plaintext is dropped before the next."""
        sel = self._sel()
        key = within.anchored(key, self.ctx.clock())  # RFC 5032: one instant for the whole command
        needs = msgs.search_needs(key)
        want_rows, want_meta, want_body = needs.rows or rows or meta or body, needs.meta or meta, needs.body or body
        max_seq, max_uid = len(sel.uids), (sel.uids[-1] if sel.uids else 0)
        pairs = list(enumerate(sel.uids, 1))
        step = SEARCH_BATCH if want_rows else max(1, len(pairs))
        for i in range(0, len(pairs), step):
            batch = pairs[i : i + step]
            data: dict[int, MessageData] = {}
            if want_rows:
                found, _ = await self._store().fetch(
                    sel.id,
                    [u for _, u in batch],
                    meta=want_meta,
                    body=want_body,
                    mark_seen=False,
                    audit=want_body,
                    envelope=meta,  # SORT and THREAD read it; matching a key does not
                )
                data = {d.uid: d for d in found}
            cands = [
                msgs.Candidate(seq, uid, sel.flags[uid], uid in sel.recent, data.get(uid), sel.modseqs.get(uid, 1))
                for seq, uid in batch
                if not want_rows or uid in data  # else expunged meanwhile
            ]
            # taking bodies apart and matching them is CPU work: off the event loop, so other sessions go on
            args = (key, cands, max_seq, max_uid)
            for cand in await asyncio.to_thread(_matches, *args) if needs.body else _matches(*args):
                on_match(cand)

    async def do_search(self, cmd: c.Search) -> list[r.Response]:
        if cmd.charset not in (None, "UTF-8", "US-ASCII"):
            self.saved = () if searchres.saves(cmd) else self.saved  # RFC 5182 §2.1: a NO empties it
            return [r.Tagged(cmd.tag, "NO", f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")]
        by_modseq = msgs.uses_modseq(cmd.key)
        if by_modseq:
            self._enable("CONDSTORE")
        found: list[int] = []
        uids: list[int] = []
        top = [0]

        def keep(cand: msgs.Candidate) -> None:
            found.append(cand.uid if cmd.uid else cand.seq)
            uids.append(cand.uid)
            top[0] = max(top[0], cand.modseq)

        await self._matching(cmd.key, keep)
        kept = self._keep(cmd, uids)
        if searchres.saves(cmd):
            self.saved = searchres.to_save(cmd, uids)
            if not context.result_items(cmd.returns):  # RFC 5182 §2.1: SAVE alone gets no ESEARCH
                return [ok(cmd.tag, "SEARCH completed, result saved")]
        # RFC 7162 §3.1.5: with a MODSEQ key the highest mod-sequence of the messages found follows them;
        # RFC 9051 §6.4.4: under IMAP4rev2 a SEARCH without RETURN is answered ESEARCH ALL
        if cmd.returns is not None or self.rev2:
            answer = esearch(cmd, found, top[0] if by_modseq else None)
            return [answer, *kept, ok(cmd.tag, "SEARCH completed")]
        tail: tuple[r.Value, ...] = ((r.Atom("MODSEQ"), top[0]),) if by_modseq and found else ()
        return [r.Data((r.Atom("SEARCH"), *found, *tail)), ok(cmd.tag, "SEARCH completed")]

    async def do_sort(self, cmd: c.Sort) -> list[r.Response]:
        """RFC 5256 SORT: the messages SEARCH would find, ordered by the criteria, ties by sequence number."""
        if cmd.charset not in ("UTF-8", "US-ASCII"):
            self.saved = () if searchres.saves(cmd) else self.saved  # RFC 5182 §2.1: a NO empties it
            return [r.Tagged(cmd.tag, "NO", f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")]
        if msgs.uses_modseq(cmd.key):
            self._enable("CONDSTORE")
        keyed = await self._sorted(cmd)
        ordered = [n for _, n, _ in keyed]
        if cmd.returns is None:
            return [r.Data((r.Atom("SORT"), *ordered)), ok(cmd.tag, "SORT completed")]
        kept = self._keep(cmd, [u for _, _, u in keyed])
        if searchres.saves(cmd):
            self.saved = searchres.to_save(cmd, [u for _, _, u in keyed])
        answer = esort.esearch(cmd, ordered)
        return [*([answer] if answer is not None else []), *kept, ok(cmd.tag, "SORT completed")]

    async def _sorted(self, cmd: c.Sort) -> list[tuple[sorting.SortKey, int, int]]:
        """(sort key, number as the command says it, UID) of each message found, in sort order."""
        keyed: list[tuple[sorting.SortKey, int, int]] = []
        meta = any(k not in ("ARRIVAL", "SIZE") for _, k in cmd.criteria)

        def keep(cand: msgs.Candidate) -> None:
            keyed.append((sorting.sort_key(cmd.criteria, cand), cand.uid if cmd.uid else cand.seq, cand.uid))

        await self._matching(cmd.key, keep, meta=meta, rows=True)
        keyed.sort(key=lambda x: x[0])
        return keyed

    async def do_thread(self, cmd: c.Thread) -> list[r.Response]:
        """RFC 5256 THREAD: the messages SEARCH would find, as threads (``thread.py``); REFERENCES reads headers."""
        if cmd.charset not in ("UTF-8", "US-ASCII"):
            return [r.Tagged(cmd.tag, "NO", f"Charset {cmd.charset} is not supported", "BADCHARSET (UTF-8 US-ASCII)")]
        if msgs.uses_modseq(cmd.key):
            self._enable("CONDSTORE")
        refs = cmd.algorithm == "REFERENCES"
        items: list[threads.Item] = []

        def keep(cand: msgs.Candidate) -> None:
            items.append(threads.item_of(cand, uid=cmd.uid, references=refs))

        await self._matching(cmd.key, keep, meta=True, body=refs)
        lists = threads.render(threads.thread(cmd.algorithm, items))
        answer = r.Data((r.Atom("THREAD"), r.Atom(lists)) if lists else (r.Atom("THREAD"),))
        return [answer, ok(cmd.tag, "THREAD completed")]

    async def do_fetch(self, cmd: c.Fetch) -> list[r.Response]:
        sel = self._sel()
        if cmd.vanished and "QRESYNC" not in self.enabled:
            raise Bad("VANISHED needs ENABLE QRESYNC first (RFC 7162)")
        pairs = sel.resolve(cmd.seqset, cmd.uid)
        out: list[r.Response] = []
        if c.FetchAttr("MODSEQ") in cmd.items:
            self._enable("CONDSTORE")
        if cmd.changed_since is not None:  # RFC 7162 §3.1.4: only what changed after that mod-sequence
            since = cmd.changed_since
            pairs = [(s, u) for s, u in pairs if sel.modseqs.get(u, 1) > since]
            if cmd.vanished:
                top = max([sel.uidnext - 1, *sel.uids[-1:], 1])
                gone = [u for u in await self._store().vanished(sel.id, since) if cmd.seqset.contains(u, top)]
                out += [vanished(gone, earlier=True)] if gone else []
        needs = msgs.fetch_needs(cmd.items)
        mark_seen = needs.sets_seen and not sel.readonly
        row_attrs = ("INTERNALDATE", "RFC822.SIZE", "EMAILID", "SAVEDATE")
        loads = needs.meta or needs.body or mark_seen
        loads = loads or any(isinstance(x, c.FetchAttr) and x.name in row_attrs for x in cmd.items)
        for i in range(0, len(pairs), FETCH_BATCH):
            seq_of = {u: s for s, u in pairs[i : i + FETCH_BATCH]}
            if loads:
                rows, new_flags = await self._store().fetch(
                    sel.id, list(seq_of), meta=needs.meta, body=needs.body, mark_seen=mark_seen, audit=needs.body
                )
            else:  # FLAGS/UID only: answered from the session's view (just synchronised), no database read
                rows = [
                    MessageData(u, sel.flags[u], _EPOCH, 0, modseq=sel.modseqs.get(u, 1))
                    for u in seq_of
                    if u in sel.flags
                ]
                new_flags = {}
            shown: list[tuple[int, MessageData, frozenset[str], bool, bool]] = []
            for d in rows:
                if d.uid not in sel.flags:
                    continue
                if d.uid in new_flags:
                    sel.set_flags(d.uid, new_flags[d.uid])
                    sel.modseqs[d.uid] = d.modseq
                shown.append((seq_of[d.uid], d, sel.flags[d.uid], d.uid in sel.recent, d.uid in new_flags))
            out += await asyncio.to_thread(_render, cmd.items, shown) if needs.body else _render(cmd.items, shown)
            if len(pairs) > FETCH_BATCH:  # stream big answers: write each batch as it is ready
                await self.send(*out)
                out = []
        return [*out, ok(cmd.tag, "FETCH completed")]

    async def do_store(self, cmd: c.Store) -> list[r.Response]:
        sel = self._sel(writable=True)
        if c.RECENT in cmd.flags:
            raise Bad("\\Recent cannot be set by a client")
        seq_of = sel.live(sel.resolve(cmd.seqset, cmd.uid))
        if cmd.unchanged_since is not None:
            self._enable("CONDSTORE")
        if not seq_of:
            return [ok(cmd.tag, "STORE completed")]
        res = await self._store().store_flags(sel.id, list(seq_of), cmd.mode, cmd.flags, cmd.unchanged_since)
        moved = {u for u, m in res.modseqs.items() if m != sel.modseqs.get(u)}
        for uid, flags in res.flags.items():
            sel.set_flags(uid, flags)
            if uid in sel.flags:
                sel.modseqs[uid] = res.modseqs[uid]
        # RFC 7162 §3.1.3: with UNCHANGEDSINCE the changed messages are reported, MODSEQ included, even .SILENT
        shown = [u for u in res.flags if u in moved] if cmd.silent and cmd.unchanged_since is not None else []
        out: list[r.Response] = [sel.flag_fetch(u, with_uid=cmd.uid) for u in (shown if cmd.silent else res.flags)]
        code = None
        if res.modified:
            numbers = res.modified if cmd.uid else [seq_of[u] for u in res.modified if u in seq_of]
            code = f"MODIFIED {c.SequenceSet.of(numbers)}"
        return [*out, ok(cmd.tag, "Conditional STORE failed for some messages" if code else "STORE completed", code)]

    async def _copy(self, cmd: c.Copy | c.Move, move: bool) -> list[r.Response]:
        sel = self._sel(writable=move)
        uids = list(sel.live(sel.resolve(cmd.seqset, cmd.uid)))
        res = await self._store().copy(sel.id, uids, cmd.mailbox, move=move)
        code = None
        if res.source_uids:
            # RFC 4315: UID sets in COPYUID keep the order of the copies; both lists ascend together
            code = f"COPYUID {res.uidvalidity} {c.SequenceSet.of(res.source_uids)} {c.SequenceSet.of(res.dest_uids)}"
        if not move:
            return [ok(cmd.tag, "COPY completed", code)]
        moved: list[r.Response] = [r.Untagged("OK", "Moved", code)] if code else []
        return [*moved, *sel.remove(res.source_uids), ok(cmd.tag, "MOVE completed")]

    async def do_copy(self, cmd: c.Copy) -> list[r.Response]:
        return await self._copy(cmd, move=False)

    async def do_move(self, cmd: c.Move) -> list[r.Response]:
        return await self._copy(cmd, move=True)
