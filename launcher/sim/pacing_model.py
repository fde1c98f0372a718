"""A discrete-event model of `apply` against a server-side token bucket, in virtual time
(the pacing tests and `bench/pacing_sweep.py` run the real pacer in it).

It drives the real `Pacer` (its pure `try_acquire`/`on_success`/`on_429`) with a fake clock as
apply does: at most `concurrency` creates in flight, a 429 parks its key until its Retry-After
while the others go on, and the pacer hears how many are left (its end game). The server is a
bucket of `limit`/s and `burst`, decides after a fixed latency, and writes Retry-After as the
simulator does (whole seconds rounded up, an HTTP date rounded up to the next second, or none).
Nothing here sleeps or reads the wall clock.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field

from launcher.api.pacing import Pacer, Ticket
from launcher.sim.clock import VirtualClock


@dataclass
class Hint:
    rate: float | None
    remaining: int | None


@dataclass
class Outcome:
    elapsed: float
    created: int
    rate_limited: int
    sends: list[float] = field(default_factory=list)  # every create's send time
    max_in_flight: int = 0
    rates: list[float] = field(default_factory=list)  # the adaptive rate at each send
    delays: list[float] = field(default_factory=list)  # each create's send -> bucket delay

    def sent(self, at: float, rate: float, in_flight: int, delay: float) -> None:
        self.sends.append(at)
        self.rates.append(rate)
        self.max_in_flight = max(self.max_in_flight, in_flight)
        self.delays.append(delay)

    def efficiency(self, limit: float) -> float:
        return (self.created / limit) / self.elapsed


def run_model(
    *,
    n: int,
    limit: float,
    burst: int,
    retry_after: str = "seconds",
    latency: float = 0.0,
    rate: float = 100.0,
    concurrency: int = 16,
    headers: bool = False,
    jitter: float = 0.0,
    spikes: float = 0.0,
    spike: float = 0.002,
    seed: int = 0,
) -> Outcome:
    """Launch `n` creates; return when the last one was accepted and what happened. Each
    reaches the server `latency` + uniform(0, `jitter`) after it was sent, and with odds
    `spikes` later by an exponential of mean `spike` (a loaded machine: pacing_bench --trace)."""
    rng = random.Random(seed)
    clock = VirtualClock()
    start = clock.now()
    pacer = Pacer(rate, clock, rng=random.Random(seed))
    pacer.remaining = n
    bucket = _Bucket(limit, burst, float(burst), start)  # the server's
    todo = n  # keys not handed out yet
    created = limited = in_flight = 0
    out = Outcome(0.0, 0, 0)
    parked: list[tuple[float, int]] = []  # (not before, seq): 429s waiting out Retry-After
    # (time, seq, kind, ticket): "try" = whoever waits may send now; "arrive" = at the server
    events: list[tuple[float, int, str, Ticket | None]] = []
    seq = 0

    def push(t: float, kind: str, ticket: Ticket | None = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (t, seq, kind, ticket))

    push(start, "try")
    while events and created < n:
        t, _, kind, ticket = heapq.heappop(events)
        now = clock.t = max(clock.t, t)
        if kind == "arrive":
            assert ticket is not None
            wait = bucket.take(now)
            in_flight -= 1
            hint = Hint(limit, 0 if wait else math.floor(bucket.tokens)) if headers else None
            if wait is None:
                created += 1
                pacer.remaining = n - created
                pacer.on_success(ticket, hint)
            else:
                limited += 1
                ra = _retry_after(retry_after, wait, now, rng)
                # Parked, as apply does: its slot goes to the next key meanwhile.
                heapq.heappush(parked, (pacer.on_429(ticket, ra, hint), seq))
                push(parked[0][0], "try")
            push(now, "try")
            continue
        # "try": fill the free slots, parked keys that are due first, then new keys
        while in_flight < concurrency:
            due = bool(parked) and parked[0][0] <= now
            if not due and todo == 0:
                break
            got = pacer.try_acquire(now)
            if not isinstance(got, Ticket):
                push(now + min(got, 0.25), "try")
                break
            if due:
                heapq.heappop(parked)
            else:
                todo -= 1
            in_flight += 1
            delay = latency + (rng.random() * jitter if jitter else 0.0)
            if spikes and rng.random() < spikes:
                delay += rng.expovariate(1.0 / spike)
            out.sent(now, pacer.adaptive.rate, in_flight, delay)
            push(now + delay, "arrive", got)
    out.elapsed, out.created, out.rate_limited = clock.now() - start, created, limited
    return out


@dataclass
class _Bucket:
    """The server's token bucket."""

    limit: float
    burst: int
    tokens: float
    stamp: float

    def take(self, now: float) -> float | None:
        """None: a token was taken; else how long until there is one."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.limit)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.limit


def _retry_after(style: str, wait: float, now: float, rng: random.Random) -> float | None:
    """The Retry-After a 429 carries (seconds until a token), as `style` writes it."""
    if style == "seconds":
        return float(max(1, math.ceil(wait)))
    if style == "http-date":
        wall = 1.7e9 + now + rng.random()  # the client's and server's clocks agree
        return math.ceil(wall + wait) - wall
    return None


def bench_concurrency(limit: float, latency: float) -> int:
    """The benches' --concurrency: 16, or 1.5 x what launching at the limit keeps in flight."""
    return max(16, math.ceil(1.5 * limit * latency))


def run_shape(
    limit: float,
    burst: int,
    retry_after: str,
    latency: float,
    *,
    n: int = 300,
    jitter: float = 0.0005,
    spikes: float = 0.0,
    seed: int = 0,
) -> Outcome:
    """One server shape as the benches run it: `--rate` 100 or twice the limit, and
    `bench_concurrency`."""
    return run_model(
        n=n,
        limit=limit,
        burst=burst,
        retry_after=retry_after,
        latency=latency,
        rate=max(100.0, 2 * limit),
        concurrency=bench_concurrency(limit, latency),
        jitter=jitter,
        spikes=spikes,
        seed=seed,
    )
