"""Pacing: the token bucket, the adaptive rate that learns an unknown server limit from 429s,
the global pause, exponential backoff with full jitter, and the circuit breaker.

The pure parts take explicit times so property tests can drive them with a fake clock.
"""

from __future__ import annotations

import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import anyio


class Clock(Protocol):
    """Time as the executor sees it; tests plug in a fake one."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


async def sleep_unless(clock: Clock, seconds: float, stop: anyio.Event) -> bool:
    """Sleep `seconds` on `clock`, waking early when `stop` is set; True if it was set."""
    if stop.is_set() or seconds <= 0:
        return stop.is_set()
    async with anyio.create_task_group() as tg:

        async def sleeper() -> None:
            await clock.sleep(seconds)
            tg.cancel_scope.cancel()

        async def stopper() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(sleeper)
        tg.start_soon(stopper)
    return stop.is_set()


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class TokenBucket:
    """At most `rate` admissions per second on average, and `burst` at once.

    Over any interval of length T it admits at most rate*T + burst (while the rate is fixed).
    """

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def try_take(self, now: float) -> float:
        """Take a token if one is there (returns 0.0); else return the seconds to wait."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        self._refill(now)
        self.rate = rate
        self.tokens = min(self.tokens, self.burst)


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    r = rng or random
    return r.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


@dataclass
class AdaptiveRate:
    """Finds and holds an unknown server rate limit.

    On a 429 the rate drops to `decrease` x the rate the server was actually accepting (measured
    over the last `window` seconds), at most once per `cooldown`; it then recovers additively:
    quickly while well below the last rate that drew a 429, slowly near it (probing for headroom).
    """

    ceiling: float  # the configured --rate: never exceeded
    floor: float = 0.2
    decrease: float = 0.92
    fast_increase: float = 0.10  # fraction of the rate per second, far below the last 429 rate
    slow_increase: float = 0.002  # fraction of the rate per second, near it
    window: float = 3.0
    cooldown: float = 0.5
    rate: float = 0.0
    last_limit: float | None = None
    _last_cut: float = -1e9
    _last_tick: float | None = None
    _accepted: deque[float] = field(default_factory=deque)
    _first: float | None = None

    def __post_init__(self) -> None:
        self.rate = self.rate or self.ceiling

    def on_success(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._accepted.append(now)
        while self._accepted and self._accepted[0] < now - self.window:
            self._accepted.popleft()

    def accepted_rate(self, now: float, since: float = 0.0) -> float | None:
        """Creates/s the server accepted over the last `window` (not before `since`, e.g. the
        end of the last pause); None when there is too little to measure."""
        while self._accepted and self._accepted[0] < now - self.window:
            self._accepted.popleft()
        start = max(now - self.window, since, self._first if self._first is not None else now)
        span = now - start
        count = sum(1 for t in self._accepted if t >= start)
        if span < 0.25 or count < 3:
            return None
        return count / span

    def on_429(self, now: float, since: float = 0.0) -> bool:
        """Lower the rate (at most once per `cooldown`); True if it was lowered."""
        if now - self._last_cut < self.cooldown:
            return False
        measured = self.accepted_rate(now, since)
        if measured:
            # What the server accepted while we pushed past its limit is the limit.
            self.last_limit = min(self.rate, measured)
            self.rate = max(self.floor, self.last_limit * self.decrease)
        else:  # too little to measure: classic multiplicative decrease
            self.rate = max(self.floor, self.rate / 2)
        self._last_cut = now
        self._last_tick = now
        return True

    def tick(self, now: float) -> float:
        """Recover additively since the last tick; returns the current rate."""
        if self._last_tick is None:
            self._last_tick = now
            return self.rate
        dt = max(0.0, now - self._last_tick)
        self._last_tick = now
        near = self.last_limit is not None and self.rate >= 0.95 * self.last_limit
        step = (self.slow_increase if near else self.fast_increase) * self.rate * dt
        if self.last_limit is not None and not near:
            self.rate = min(self.rate + step, 0.95 * self.last_limit)
        else:
            self.rate = self.rate + step
        self.rate = min(self.ceiling, max(self.floor, self.rate))
        return self.rate


class Pacer:
    """Shared by every worker: the global 429 pause, then the adaptive token bucket."""

    def __init__(self, rate: float, clock: Clock, *, burst: float | None = None) -> None:
        self.clock = clock
        self.adaptive = AdaptiveRate(ceiling=rate)
        self.bucket = TokenBucket(rate, burst or max(1.0, min(rate / 5, 10.0)), clock.now())
        self.pause_until = 0.0
        self.pauses = 0
        self.rate_limited = 0
        self.consecutive_429 = 0

    async def acquire(self, stop: anyio.Event | None = None) -> bool:
        """Wait for permission to send one create; False if `stop` was set meanwhile."""
        while True:
            if stop is not None and stop.is_set():
                return False
            now = self.clock.now()
            if now < self.pause_until:
                await self.clock.sleep(min(self.pause_until - now, 0.5))
                continue
            rate = self.adaptive.tick(now)
            if abs(rate - self.bucket.rate) > 1e-9:
                self.bucket.set_rate(rate, now)
            wait = self.bucket.try_take(now)
            if wait <= 0:
                return True
            await self.clock.sleep(min(wait, 0.5))

    def on_success(self) -> None:
        self.adaptive.on_success(self.clock.now())
        self.consecutive_429 = 0

    def on_429(self, retry_after: float | None) -> float:
        """Pause every worker: Retry-After when given, else an exponential backoff over the
        run's consecutive 429 episodes. Returns the pause now in force.

        429s that arrive while a pause is already in force belong to the same episode (they
        were in flight together): they neither lengthen the backoff nor cut the rate again.
        """
        now = self.clock.now()
        self.rate_limited += 1
        if now < self.pause_until:
            if retry_after is not None and now + retry_after > self.pause_until:
                self.pause_until = now + min(retry_after, 300.0)
            return self.pause_until - now
        self.consecutive_429 += 1
        self.adaptive.on_429(now, since=self.pause_until)
        self.bucket.tokens = 0.0  # no burst when the pause ends: the server just said "full"
        if retry_after is not None:
            pause = retry_after
        else:  # equal jitter: never ~0, never in lockstep with other clients
            ceiling = min(30.0, 0.5 * 2 ** min(self.consecutive_429 - 1, 10))
            pause = ceiling / 2 + random.uniform(0, ceiling / 2)
        self.pause_until = now + min(pause, 300.0)
        self.pauses += 1
        return self.pause_until - now


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive ambiguous/5xx outcomes; any success closes it."""

    threshold: int = 12
    consecutive: int = 0

    def record(self, ok: bool) -> bool:
        """Record an outcome; True when the breaker is (now) open."""
        self.consecutive = 0 if ok else self.consecutive + 1
        return self.is_open

    @property
    def is_open(self) -> bool:
        return self.consecutive >= self.threshold
