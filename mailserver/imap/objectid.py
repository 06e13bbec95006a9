"""OBJECTID (RFC 8474): the MAILBOXID and EMAILID a client may cache, derived from database ids.

Invariants:
- An id is a letter (``M`` mailbox, ``E`` email) and 24 base32 characters of a keyed
  BLAKE2b digest of the row's ids: opaque (no database id can be read off it), an
  ``objectid`` of RFC 8474 §4 (``ALPHA / DIGIT / "_" / "-"``, at most 255), and a pure
  function of stored values, so the same across sessions, processes and restarts.
- MAILBOXID digests the mailbox row id and its UIDVALIDITY: RENAME keeps it (same
  row), a mailbox deleted and created again gets another (new row, strictly greater
  UIDVALIDITY; RFC 8474 §4.1).
- EMAILID digests the blob id: COPY and MOVE share the blob, so a message keeps its
  EMAILID wherever it is filed (RFC 8474 §5.1); blobs belong to one account.
- THREADID digests the thread's first message id: the first of References, else of
  In-Reply-To, else the message's own Message-ID (a message with none is a thread of its
  own, by its blob). It is read from the message's header, so it never changes and is the
  same for every copy (same EMAILID, RFC 8474 §5.2); replies whose References name the
  same first message share it.
"""

from __future__ import annotations

import base64
import hashlib
import re

from mailserver.message import ParsedMessage

_PERSON = b"masante-objid"
_MSG_ID = re.compile(r"<[^<>\s]+>")


def _digest(kind: str, text: str) -> str:
    raw = hashlib.blake2b(text.encode(), digest_size=15, key=b"masante-mail objectid v1", person=_PERSON).digest()
    return kind + base64.b32encode(raw).decode().rstrip("=").lower()


def mailbox_id(row_id: int, uidvalidity: int) -> str:
    return _digest("M", f"mailbox:{row_id}:{uidvalidity}")


def email_id(blob_id: str) -> str:
    return _digest("E", f"blob:{blob_id}")


def thread_root(message: ParsedMessage) -> str | None:
    """The first message of the thread ``message`` is in, as a Message-ID, if its header says."""
    for field in ("references", "in-reply-to", "message-id"):
        ids = _MSG_ID.findall(" ".join(message.values(field)))
        if ids:
            return str(ids[0])
    return None


def thread_id(message: ParsedMessage, blob_id: str) -> str:
    root = thread_root(message)
    return _digest("T", f"thread:{root}" if root is not None else f"thread-blob:{blob_id}")
