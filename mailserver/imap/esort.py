"""ESORT (RFC 5267 §3): ``SORT RETURN (MIN MAX COUNT ALL SAVE)``, answered by one ESEARCH in sort order.

Invariants:
- MIN and MAX are the first and the last message of the sorted result; COUNT how many
  there are; ALL all of them in sort order, as a sequence set whose ranges run upwards
  and keep that order (``3:5,1`` is 3, 4, 5, 1); ``RETURN ()`` is ``RETURN (ALL)``.
- With nothing found only COUNT (0) is said, as ESEARCH does (RFC 4731 §3.1).
- SAVE alone gets no ESEARCH (RFC 5182 §2.1); what is saved is ``searchres.to_save``'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from mailserver.imap import context
from mailserver.imap.protocol import commands as c
from mailserver.imap.protocol import responses as r


def ordered_set(numbers: Sequence[int]) -> str:
    """The numbers in their order, runs of consecutive ascending ones written ``a:b``."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and runs[-1][1] + 1 == n:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ",".join(str(a) if a == b else f"{a}:{b}" for a, b in runs)


def esearch(cmd: c.Sort, ordered: Sequence[int]) -> r.Data | None:
    """``* ESEARCH (TAG "t") [UID] MIN a MAX b COUNT n ALL set``, or None for RETURN (SAVE) alone."""
    returns = context.result_items(cmd.returns)
    if not returns:
        return None
    out: list[r.Value] = [r.Atom("ESEARCH"), (r.Atom("TAG"), cmd.tag)]
    if cmd.uid:
        out.append(r.Atom("UID"))
    if ordered:
        if "MIN" in returns:
            out += [r.Atom("MIN"), ordered[0]]
        if "MAX" in returns:
            out += [r.Atom("MAX"), ordered[-1]]
    if "COUNT" in returns:
        out += [r.Atom("COUNT"), len(ordered)]
    if ordered and "ALL" in returns:
        out += [r.Atom("ALL"), r.Atom(ordered_set(ordered))]
    if cmd.partial is not None:  # RFC 5267 §4.4
        out += context.partial_data(cmd.partial, ordered, ordered_set)
    return r.Data(tuple(out))
