"""CONTEXT=SEARCH and CONTEXT=SORT (RFC 5267 §4): PARTIAL results, and searches kept up to date (UPDATE).

Implementation notes (invariants):
- A result is a list of UIDs in its order: ascending for SEARCH, sort order for SORT.
  ``result_items`` says which ESEARCH data a RETURN list asks for: CONTEXT, UPDATE and
  SAVE ask for none themselves, so ``RETURN (UPDATE)`` or ``RETURN (CONTEXT)`` is
  answered ALL as ``RETURN ()`` is; SAVE alone still gets no ESEARCH (RFC 5182 §2.1).
- ``PARTIAL low:high`` answers the messages at positions low to high (from 1) of the
  result, as ``PARTIAL (low:high set)``, or ``PARTIAL (low:high NIL)`` when none is
  there (RFC 5267 §4.4). A bad range is a parse error: BAD (``parser._partial_range``).
- ``Contexts`` holds the searches of the selected mailbox that asked for UPDATE, by tag,
  UPDATE_LIMIT at most: one more is answered ``* NO [NOUPDATE "tag"]`` before its tagged
  OK and not kept (RFC 5267 §4.3.1). A reused tag replaces the search it named.
  CANCELUPDATE drops the named ones; another SELECT/EXAMINE, CLOSE or UNSELECT drops all
  (a context belongs to one ``Selected`` view: another view, and it is gone).
- Updates are computed after a command's own untagged news (EXISTS, EXPUNGE, FETCH
  FLAGS), only where EXPUNGE may be sent (``selected.expunge_allowed``), and in IDLE:
  each kept search is run again when the view changed since its last run (its
  ``mark``: the UIDs and flags of the view), and the difference is said in one
  unsolicited ``* ESEARCH (TAG "t") [UID] REMOVEFROM (...) ADDTO (...)``.
  SEARCH positions are 0 (no order to keep); SORT ones are the place in the sorted
  result, REMOVEFROM from the last position down, then ADDTO from the first up, so each
  position is right when the client reads it in order (RFC 5267 §4.3.2).
- Numbers are UIDs for UID SEARCH/SORT, else sequence numbers of the view at that time
  (after the EXPUNGE responses just sent): an expunged message drops out of a
  sequence-number context through its EXPUNGE and gets no REMOVEFROM.
- With MIN, MAX or COUNT asked, their new values follow when the result changed; ADDTO and
  REMOVEFROM are sent when ALL (said or implied) or PARTIAL was asked. With PARTIAL the
  updates are about the whole result (positions are absolute).
- Searches on time (OLDER, YOUNGER) are run again only when the view changed.

See Also: RFC 5267 §4 (CONTEXT=SEARCH, CONTEXT=SORT), RFC 4731 (ESEARCH), RFC 9394 §3.1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r
from mailserver.imap.protocol.selected import Selected

#: searches kept up to date per session (its selected mailbox); one more gets NOUPDATE (RFC 5267 §4.3.1)
UPDATE_LIMIT = 5
#: the ESEARCH data items a RETURN option asks for itself
RESULT_ITEMS = ("MIN", "MAX", "COUNT", "ALL", "PARTIAL")


def result_items(returns: tuple[str, ...] | None) -> tuple[str, ...]:
    """The ESEARCH data asked for: ALL when none is named, nothing for SAVE alone (see the module notes)."""
    asked = tuple(o for o in returns or () if o in RESULT_ITEMS)
    if asked:
        return asked
    if returns is not None and "SAVE" in returns and "UPDATE" not in returns:
        return ()
    return ("ALL",)


def partial_data(
    partial: tuple[int, int], found: Sequence[int], written: Callable[[Sequence[int]], str]
) -> list[r.Value]:
    """``PARTIAL (low:high set|NIL)``: the numbers at positions low..high of ``found``, as ``written`` writes
    a set (RFC 5267 §4.4)."""
    low, high = partial
    part = list(found[low - 1 : high])
    shown = written(part) if part else None
    return [r.Atom("PARTIAL"), (r.Atom(f"{low}:{high}"), r.Atom(shown) if shown else None)]


def mark(sel: Selected) -> int:
    """What a kept search's result depends on in the view: its messages and their flags."""
    return hash((tuple(sel.uids), tuple(sel.flags[u] for u in sel.uids)))


def noupdate(tag: str) -> r.Untagged:
    """``* NO [NOUPDATE "tag"]``: this search is answered but not kept up to date (RFC 5267 §4.3.1)."""
    quoted = r.render_string(tag).decode("ascii", "replace")
    code = f"NOUPDATE {quoted}" if quoted.startswith('"') and "]" not in quoted else None
    return r.Untagged("NO", f"No more than {UPDATE_LIMIT} searches are kept up to date at once", code)


@dataclass
class Kept:
    """One search kept up to date: its command, the view it runs on, its last result and the view's mark."""

    cmd: c.Search | c.Sort
    sel: Selected
    uids: list[int]
    mark: int


