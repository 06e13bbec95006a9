"""SEARCHRES (RFC 5182): what ``SEARCH RETURN (SAVE)`` keeps, and ``$`` put back in a command.

Invariants:
- The saved result is a tuple of UIDs, whichever of SEARCH and UID SEARCH made it
  (RFC 5182 §2.1), so that an expunge cannot shift it: a message expunged (gone from
  the session's view) drops out of it when ``$`` is resolved.
- SELECT and EXAMINE start it empty (RFC 5182 §2.1); a SEARCH with SAVE answered NO
  leaves it empty; a BAD one (unparsed) leaves it as it was.
- With MIN and/or MAX and neither ALL nor COUNT only those are saved; otherwise every
  message found (RFC 5182 §2.1).
- ``substitute`` replaces each ``$`` of a command (its sequence set, or a sequence-set
  search key, at any depth) by the saved messages: UIDs in a UID command or a
  ``UID $`` key, else their sequence numbers; an empty result is an empty set, which
  a command answers OK with nothing done (RFC 5182 §2.1).
- ``rewrite`` maps a search program node by node (used by WITHIN's anchoring too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol.selected import Selected

#: the commands whose sequence set or search keys may hold ``$``
_SET_FIELD = {c.Fetch: "seqset", c.Store: "seqset", c.Copy: "seqset", c.Move: "seqset", c.Expunge: "uids"}
_KEYED = (c.Search, c.Sort, c.Thread)


def rewrite(key: c.SearchKey, fn: Callable[[c.SearchKey], c.SearchKey | None]) -> c.SearchKey:
    """``key`` with each node for which ``fn`` gives a replacement replaced (``fn`` None: look inside)."""
    new = fn(key)
    if new is not None:
        return new
    if isinstance(key, c.SearchNot):
        return c.SearchNot(rewrite(key.key, fn))
    if isinstance(key, c.SearchOr):
        return c.SearchOr(rewrite(key.left, fn), rewrite(key.right, fn))
    if isinstance(key, c.SearchAnd):
        return c.SearchAnd(tuple(rewrite(k, fn) for k in key.keys))
    return key


def to_save(cmd: c.Search | c.Sort, found_uids: Sequence[int]) -> tuple[int, ...]:
    """What ``SEARCH RETURN (SAVE ...)`` keeps of the UIDs it found (ascending; for ESORT in sort order,
    MIN and MAX being the first and the last, RFC 5267 §3.1)."""
    wanted = set(cmd.returns or ())
    if found_uids and wanted & {"MIN", "MAX"} and not wanted & {"ALL", "COUNT"}:
        kept = {found_uids[0]} if "MIN" in wanted else set()
        kept |= {found_uids[-1]} if "MAX" in wanted else set()
        return tuple(sorted(kept))
    return tuple(sorted(found_uids))


def saves(cmd: c.Command) -> bool:
    """A SEARCH (or an ESORT SORT) with RETURN (SAVE ...)."""
    return isinstance(cmd, c.Search | c.Sort) and cmd.returns is not None and "SAVE" in cmd.returns


def _numbers(saved: Sequence[int], sel: Selected, uid: bool) -> c.SavedResult:
    live = [u for u in saved if u in sel.flags]
    numbers = live if uid else [sel.seq(u) for u in live]
    return c.SavedResult(c.SequenceSet.of(numbers).ranges if numbers else ())


def substitute(cmd: c.Command, saved: Sequence[int], sel: Selected) -> c.Command:
    """``cmd`` with every ``$`` replaced by the saved messages (see the module notes); as is without one."""
    field = _SET_FIELD.get(type(cmd))
    if field is not None and isinstance(getattr(cmd, field), c.SavedResult):
        uid = bool(getattr(cmd, "uid", False)) or isinstance(cmd, c.Expunge)
        return dataclasses.replace(cmd, **{field: _numbers(saved, sel, uid)})  # type: ignore[arg-type]
    if isinstance(cmd, _KEYED):

        def fill(k: c.SearchKey) -> c.SearchKey | None:
            if isinstance(k, c.SearchSeq) and isinstance(k.seqset, c.SavedResult):
                return c.SearchSeq(_numbers(saved, sel, k.uid), k.uid)
            return None

        key = rewrite(cmd.key, fill)
        return cmd if key == cmd.key else dataclasses.replace(cmd, key=key)
    return cmd
