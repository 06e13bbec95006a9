"""Per-sender rate limits: a token bucket, the clock handed in."""

from policies.rates import RateLimit, RateLimiter


def test_bucket_empties_then_refills() -> None:
    r = RateLimiter()
    rate = RateLimit(3, window=60)
    assert [r.hit("a", rate, 0.0).allowed for _ in range(4)] == [True, True, True, False]
    refused = r.hit("a", rate, 0.0)
    assert str(refused.reply).startswith("450 4.7.1 Too many recipients from this sender: at most 3 per minute")
    assert "try again in 20 s" in str(refused.reply)
    assert r.hit("b", rate, 0.0).allowed  # per sender
    assert r.hit("a", rate, 20.0).allowed  # one token back after window/limit seconds
    assert not r.hit("a", rate, 20.0).allowed
    assert r.remaining("a", rate, 1000.0) == 3  # never more than the limit


def test_zero_means_no_limit() -> None:
    r = RateLimiter()
    assert all(r.hit("a", RateLimit(0), 0.0).allowed for _ in range(1000))


def test_memory_is_bounded() -> None:
    r = RateLimiter(max_tracked=10)
    rate = RateLimit(1)
    for i in range(100):
        r.hit(f"s{i}", rate, 0.0)
    assert len(r._buckets) == 10
