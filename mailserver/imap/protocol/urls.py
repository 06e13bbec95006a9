"""IMAP URLs (RFC 5092) as CATENATE (RFC 4469 §5) names a part of a message of the same account.

    /INBOX;UIDVALIDITY=785799047/;UID=113330/;SECTION=1.5.9
    imap://dr.house@example.org/Sent;UIDVALIDITY=3/;UID=7

Invariants:
- Only what CATENATE needs: a mailbox, its UIDVALIDITY (required, so a URL
  never names a message of an older incarnation of the mailbox), one UID, an
  optional section (part numbers, then HEADER, TEXT or MIME) and an optional
  ``;PARTIAL=offset[.length]``. URLAUTH and searches are refused.
- The mailbox is percent-decoded UTF-8 (RFC 5092 §3); an absolute URL keeps
  its user (``user``), which the caller compares with the account.
- ``parse_url`` raises ``ValueError`` with a sentence for anything else: the
  session answers ``NO [BADURL url]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from mailserver.imap.protocol import commands as c

_SECTION = re.compile(r"((?:[1-9][0-9]*)(?:\.[1-9][0-9]*)*)?(?:(?:\A|(?<=[0-9])\.)(HEADER|TEXT|MIME))?\Z", re.I)
_ABSOLUTE = re.compile(r"imap://(?:([^@/;]*)(?:;[^@/]*)?@)?[^/]+(/.*)\Z", re.I)


@dataclass(frozen=True, slots=True)
class ImapUrl:
    mailbox: str
    uidvalidity: int
    uid: int
    section: c.Section
    partial: tuple[int, int | None] | None = None
    user: str | None = None  # an absolute URL's user


def _number(value: str, what: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 2**32:
        raise ValueError(f"{what} must be a number from 1")
    return int(value)


def parse_url(url: str) -> ImapUrl:
    user = None
    m = _ABSOLUTE.match(url)
    if m:
        user, url = (unquote(m.group(1)) if m.group(1) else None), m.group(2)
    if not url.startswith("/"):
        raise ValueError("Only IMAP URLs of this server are accepted (/mailbox;UIDVALIDITY=n/;UID=m...)")
    box, _, rest = url[1:].partition("/;")
    name, sep, validity = box.partition(";")
    if not sep or not validity.upper().startswith("UIDVALIDITY="):
        raise ValueError("The URL must give the mailbox's UIDVALIDITY")
    uidvalidity = _number(validity.split("=", 1)[1], "UIDVALIDITY")
    uid = 0
    section = c.Section()
    partial: tuple[int, int | None] | None = None
    for piece in rest.split("/;") if rest else []:
        key, _, value = piece.partition("=")
        key = key.upper()
        if key == "UID" and not uid:
            uid = _number(value, "UID")
        elif key == "SECTION" and uid:
            section = _section(unquote(value))
        elif key == "PARTIAL" and uid:
            offset, _, length = value.partition(".")
            if not offset.isdigit() or (length and not length.isdigit()):
                raise ValueError("PARTIAL is offset[.length]")
            partial = (int(offset), int(length) if length else None)
        else:
            raise ValueError(f"The URL part ;{key[:20]} is not supported here")
    if not uid:
        raise ValueError("The URL must name one message (;UID=n)")
    return ImapUrl(unquote(name), uidvalidity, uid, section, partial, user)


def _section(value: str) -> c.Section:
    m = _SECTION.match(value)
    if not m or not value:
        raise ValueError("SECTION is part numbers, then HEADER, TEXT or MIME")
    part = tuple(int(p) for p in m.group(1).split(".")) if m.group(1) else ()
    text = m.group(2).upper() if m.group(2) else None
    return c.Section(part, text)
