"""Pacing: token bucket bound, backoff bounds, the adaptive rate, the circuit breaker."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.pacing import AdaptiveRate, CircuitBreaker, TokenBucket, backoff_delay


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=500),
    burst=st.integers(min_value=1, max_value=50),
    gaps=st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=300),
)
def test_token_bucket_never_admits_more_than_rate_times_elapsed_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    now = 1000.0
    bucket = TokenBucket(rate, burst, now)
    admitted_at = []
    for gap in gaps:
        now += gap
        # A greedy caller: takes every token it can at this instant.
        while bucket.try_take(now) == 0.0:
            admitted_at.append(now)
    # Over every window [admitted_at[i], admitted_at[j]], the count is bounded.
    for i in range(0, len(admitted_at), max(1, len(admitted_at) // 20)):
        for j in range(i, len(admitted_at)):
            elapsed = admitted_at[j] - admitted_at[i]
            assert j - i + 1 <= rate * elapsed + burst + 1e-6


@given(st.floats(min_value=0.5, max_value=200), st.integers(min_value=1, max_value=20))
def test_token_bucket_wait_is_exactly_enough(rate: float, burst: int) -> None:
    bucket = TokenBucket(rate, burst, 0.0)
    for _ in range(burst):
        assert bucket.try_take(0.0) == 0.0
    wait = bucket.try_take(0.0)
    assert wait > 0
    assert bucket.try_take(wait * 1.0001) == 0.0


@given(
    attempt=st.integers(min_value=0, max_value=100),
    base=st.floats(0.01, 5),
    cap=st.floats(0.1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_bounded_by_cap_and_exponential_envelope(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    d = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    assert 0 <= d <= min(cap, base * 2 ** min(attempt, 30))


def test_backoff_uses_full_jitter() -> None:
    rng = random.Random(1)
    samples = [backoff_delay(6, base=1, cap=30, rng=rng) for _ in range(500)]
    assert min(samples) < 3 and max(samples) > 27  # spread over the whole [0, 30] range


def test_adaptive_rate_finds_and_holds_an_unknown_limit() -> None:
    """Drive AdaptiveRate against a server that accepts `limit`/s: it settles just below."""
    limit, now, dt = 50.0, 0.0, 0.01
    ar = AdaptiveRate(ceiling=200.0)
    server_tokens, credit = 10.0, 0.0
    sent = ok = cuts = 0
    history = []
    for _ in range(int(120 / dt)):
        now += dt
        server_tokens = min(10.0, server_tokens + limit * dt)
        credit += ar.tick(now) * dt
        while credit >= 1:
            credit -= 1
            sent += 1
            if server_tokens >= 1:
                server_tokens -= 1
                ok += 1
                ar.on_success(now)
            else:
                cuts += ar.on_429(now)
        history.append(ar.rate)
    late = history[len(history) // 2 :]
    assert 0.8 * limit <= sum(late) / len(late) <= 1.05 * limit
    assert ok / 120 >= 0.85 * limit  # throughput close to the server's limit
    assert cuts < 20  # learned, not oscillating on every request


def test_adaptive_rate_never_exceeds_the_configured_ceiling() -> None:
    ar = AdaptiveRate(ceiling=5.0)
    for t in range(1000):
        ar.on_success(float(t))
        assert ar.tick(float(t)) <= 5.0


def test_circuit_breaker_opens_after_consecutive_failures_and_success_closes() -> None:
    cb = CircuitBreaker(threshold=3)
    assert not cb.record(False)
    assert not cb.record(False)
    assert not cb.record(True)  # reset
    assert not cb.record(False)
    assert not cb.record(False)
    assert cb.record(False)
