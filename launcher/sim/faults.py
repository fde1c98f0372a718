"""Fault decisions of the simulator: the create rate limit, latency, and per-create faults.

Each decision is a pure function of (seed, request number), so a sequential client sees the same
faults at the same requests on every run with one seed. Times are the simulator clock's seconds.
"""

from __future__ import annotations

import math
import random
from enum import StrEnum

from launcher.sim.profiles import Faults, RateLimit


class CreateFault(StrEnum):
    """What happens to one create request that passed validation."""

    none = "none"
    error_before = "error_before_create"  # 500, nothing created
    error_after = "error_after_create"  # session created, then 500
    drop_after = "drop_after_create"  # session created, then the connection is reset
    delay_after = "delay_after_create"  # session created, the 200 is held `delay_seconds`


class TokenBucket:
    """Admit at most `burst` at once and `rate` per second sustained."""

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


def retry_after_header(wait: float) -> str:
    """`Retry-After` in whole seconds, never 0 (clients read 0 as "hammer me")."""
    return str(max(1, math.ceil(wait)))


class FaultPlan:
    """The seeded fault decisions of one simulator run."""

    def __init__(self, faults: Faults, seed: int, now: float) -> None:
        self.faults = faults
        self.seed = seed
        self.bucket = TokenBucket(faults.rate_limit, now) if faults.rate_limit else None

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
