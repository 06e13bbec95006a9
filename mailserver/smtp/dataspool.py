"""A large DATA kept on disk while it is read, encrypted under a key that exists only in memory (issue 14 point 3).

Once what a DATA keeps passes ``limits.spool_threshold`` octets, the DATA reader
(``smtp.data.DataReader``) hands it to a ``DataSpool`` and writes the rest there: the server
holds one chunk of each message in flight, not the whole message, for as long as the client
takes to send it. The message comes back in memory once, just before it is parsed
(``read_all``: the model, ``mailserver.message``, parses whole bytes).

Invariants:
- The file is created ``0600`` with ``O_EXCL`` under ``smtp.spool_dir`` (relative to the
  configuration's directory), named ``data-<random>.spool``; nothing else is ever written there.
- Every chunk (``CHUNK`` octets of plaintext at most) is sealed with AES-256-GCM under a key
  generated per message (``AESGCM.generate_key``), never written anywhere and dropped with the
  object: a leftover file is unreadable by anyone, this process included. The nonce is the
  chunk's index (unique under a one-message key); the AAD binds the index, so chunks cannot be
  reordered, and the writer's count of chunks and octets (kept in memory) refuses a truncated
  or extended file.
- ``discard()`` closes and deletes the file; it is idempotent, called on every path (stored,
  refused, the client gone mid-DATA), and a finalizer does it too if an object is dropped
  without it. ``clear_leftovers`` removes the files of a process that died (at startup).
- No plaintext of the message is ever written to disk by this module, nor logged.
"""

from __future__ import annotations

import io
import logging
import os
import secrets
import struct
import weakref
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("masante.smtp.spool")

CHUNK = 1 << 20  # octets of plaintext per sealed chunk
TAG = 16
PREFIX = "data-"
SUFFIX = ".spool"
_AAD = b"masante-data-spool\x00"
_LEN = struct.Struct(">I")


class SpoolError(Exception):
    """The spool file does not hold what was written (truncated, altered, or used after ``discard``)."""


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, "big")


def _aad(index: int) -> bytes:
    return _AAD + index.to_bytes(8, "big")


def _remove(fd: int, path: str) -> None:
    """Close and delete (the finalizer's body: no reference to the spool object)."""
    try:
        os.close(fd)
    except OSError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class DataSpool:
    """One message's DATA, appended in order, sealed chunk by chunk into a temporary file."""

    def __init__(self, directory: Path, *, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self.path = directory / f"{PREFIX}{secrets.token_hex(16)}{SUFFIX}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(self.path, flags, 0o600)
        self._aead: AESGCM | None = AESGCM(AESGCM.generate_key(bit_length=256))
        self._pending = bytearray()  # plaintext not yet a full chunk (CHUNK octets at most)
        self._chunks = 0
        self._size = 0  # octets of plaintext written, pending included
        self._finalizer = weakref.finalize(self, _remove, self._fd, str(self.path))

    @property
    def size(self) -> int:
        """Octets of the message written so far."""
        return self._size

    @property
    def discarded(self) -> bool:
        return self._aead is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``: full chunks are sealed and written at once, the rest waits for more."""
        if self._aead is None:
            raise SpoolError("the spool was discarded")
        view = memoryview(data)
        self._size += len(view)
        while view:
            room = self.chunk - len(self._pending)
            if not self._pending and len(view) >= self.chunk:
                self._seal(view[: self.chunk])
                view = view[self.chunk :]
                continue
            self._pending += view[:room]
            view = view[room:]
            if len(self._pending) == self.chunk:
                self._seal(self._pending)
                self._pending.clear()

    def flush(self) -> None:
        """Seal what waits (the end of the message)."""
        if self._pending:
            self._seal(self._pending)
            self._pending.clear()

    def _seal(self, plain: bytes | bytearray | memoryview) -> None:
        if self._aead is None:
            raise SpoolError("the spool was discarded")
        out = bytearray(_LEN.size + len(plain) + TAG)
        _LEN.pack_into(out, 0, len(plain) + TAG)
        self._aead.encrypt_into(_nonce(self._chunks), plain, _aad(self._chunks), memoryview(out)[_LEN.size :])
        os.write(self._fd, out)  # a regular file: one write takes it all
        self._chunks += 1

    def read_all(self) -> bytes:
        """The whole message, in one ``bytes`` built in place (no second copy): blocking, call it in a thread."""
        if self._aead is None:
            raise SpoolError("the spool was discarded")
        self.flush()
        buf = io.BytesIO()
        if self._size:
            buf.seek(self._size - 1)
            buf.write(b"\0")  # one allocation of the message's size, filled in place below
        view = buf.getbuffer()
        try:
            at = 0
            with os.fdopen(os.dup(self._fd), "rb", buffering=0) as f:
                f.seek(0)
                for index in range(self._chunks):
                    head = f.read(_LEN.size)
                    if len(head) != _LEN.size:
                        raise SpoolError("the spool file is truncated")
                    (length,) = _LEN.unpack(head)
                    sealed = f.read(length)
                    if len(sealed) != length or length <= TAG or at + length - TAG > self._size:
                        raise SpoolError("the spool file does not match what was written")
                    try:
                        self._aead.decrypt_into(_nonce(index), sealed, _aad(index), view[at : at + length - TAG])
                    except InvalidTag:
                        raise SpoolError(f"chunk {index} of the spool file was altered") from None
                    at += length - TAG
                if at != self._size or f.read(1):
                    raise SpoolError("the spool file does not match what was written")
        finally:
            view.release()
        return buf.getvalue()  # the buffer itself (no export left, full): not a copy

    def discard(self) -> None:
        """Close and delete the file, and forget the key (idempotent)."""
        self._aead = None
        self._pending = bytearray()
        self._finalizer()


def prepare(directory: Path) -> int:
    """Create ``directory`` (0700) if needed and remove the spool files a previous process left; how many."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    removed = 0
    for p in directory.glob(f"{PREFIX}*{SUFFIX}"):
        try:
            p.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.warning("smtp.spool-leftovers", extra={"fields": {"removed": removed}})
    return removed
