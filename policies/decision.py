from __future__ import annotations

from dataclasses import dataclass

from policies.reply import RECIPIENT_OK, Reply


@dataclass(frozen=True, slots=True)
class Decision:
    """Allow, or refuse with the reply to send. ``reason`` is a short machine-readable tag for logs and audit."""

    allowed: bool
    reply: Reply
    reason: str

    @classmethod
    def allow(cls, reason: str = "allowed", reply: Reply = RECIPIENT_OK) -> Decision:
        return cls(True, reply, reason)

    @classmethod
    def refuse(cls, reply: Reply, reason: str) -> Decision:
        if reply.code < 400:
            raise ValueError("a refusal needs a 4xx or 5xx reply")
        return cls(False, reply, reason)
