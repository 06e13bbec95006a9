"""The SMTP DATA reader, sans-IO: bytes in, one ``DataResult`` out (h11's shape; no asyncio here).

Invariants:
- Only ``CRLF.CRLF`` ends the data (RFC 5321 §4.1.1.4); the CRLF of the DATA
  command line counts as the first CRLF, so ``.CRLF`` at once is an empty message.
  A line is ended by CRLF and nothing else: a bare CR or a bare LF anywhere
  refuses the message (RFC 5321 §2.3.8), so ``LF.LF``, ``LF.CRLF`` or ``CR.CR``
  never end it (SMTP smuggling).
- A dot at the start of a line is removed (dot-unstuffing, RFC 5321 §4.5.2); the
  content keeps the CRLF before the final dot.
- The size limit is enforced while reading: past it, nothing more is stored, the
  reader still reads to the terminator, and the result is the delayed
  ``552 5.3.4`` (RFC 5321 §4.2.5, as aiosmtpd does). The size is the octets of
  the data as sent, before unstuffing, without the final ``.CRLF``.
- NUL is refused: SMTP DATA carries text (RFC 5321 §4.1.4: NUL is not in the
  text that may be sent), 8BITMIME allows octets 1-255 only (RFC 6152 §2, RFC
  2045 §2.8), and BINARYMIME (RFC 3030) is not offered.
- What is kept grows in one ``io.BytesIO``, whose ``getvalue()`` hands over its own
  buffer: a 49 MB message is never held twice (pieces and their join) while read.
  With a ``spill`` (``smtp.dataspool``), once more than ``spill_at`` octets are kept they
  move to the spool it makes and the rest goes there too: the result then carries the
  spool and empty ``content``. The reader discards its spool whenever it keeps nothing
  more (a problem, ``refuse``, ``discard``); the spool of a result belongs to the caller.
- The result depends on the bytes only, never on how they were split across
  ``feed`` calls: a test feeds every split. At most two octets are held back
  between calls (``.``/``.CR`` at a line's start, or a CR waiting for its LF).
- ``refuse(reply)`` (the caller cannot take the message just now: ``smtp.gate``)
  stops storing at once; the reader still reads to the terminator.
- A spool that fails (``OSError``: disk full, directory gone) is a ``refuse(SPOOL_FAILURE)``
  (``451 4.3.1``): the rest is read to the terminator, never taken as commands.
- When several problems meet, the reply is: too big, then bare CR/LF, then NUL,
  then an overlong line, then the caller's ``refuse``. ``DataError`` (feeding after the end, or an end of
  stream before the terminator) is the only exception ``feed`` raises.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailserver.smtp import replies as R
from policies.reply import Reply

TERMINATOR = b"\r\n.\r\n"


class Spill(Protocol):
    """Where a large DATA goes on (``smtp.dataspool.DataSpool``: the reader itself does no I/O)."""

    @property
    def size(self) -> int: ...
    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def flush(self) -> None: ...
    def read_all(self) -> bytes: ...
    def discard(self) -> None: ...


class DataError(Exception):
    """The reader was used out of turn: data after the end, or the end of the stream before the terminator."""


@dataclass(frozen=True, slots=True)
class DataResult:
    content: bytes  # the message, dot-unstuffed; empty when ``problem`` is set
    size: int  # octets read, as sent, before unstuffing and without the final ``.CRLF``
    problem: Reply | None  # the refusal to send after the final dot, or None
    spool: Spill | None = None  # the message, when it was spilled to disk (``content`` is then empty)


class DataReader:
    """Feed the bytes that follow ``354``; ``feed`` returns whatever came after the terminator."""

    def __init__(
        self,
        *,
        size_limit: int | None,
        max_line_length: int,
        spill_at: int = 0,
        spill: Callable[[], Spill] | None = None,
    ) -> None:
        self.size_limit = size_limit or 0
        # RFC 5321 §4.5.3.1.6: a line holds max_line_length octets with its CRLF; one more with a transparency dot
        self.max_text = max_line_length - 1
        self._held = b""  # bytes not yet decided: ".", ".\r" at a line start, or a trailing "\r"
        self._line_start = True  # the DATA command's CRLF precedes the first line
        self._line_len = 0  # octets of the current line so far (raw, CR of its CRLF excluded)
        self._kept = io.BytesIO()  # one growing buffer whose getvalue() is the message itself: never two copies
        self.spill_at = spill_at
        self._spill = spill
        self._spool: Spill | None = None  # where what is kept goes once past spill_at
        self._size = 0
        self._storing = True
        self._too_big = self._bare = self._nul = self._long = False
        self._refusal: Reply | None = None
        self._result: DataResult | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    @property
    def size(self) -> int:
        """Octets taken in so far (for progress checks)."""
        return self._size + len(self._held)

    @property
    def kept(self) -> int:
        """Octets of the message kept so far (dot-unstuffed); 0 once nothing more is stored."""
        return self._kept.tell() + (self._spool.size if self._spool is not None else 0)

    @property
    def spool(self) -> Spill | None:
        """The spool what is kept went to (None while in memory)."""
        return self._spool

    def discard(self) -> None:
        """Let go of what was kept, on disk too (the data will not be finished: the client left)."""
        self._storing = False
        self._drop()

    def _drop(self) -> None:
        self._kept = io.BytesIO()
        if self._spool is not None:
            self._spool.discard()
            self._spool = None

    @property
    def refused(self) -> bool:
        """Nothing more is kept: the answer after the final dot will be a refusal."""
        return not self._storing

    def refuse(self, reply: Reply) -> None:
        """Keep nothing more, and answer ``reply`` after the final dot (unless a problem of the data comes first)."""
        self._refusal = self._refusal or reply
        self._storing = False
        self._drop()
        if self._result is not None and self._result.problem is None:  # refused once read to the end
            if self._result.spool is not None:
                self._result.spool.discard()
            self._result = DataResult(b"", self._result.size, reply)

    def result(self) -> DataResult:
        if self._result is None:
            raise DataError("the data is not complete")
        return self._result

    def feed(self, data: bytes) -> bytes:
        """Take ``data``; ``b""`` is the end of the stream. Returns the bytes after the terminator (once done)."""
        if self._result is not None:
            raise DataError("data after the end of DATA")
        if not data:
            raise DataError("the connection closed before the end of the data")
        buf = self._held + data
        self._held = b""
        if self._line_start and buf.startswith(b".\r\n"):
            end = 0
        else:
            found = buf.find(TERMINATOR)
            end = found + 2 if found >= 0 else -1
        if end >= 0:
            self._take(buf[:end])
            self._finish()
            return buf[end + 3 :]
        hold = self._to_hold(buf)
        self._take(buf[: len(buf) - hold])
        self._held = buf[len(buf) - hold :]
        return b""

    def _to_hold(self, buf: bytes) -> int:
        """How many trailing octets of ``buf`` cannot be decided yet (``buf`` holds no terminator)."""
        n = len(buf)
        for k in (2, 1):  # "." or ".\r" at the start of a line may be the terminator's beginning
            start = n - k
            if start >= 0 and b".\r\n".startswith(buf[start:]):
                if (start == 0 and self._line_start) or (start >= 2 and buf[start - 2 : start] == b"\r\n"):
                    return k
        return 1 if buf.endswith(b"\r") else 0  # a CR waits for its LF

    def _take(self, seg: bytes) -> None:
        """Account for ``seg``, which never ends inside a CRLF nor starts a terminator."""
        if not seg:
            return
        self._size += len(seg)
        crlf = seg.count(b"\r\n")
        if seg.count(b"\r") != crlf or seg.count(b"\n") != crlf:  # RFC 5321 §2.3.8
            self._bare = True
        if b"\0" in seg:
            self._nul = True
        if self.size_limit and self._size > self.size_limit:
            self._too_big = True
        if not self._long:
            self._measure_lines(seg)
        if self._too_big or self._bare or self._nul or self._long:
            self._storing = False
            self._drop()
        if self._storing:
            out = seg.replace(b"\r\n.", b"\r\n")  # RFC 5321 §4.5.2
            if self._line_start and out.startswith(b"."):
                out = out[1:]
            if self._spool is not None:
                self._to_spool(out)
            else:
                self._kept.write(out)
                if self._spill is not None and self._kept.tell() > self.spill_at:
                    self._to_spool(self._kept.getbuffer())
        self._line_start = seg.endswith(b"\r\n")

    def _measure_lines(self, seg: bytes) -> None:
        """Set ``_long`` if a line of ``seg`` is past ``max_text`` (its first with what came before it, its last,
        unfinished, so far), and keep the length of that last one.

        Without splitting ``seg`` into lines (a 2 MB attachment is some 27,000 of them): a line past
        ``max_text`` between the first and the last is a run of at least ``max_text + 2`` octets without LF
        (its CR counted), which holds a whole block of ``(max_text + 3) // 2`` octets; when every block has an
        LF (one ``find`` each, in C), none is. A block without one (a long line, or one nearly so) has those
        lines measured one by one."""
        limit = self.max_text
        first_end = seg.find(b"\r\n")
        if first_end < 0:  # the current line goes on
            self._line_len += len(seg)
            self._long = self._line_len > limit
            return
        first = self._line_len + first_end
        last_start = seg.rfind(b"\r\n") + 2
        self._line_len = len(seg) - last_start
        if first > limit or self._line_len > limit:
            self._long = True
            return
        block, find = (limit + 3) // 2, seg.find
        if any(find(b"\n", k, min(k + block, last_start)) < 0 for k in range(first_end + 2, last_start, block)):
            lines = seg[first_end + 2 : last_start - 2].split(b"\r\n")
            self._long = max(map(len, lines)) > limit

    def _to_spool(self, out: bytes | memoryview) -> None:
        """Write to the spool (made on first use); if the disk fails, keep nothing more and answer 451 4.3.1."""
        try:
            if self._spool is None:
                self._spool = self._spill() if self._spill is not None else None
                if self._spool is None:
                    raise RuntimeError("DataReader: no spill to spool to")
                self._spool.write(out)
                self._kept = io.BytesIO()
            else:
                self._spool.write(out)
        except OSError:  # the spool's disk (full, gone): the rest is read without keeping it, never run as commands
            self.refuse(R.SPOOL_FAILURE)

    def _finish(self) -> None:
        problem: Reply | None = None
        if self._too_big:
            problem = R.message_too_big(self.size_limit)
        elif self._bare:
            problem = R.BARE_LINEFEED
        elif self._nul:
            problem = R.NUL_IN_DATA
        elif self._long:
            problem = R.LINE_TOO_LONG
        elif self._refusal is not None:
            problem = self._refusal
        spool = self._spool
        if problem:
            self._drop()
            content, spool = b"", None
        elif spool is not None:
            spool.flush()
            content = b""
        else:
            content = self._kept.getvalue()  # the buffer itself, resized: not a copy
        self._kept = io.BytesIO()
        self._spool = None  # the result's now: the caller discards it
        self._result = DataResult(content, self._size, problem, spool)
