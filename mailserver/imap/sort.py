"""SORT (RFC 5256 §3): the key a message sorts by, for ARRIVAL CC DATE FROM SIZE SUBJECT TO, each maybe REVERSE.

Invariants:
- A key is a tuple of one part per criterion, then the sequence number: ties end in
  sequence order (RFC 5256 §3: "sequence number as the final tie-breaker").
- REVERSE flips one criterion only; reversing is done by ``_Reversed``, whose order
  is the opposite of its value's, so mixed directions sort in one pass.
- FROM, TO, CC sort by the local part (addr-mailbox) of the first address of the
  field, case-folded; a message without one sorts as the empty string (first).
- DISPLAYFROM, DISPLAYTO (RFC 5957 SORT=DISPLAY) sort by the first address's display
  name, decoded and case-folded, its addr-spec when it has none.
- SUBJECT sorts by the base subject (RFC 5256 §2.1): ``Re:``, ``Fw:``, ``Fwd:``,
  ``[list]`` blobs, a trailing ``(fwd)`` and ``[Fwd: ...]`` wrappers taken away,
  whitespace folded, case-folded.
- DATE is the Date field's instant (its time zone honoured), the arrival
  (internal date) when the field is missing or unreadable (RFC 5256 §3 DATE).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
from dataclasses import dataclass
from typing import Any

from mailserver.imap.messages import Candidate
from mailserver.message.headers import decode_words

SortKey = tuple[Any, ...]

_LEADER = re.compile(r"^(?:\[[^\[\]]*\]\s*)*(?:re|fwd?)\s*(?:\[[^\[\]]*\])?\s*:\s*", re.IGNORECASE)
_BLOB = re.compile(r"^\[[^\[\]]*\]\s*")
_TRAILER = re.compile(r"\s*\(fwd\)\s*$", re.IGNORECASE)
_FWD_WRAP = re.compile(r"^\[fwd:\s*(.*)\]$", re.IGNORECASE | re.DOTALL)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def base_subject(subject: str) -> str:
    """RFC 5256 §2.1, without the charset step (the subject is decoded already)."""
    s = " ".join(subject.split())
    while True:
        before = s
        s = _TRAILER.sub("", s)
        while True:
            inner = s
            s = _LEADER.sub("", s)
            blob = _BLOB.sub("", s)
            if blob:  # a leading [blob] goes unless nothing would be left of the subject
                s = blob
            if s == inner:
                break
        wrapped = _FWD_WRAP.match(s)
        if wrapped:
            s = wrapped.group(1).strip()
        if s == before:
            return s.casefold()


@dataclass(frozen=True, slots=True)
class _Reversed:
    value: Any

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)


def _first_mailbox(addresses: Any) -> str:
    if not addresses:
        return ""
    local = addresses[0].value()[2]
    return str(local).casefold() if local else ""


def sent_date(c: Candidate) -> dt.datetime:
    """The Date field's instant, the arrival when it is missing or unreadable (RFC 5256 §3 DATE, THREAD)."""
    d = c.data
    arrival = d.internal_date if d is not None else _EPOCH
    raw = d.meta.envelope.date if d is not None and d.meta is not None else None
    if raw:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return arrival
        return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)
    return arrival


def _part(name: str, c: Candidate) -> Any:
    d = c.data
    meta = d.meta if d is not None else None
    if name == "ARRIVAL":
        return d.internal_date if d is not None else _EPOCH
    if name == "SIZE":
        return d.size if d is not None else 0
    if name == "DATE":
        return sent_date(c)
    if meta is None:
        return ""
    if name == "SUBJECT":
        return base_subject(meta.search.get("subject") or meta.envelope.subject or "")
    env = meta.envelope
    if name in ("DISPLAYFROM", "DISPLAYTO"):
        return _display(env.from_ if name == "DISPLAYFROM" else env.to)
    return _first_mailbox({"FROM": env.from_, "TO": env.to, "CC": env.cc}[name])


def _display(addresses: Any) -> str:
    """RFC 5957 §3: the display name of the first address (encoded words decoded), else its addr-spec."""
    for a in addresses or ():
        if a.host is None:  # a group's start or end marker (RFC 3501 §7.4.2)
            continue
        name = decode_words(a.name).strip() if a.name else ""
        return (name or f"{a.mailbox or ''}@{a.host}").casefold()
    return ""


def sort_key(criteria: tuple[tuple[bool, str], ...], c: Candidate) -> SortKey:
    """The key ``c`` sorts by under ``criteria`` (``(reverse, name)`` pairs), its sequence number last."""
    return (*(_Reversed(_part(n, c)) if rev else _part(n, c) for rev, n in criteria), c.seq)
