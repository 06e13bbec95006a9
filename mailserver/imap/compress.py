"""COMPRESS=DEFLATE (RFC 4978): the octets of a connection, both ways, as raw deflate (RFC 1951).

Invariants:
- Raw deflate, no zlib header or checksum (wbits -15), one stream per direction
  for the rest of the connection; each write is flushed with Z_SYNC_FLUSH, so
  that the client can inflate every response as soon as it arrives.
- Inflating is bounded: one call yields at most ``MAX_INFLATE`` octets and keeps
  the rest of its input for the next (``pending``), so a small compressed chunk
  never becomes megabytes at once; the receiver's line and literal bounds then
  apply to the inflated octets as to any others.
"""

from __future__ import annotations

import zlib

MAX_INFLATE = 256 * 1024
LEVEL = 6


class Deflate:
    def __init__(self) -> None:
        self._in = zlib.decompressobj(-15)
        self._out = zlib.compressobj(LEVEL, zlib.DEFLATED, -15)

    @property
    def pending(self) -> bool:
        """Input received and not inflated yet (more than one call's worth)."""
        return bool(self._in.unconsumed_tail)

    def inflate(self, data: bytes) -> bytes:
        """What the client sent, in clear; raises ``zlib.error`` for octets that are not a deflate stream."""
        return self._in.decompress(self._in.unconsumed_tail + data, MAX_INFLATE)

    def deflate(self, data: bytes) -> bytes:
        return self._out.compress(data) + self._out.flush(zlib.Z_SYNC_FLUSH)