def _numbers(uids: Sequence[int], sel: Selected, uid: bool) -> list[int]:
    """UIDs as the client knows them: as is for a UID command, else their sequence numbers (gone: left out)."""
    if uid:
        return list(uids)
    return [n for n in (sel.seq(u) for u in uids) if n]


def _pairs(items: list[tuple[int, int]]) -> tuple[r.Value, ...]:
    return tuple(v for pos, n in items for v in (pos, r.Atom(str(n))))


def diff(kept: Kept, new: list[int]) -> r.Data | None:
    """The unsolicited ESEARCH that takes the client from ``kept.uids`` to ``new``; None if nothing to say."""
    old, sel, cmd = kept.uids, kept.sel, kept.cmd
    if old == new:
        return None
    items = result_items(cmd.returns)
    out: list[r.Value] = [r.Atom("ESEARCH"), (r.Atom("TAG"), cmd.tag)]
    if cmd.uid:
        out.append(r.Atom("UID"))
    if "ALL" in items or "PARTIAL" in items:
        out += _set_changes(kept, new)
    numbers = _numbers(new, sel, cmd.uid)
    ordered = isinstance(cmd, c.Sort)
    if numbers and "MIN" in items:
        out += [r.Atom("MIN"), numbers[0] if ordered else min(numbers)]
    if numbers and "MAX" in items:
        out += [r.Atom("MAX"), numbers[-1] if ordered else max(numbers)]
    if "COUNT" in items:
        out += [r.Atom("COUNT"), len(new)]
    return r.Data(tuple(out)) if len(out) > (3 if cmd.uid else 2) else None


def _set_changes(kept: Kept, new: list[int]) -> list[r.Value]:
    """REMOVEFROM then ADDTO (RFC 5267 §4.3.2), positions as the module notes say."""
    old, sel, cmd = kept.uids, kept.sel, kept.cmd
    now = set(new)
    before = set(old)
    live = set(sel.flags)
    out: list[r.Value] = []
    if isinstance(cmd, c.Search):
        removed = _numbers([u for u in old if u not in now and (cmd.uid or u in live)], sel, cmd.uid)
        added = _numbers([u for u in new if u not in before], sel, cmd.uid)
        if removed:
            out += [r.Atom("REMOVEFROM"), (0, r.Atom(str(c.SequenceSet.of(removed))))]
        if added:
            out += [r.Atom("ADDTO"), (0, r.Atom(str(c.SequenceSet.of(added))))]
        return out
    # by sequence numbers the client already took the expunged messages out (their EXPUNGE responses)
    base = old if cmd.uid else [u for u in old if u in live]
    gone = [(i, u) for i, u in enumerate(base, 1) if u not in now]
    shown_gone = [(i, n) for i, u in reversed(gone) for n in _numbers([u], sel, cmd.uid)]
    added_at = [(i, u) for i, u in enumerate(new, 1) if u not in before]
    shown_added = [(i, n) for i, u in added_at for n in _numbers([u], sel, cmd.uid)]
    # the messages found both times keep their relative order: sort keys (dates, sizes, headers) do not change
    if shown_gone:
        out += [r.Atom("REMOVEFROM"), _pairs(shown_gone)]
    if shown_added:
        out += [r.Atom("ADDTO"), _pairs(shown_added)]
    return out


class Contexts:
    """The searches of one session kept up to date (RFC 5267 §4.3), by tag."""

    def __init__(self) -> None:
        self.kept: dict[str, Kept] = {}

    def keep(self, cmd: c.Search | c.Sort, sel: Selected, uids: list[int]) -> r.Untagged | None:
        """Keep ``cmd`` up to date from ``uids`` (its result now); the NOUPDATE response if it cannot be."""
        self.drop_stale(sel)
        if cmd.tag not in self.kept and len(self.kept) >= UPDATE_LIMIT:
            return noupdate(cmd.tag)
        self.kept[cmd.tag] = Kept(cmd, sel, list(uids), mark(sel))
        return None

    def cancel(self, tags: Sequence[str]) -> list[str]:
        """Stop the updates of ``tags``; the ones that named no kept search (nothing is dropped then)."""
        unknown = [t for t in tags if t not in self.kept]
        if not unknown:
            for t in tags:
                del self.kept[t]
        return unknown

    def drop_stale(self, sel: Selected | None) -> None:
        """Forget the searches of another view than ``sel`` (another SELECT, CLOSE, UNSELECT)."""
        self.kept = {t: k for t, k in self.kept.items() if k.sel is sel}

    def due(self, sel: Selected | None) -> list[Kept]:
        """The kept searches whose view changed since their last run."""
        self.drop_stale(sel)
        if sel is None or not self.kept:
            return []
        now = mark(sel)
        return [k for k in self.kept.values() if k.mark != now]

    def record(self, kept: Kept, uids: list[int]) -> r.Data | None:
        """``kept`` has run again and found ``uids``: the update to send, if any."""
        update = diff(kept, uids)
        kept.uids = uids
        kept.mark = mark(kept.sel)
        return update
