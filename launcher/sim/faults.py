"""Fault decisions of the simulator: the create and message rate limits, latency, and per-create
faults.

Each decision is a pure function of (seed, request number), so a sequential client sees the same
faults at the same requests on every run with one seed. Times are the simulator clock's seconds.
"""

from __future__ import annotations

import bisect
import math
import random
import time
from email.utils import formatdate
from enum import StrEnum

from launcher.sim.profiles import Faults, RateLimit, RateLimitHeaders, RetryAfterFormat


class CreateFault(StrEnum):
    """What happens to one create request that passed validation."""

    none = "none"
    error_before = "error_before_create"  # 500, nothing created
    error_after = "error_after_create"  # session created, then 500
    drop_after = "drop_after_create"  # session created, then the connection is reset
    delay_after = "delay_after_create"  # session created, the 200 is held `delay_seconds`


class TokenBucket:
    """Admit at most `burst` at once and `rate` per second sustained.

    A refused request spends nothing (what real limiters do: a 429 costs the client only time).
    """

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.rate
        self.burst = float(limit.burst)
        self.tokens = float(limit.burst)
        self.last = now

    def take(self, now: float) -> float:
        """0.0 when admitted (a token is spent); else the seconds until a token is available."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = max(self.last, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def retry_after_header(
    wait: float, fmt: RetryAfterFormat = RetryAfterFormat.seconds, *, wall: float | None = None
) -> str:
    """`Retry-After` in whole seconds, never 0 (clients read 0 as "hammer me"); or as the HTTP
    date when a token is back, rounded up to the next whole second."""
    if fmt is RetryAfterFormat.http_date:
        wall = time.time() if wall is None else wall
        return formatdate(math.ceil(wall + wait), usegmt=True)
    return str(max(1, math.ceil(wait)))


def quota(rate: float) -> tuple[int, int]:
    """The bucket's rate as (quota, window seconds), both whole numbers as the header drafts
    want: 20/s -> (20, 1); 0.5/s -> (1, 2). The quota is rounded down (never overstated)."""
    window = 1 if rate >= 1 else math.ceil(1 / rate)
    return max(1, math.floor(rate * window + 1e-9)), window


def rate_limit_headers(
    limit: RateLimit, bucket: TokenBucket, *, wall: float | None = None
) -> dict[str, str]:
    """The rate-limit headers of `limit.headers`' family, describing `bucket` right now.

    Remaining is the bucket's whole tokens; reset is when the bucket is full again (delta
    seconds, rounded up; Unix seconds for X-RateLimit-Reset, as GitHub and others send it).
    """
    if limit.headers is RateLimitHeaders.none:
        return {}
    q, w = quota(limit.rate)
    remaining = max(0, math.floor(bucket.tokens))
    full_in = max(0.0, (bucket.burst - bucket.tokens) / bucket.rate)
    reset = math.ceil(full_in)
    if limit.headers is RateLimitHeaders.ratelimit:
        return {
            "RateLimit-Limit": str(q),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(reset),
            "RateLimit-Policy": f"{q};w={w}",
        }
    if limit.headers is RateLimitHeaders.ietf:
        return {
            "RateLimit-Policy": f'"creates";q={q};w={w}',
            "RateLimit": f'"creates";r={remaining};t={reset}',
        }
    wall = time.time() if wall is None else wall
    return {
        "X-RateLimit-Limit": str(q),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(wall + full_in)),
    }


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most of the sorted `times` that fall in any half-open window [t, t + window)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + window, lo=i) - i)
    return best


class FaultPlan:
    """The seeded fault decisions of one simulator run."""

    def __init__(self, faults: Faults, seed: int, now: float) -> None:
        self.faults = faults
        self.seed = seed
        self.bucket = TokenBucket(faults.rate_limit, now) if faults.rate_limit else None
        limit = faults.message_rate_limit
        self.message_bucket = TokenBucket(limit, now) if limit else None

    def latency(self, request_number: int) -> float:
        """Extra real seconds before request `request_number` is answered."""
        f = self.faults
        if not f.latency_seconds and not f.latency_jitter_seconds:
            return 0.0
        jitter = random.Random(f"{self.seed}:latency:{request_number}").random()
        return f.latency_seconds + jitter * f.latency_jitter_seconds

    def rate_limited(self, now: float) -> float | None:
        """None when a create may proceed; else the seconds the client should wait."""
        if self.bucket is None:
            return None
        wait = self.bucket.take(now)
        return wait if wait > 0 else None

    def message_rate_limited(self, now: float) -> float | None:
        """As `rate_limited`, for a message send (its own bucket)."""
        if self.message_bucket is None:
            return None
        wait = self.message_bucket.take(now)
        return wait if wait > 0 else None

    def message_rate_headers(self) -> dict[str, str]:
        """The rate-limit headers for the message bucket's state now ({} when none)."""
        limit = self.faults.message_rate_limit
        if limit is None or self.message_bucket is None:
            return {}
        return rate_limit_headers(limit, self.message_bucket)

    def rate_headers(self) -> dict[str, str]:
        """The profile's rate-limit headers for the bucket's state now ({} when none)."""
        limit = self.faults.rate_limit
        if limit is None or self.bucket is None:
            return {}
        return rate_limit_headers(limit, self.bucket)

    def create_fault(self, create_number: int) -> CreateFault:
        """The fault for the `create_number`-th create that passed validation (0-based)."""
        f = self.faults
        rng = random.Random(f"{self.seed}:create:{create_number}")
        if rng.random() < f.error_before_create:
            return CreateFault.error_before
        roll = rng.random()
        for fault, p in (
            (CreateFault.error_after, f.error_after_create),
            (CreateFault.drop_after, f.drop_after_create),
            (CreateFault.delay_after, f.delay_after_create),
        ):
            if roll < p:
                return fault
            roll -= p
        return CreateFault.none
