"""Per-sender rate limits: a token bucket per sender, the time handed in by the caller.

Invariants:
- A sender may address ``limit`` recipients per ``window`` seconds: the bucket
  holds at most ``limit`` tokens and refills continuously at ``limit / window``
  per second; each accepted recipient takes one token.
- A refusal is temporary (4xx): the sending client's queue tries again later and
  nothing is lost.
- A limit of 0 or less means no limit.
- Memory is bounded: at most ``MAX_TRACKED`` senders are remembered, the least
  recently seen forgotten first (forgetting one only gives it a full bucket).
- The state lives in this process: with several server processes, each applies
  the limit on its own share of the traffic.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from policies import reply as R
from policies.decision import Decision

MAX_TRACKED = 100_000
HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    limit: int
    window: float = HOUR

    @property
    def unlimited(self) -> bool:
        return self.limit <= 0


class RateLimiter:
    def __init__(self, *, max_tracked: int = MAX_TRACKED) -> None:
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def _tokens(self, key: str, rate: RateLimit, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return float(rate.limit)
        tokens, at = entry
        refill = max(0.0, now - at) * rate.limit / rate.window
        return min(float(rate.limit), tokens + refill)

    def hit(self, key: str, rate: RateLimit, now: float, *, cost: int = 1) -> Decision:
        """Take ``cost`` tokens from ``key``'s bucket, or refuse (temporarily) if there are not enough."""
        if rate.unlimited:
            return Decision.allow("no-rate-limit")
        tokens = self._tokens(key, rate, now)
        if tokens < cost:
            self._remember(key, tokens, now)
            wait = (cost - tokens) * rate.window / rate.limit
            return Decision.refuse(
                R.SENDER_RATE_LIMITED.with_text(
                    f"Too many recipients from this sender: at most {rate.limit} per {_span(rate.window)}; "
                    f"try again in {max(1, round(wait))} s"
                ),
                "sender-rate-limited",
            )
        self._remember(key, tokens - cost, now)
        return Decision.allow("within-rate")

    def remaining(self, key: str, rate: RateLimit, now: float) -> float:
        return float("inf") if rate.unlimited else self._tokens(key, rate, now)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)


def _span(seconds: float) -> str:
    if seconds == HOUR:
        return "hour"
    if seconds == 60:
        return "minute"
    if seconds == 86400:
        return "day"
    return f"{seconds:g} s"
