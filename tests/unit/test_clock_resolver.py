"""The injected clock and resolver on their own: what the server's decisions rely on."""

from __future__ import annotations

import datetime as dt

import pytest

from mailserver.clock import Clock, FakeClock, SystemClock
from mailserver.resolver import DnsResolver, MemoryResolver, Resolver

START = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)


def test_a_fake_clock_moves_only_when_told_and_never_back() -> None:
    clock = FakeClock(START)
    first, second = clock(), clock()
    assert START < first < second < START + dt.timedelta(milliseconds=1)  # readings are ordered, time stands
    mono = clock.monotonic()
    assert clock.advance(90) >= START + dt.timedelta(seconds=90)
    assert clock() - second >= dt.timedelta(seconds=90) and clock.monotonic() - mono >= 90
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
    before = clock()
    assert clock.advance_to(START) == before  # already past: no move, and never back
    assert clock.advance_to(START + dt.timedelta(days=1)) >= START + dt.timedelta(days=1)
    with pytest.raises(ValueError, match="aware"):
        FakeClock(dt.datetime(2026, 1, 1))  # noqa: DTZ001 - the naive datetime is the point


def test_both_clocks_are_clocks() -> None:
    for clock in (SystemClock(), FakeClock()):
        assert isinstance(clock, Clock)
        assert clock().tzinfo is not None and clock().utcoffset() == dt.timedelta(0)


async def test_the_memory_resolver_answers_as_dns_does() -> None:
    r = MemoryResolver().add_mx("Example.TEST.", "mx2.example.test", 20).add_mx("example.test", "MX1.example.test")
    r.add_txt("sel._domainkey.example.test", "v=DKIM1; p=abc").fail("broken.test")
    assert isinstance(r, Resolver) and isinstance(DnsResolver(), Resolver)
    assert await r.mx("example.test") == [(10, "mx1.example.test"), (20, "mx2.example.test")]  # best first
    assert await r.mx("nowhere.test") == []
    assert await r.txt("SEL._domainkey.example.test.") == [b"v=DKIM1; p=abc"]
    assert await r.txt("other._domainkey.example.test") == []
    with pytest.raises(TimeoutError):
        await r.mx("broken.test")
    assert r.queries[0] == ("MX", "example.test") and r.queries[-1] == ("MX", "broken.test")
