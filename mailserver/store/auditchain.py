"""The audit chain's key and its anchors outside the database.

Invariants:
- A link is ``HMAC-SHA256(chain key, prev_hash "\\n" canonical(entry))`` (RFC
  2104): without the key, which never enters the database, nobody who can
  rewrite rows can recompute a link. Entries older than the head's
  ``keyed_from`` marker were written before migration 0004 with plain SHA-256
  and are verified as such (legacy).
- A checkpoint ``(seq, hash, time, keyed_from)`` of a committed head is signed
  with the anchor key and appended, one line of JSON, to the anchor file
  (``O_APPEND``, 0600, fsync'd): every ``anchor_every`` entries, at the first
  commit or after ``anchor_interval`` seconds, and when the database is
  released (clean shutdown, end of an admin command). Cutting the tail and
  rewinding the head, or moving the legacy marker, contradicts an anchor.
- Checkpoints are written after the commit they describe, from what this
  process committed: an anchor never names an entry that was rolled back.
  Several processes may append to one file (each line is one ``write``).
- Make the file append-only for the server's user where the system allows it
  (``chattr +a``), or ship its lines to another machine: an anchor protects
  the log only as long as the attacker cannot rewrite the anchors too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GENESIS = "0" * 64

log = logging.getLogger("masante.audit")


def canonical(
    seq: int, at: dt.datetime, actor: str, action: str, object_id: str, outcome: str, detail: str | None
) -> bytes:
    return json.dumps(
        [seq, at.astimezone(dt.UTC).isoformat(timespec="microseconds"), actor, action, object_id, outcome, detail],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def legacy_link(prev_hash: str, entry: bytes) -> str:
    """Before migration 0004: plain SHA-256, which anyone can recompute."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + entry).hexdigest()


def keyed_link(chain_key: bytes, prev_hash: str, entry: bytes) -> str:
    return hmac.new(chain_key, prev_hash.encode() + b"\n" + entry, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A committed head of the chain: entry ``seq`` has link ``hash``; entries before ``keyed_from`` are legacy."""

    seq: int
    hash: str
    keyed_from: int
    at: dt.datetime | None = None

    def payload(self) -> bytes:
        at = self.at.astimezone(dt.UTC).isoformat(timespec="seconds") if self.at else None
        return json.dumps([self.seq, self.hash, at, self.keyed_from], separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class BadAnchor:
    line: int
    reason: str


class AnchorFile:
    """Signed checkpoints, one JSON line each: ``{"seq":..,"hash":..,"at":..,"keyed_from":..,"mac":..}``."""

    def __init__(self, path: Path, anchor_key: bytes) -> None:
        self.path = path
        self._key = anchor_key

    def _mac(self, cp: Checkpoint) -> str:
        return hmac.new(self._key, cp.payload(), hashlib.sha256).hexdigest()

    def append(self, cp: Checkpoint) -> None:
        at = cp.at.astimezone(dt.UTC).isoformat(timespec="seconds") if cp.at else None
        line = json.dumps(
            {"seq": cp.seq, "hash": cp.hash, "at": at, "keyed_from": cp.keyed_from, "mac": self._mac(cp)},
            separators=(",", ":"),
        )
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())  # one write: lines of concurrent writers never interleave
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Checkpoint], list[BadAnchor]]:
        """The checkpoints whose signature holds, and the lines that are not such a checkpoint."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return [], []
        good: list[Checkpoint] = []
        bad: list[BadAnchor] = []
        lines = text.split("\n")
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            if n == len(lines):  # no newline after it: a write cut short by a crash, not a forgery
                break
            try:
                obj = json.loads(line)
                at = dt.datetime.fromisoformat(obj["at"]) if obj["at"] else None
                cp = Checkpoint(int(obj["seq"]), str(obj["hash"]), int(obj["keyed_from"]), at)
                mac = str(obj["mac"])
            except (ValueError, KeyError, TypeError):
                bad.append(BadAnchor(n, f"anchor line {n} is not a checkpoint"))
                continue
            if not hmac.compare_digest(mac, self._mac(cp)):
                bad.append(BadAnchor(n, f"anchor line {n} (entry {cp.seq}) is not signed by this server's audit key"))
                continue
            good.append(cp)
        return good, bad


Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AuditTrail:
    """What a process needs to extend the chain and anchor it: the chain key, the anchor file, when to anchor."""

    def __init__(
        self,
        chain_key: bytes,
        anchors: AnchorFile | None = None,
        *,
        anchor_every: int = 100,
        anchor_interval: float = 300.0,
        clock: Clock = _utcnow,
    ) -> None:
        self.chain_key = chain_key
        self.anchors = anchors
        self.anchor_every = max(1, anchor_every)
        self.anchor_interval = anchor_interval
        self.clock = clock
        self._committed: Checkpoint | None = None  # the newest head this process committed
        self._anchored_seq: int | None = None
        self._timer: asyncio.TimerHandle | None = None

    def link(self, prev_hash: str, entry: bytes) -> str:
        return keyed_link(self.chain_key, prev_hash, entry)

    @property
    def unanchored(self) -> bool:
        return self._committed is not None and self._committed.seq != self._anchored_seq

    def committed(self, head: Checkpoint) -> None:
        """A unit of work committed entries up to ``head``: anchor now if due, else make sure a timer will."""
        if self._committed is None or head.seq > self._committed.seq:
            self._committed = head
        if self.anchors is None:
            return
        if self._anchored_seq is None or head.seq - self._anchored_seq >= self.anchor_every:
            self._anchor_logged()
        elif self._timer is None:
            with contextlib.suppress(RuntimeError):  # no running loop: the release of the database anchors
                self._timer = asyncio.get_running_loop().call_later(self.anchor_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._anchor_logged()

    def _anchor_logged(self) -> None:
        # after a commit the entries are in the database whatever happens here: a failing anchor file is
        # said loudly, it does not turn a committed unit of work into an error
        try:
            self.anchor()
        except OSError as exc:
            log.error(
                "audit.anchor-failed",
                extra={"fields": {"file": str(self.anchors and self.anchors.path), "error": exc.strerror}},
            )

    def anchor(self) -> Checkpoint | None:
        """Write a checkpoint of the newest head this process committed, if it is not anchored yet."""
        if self.anchors is None or self._committed is None or self._committed.seq == self._anchored_seq:
            return None
        cp = Checkpoint(self._committed.seq, self._committed.hash, self._committed.keyed_from, self.clock())
        self.anchors.append(cp)
        self._anchored_seq = cp.seq
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return cp

    def close(self) -> None:
        """Clean shutdown: anchor what is left and stop the timer."""
        self._anchor_logged()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
