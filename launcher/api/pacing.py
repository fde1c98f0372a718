"""Pacing: admission under `--rate` at the adaptive rate (launcher/api/adaptive.py finds the
server's limit), Retry-After, the end game, rate-limit header credit; backoff with full
jitter; the circuit breaker.

The API publishes no limit, so apply learns it from the answers. Creates start at the `--rate`
ceiling, one at a time: the client's bucket holds one token, so it never bursts into the
server's bucket, and waiters queue first come first served (one polls the bucket; the real
clock spins out the last 1.5 ms of a wait, as the event loop's timers overshoot by up to a
millisecond). Every admission is a `Ticket` (send time, rate it was paced at), and answers
are kept by send time, so latency never blurs what they measure.

- How the rate is found from the answers (429s by send time, one-token buckets, uneven
  arrivals, headers): launcher/api/adaptive.py.
- Retry-After (seconds or HTTP date) holds back only the request it answered: apply (and
  `message`) parks it, and its slot goes to the next. Eight 429s in a row for creates sent
  after their cut, or a Retry-After over 5 s, pause every worker as asked (or with
  equal-jitter backoff), and measuring starts afresh.
- End game: once the creates left would all be sent within the longest wait a 429 has cost
  (its Retry-After, or the short wait without one) plus two latencies (learning of the 429,
  sending again), a 429 would hold its request past everyone else's end, so the rate drops 5%
  below the lowest of the rate, the peak and the rate the last cut went to (a measure, not a
  probe), and probes no more: a last second 0.05 s slower, against a whole second for a 429.
  One token with uneven arrivals: the last gaps also get a margin, the answers' spread x
  ln(p x c / spread) (p the recent share of 429s, at most 5%; c what one would cost past the
  end), widest for the last create.
- Rate-limit headers, when an answer has them (the client parses three families), set the rate
  (adaptive.py); Remaining, less the creates sent since, those sent before and not answered
  yet (the network may reorder them) and one, may go at once (the server's burst, still
  within `--rate`).

Figures: bench/pacing_bench.py (real sockets, the CLI) and bench/pacing_sweep.py (the
virtual-time model, 384 server shapes). Bounds: at most floor(`--rate`) admissions in any
1.02-second window, at most `--concurrency` in flight. The pure parts take explicit times.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.lowlevel

from launcher.api.adaptive import AdaptiveRate, RateHint, Ticket

__all__ = [
    "AdaptiveRate",
    "CircuitBreaker",
    "Clock",
    "MonotonicClock",
    "Pacer",
    "RateHint",
    "Ticket",
    "TokenBucket",
    "WindowLimit",
    "backoff_delay",
    "sleep_unless",
]

_TICK = 1e-6  # the shortest wait try_acquire returns


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
    """Real time. Sleeps end on time to a few tens of microseconds: the event loop's timers
    overshoot by up to a millisecond (epoll counts whole milliseconds), which at 100 creates/s
    would cost a tenth of the rate, so the last `spin` seconds yield to the loop instead."""

    spin = 0.0015

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        deadline = self.now() + seconds
        if seconds > self.spin:
            await anyio.sleep(seconds - self.spin)
        while self.now() < deadline:  # a timer cannot wake this precisely: yield instead
            await anyio.lowlevel.checkpoint()


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

    def spend(self, now: float) -> None:
        """Empty the bucket: the next admission waits a whole 1/rate."""
        self._refill(now)
        self.tokens = min(self.tokens, 0.0)


class WindowLimit:
    """At most `count` admissions in any half-open window of `window` seconds (a sliding log)."""

    def __init__(self, count: int, window: float) -> None:
        if count < 1 or window <= 0:
            raise ValueError("count must be >= 1 and window > 0")
        self.count = count
        self.window = window
        self.log: deque[float] = deque()

    @classmethod
    def for_rate(cls, rate: float, margin: float = 0.02) -> WindowLimit:
        """`--rate R` as a window: floor(R) per second; below 1/s, one per 1/R seconds. The
        window is `margin` longer, so a server still counts no more than R in any second when
        the network delays one create a little more than the next."""
        count = max(1, math.floor(rate + 1e-9))
        return cls(count, max(1.0, count / rate) * (1 + margin))

    def wait(self, now: float) -> float:
        """0.0 when one more admission now keeps the bound; else the seconds until it does."""
        while self.log and self.log[0] <= now - self.window:
            self.log.popleft()
        if len(self.log) < self.count:
            return 0.0
        return self.log[0] + self.window - now

    def take(self, now: float) -> None:
        self.log.append(now)


def backoff_delay(
    attempt: int, *, base: float = 0.5, cap: float = 30.0, rng: random.Random | None = None
) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**attempt))."""
    r = rng or random
    return r.uniform(0.0, min(cap, base * (2 ** min(attempt, 30))))


@dataclass
class _Pause:
    until: float = 0.0
    fresh_429s: int = 0  # 429s in a row for requests sent after their cut
    episodes: int = 0


class Pacer:
    """Shared by every worker: a global pause (rare), the window limit, the adaptive bucket."""

    def __init__(
        self,
        rate: float,
        clock: Clock,
        *,
        long_pause: float = 5.0,
        escalate_after: int = 8,
        endgame: float = 0.95,
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        now = clock.now()
        self.adaptive = AdaptiveRate(ceiling=rate)
        self.bucket = TokenBucket(rate, 1.0, now)
        self.window = WindowLimit.for_rate(rate)
        self.long_pause = long_pause
        self.escalate_after = escalate_after
        self.rng = rng or random.Random()
        self.pause = _Pause()
        self._turn = anyio.Lock()  # the workers queue here rather than all polling the bucket
        self.sent = 0  # admissions so far
        self.credit = 0.0  # creates the server's headers said it would take beyond the rate
        self._credit_seq = -1  # the ticket whose answer set the credit
        self._open: set[int] = set()  # admissions not answered yet (their seq)
        self.pauses = 0
        self.rate_limited = 0
        self.answers = 0
        self.remaining: int | None = None  # left to send, for the end game (None: unknown)
        self.endgame = endgame
        # One token, uneven arrivals: the jitter's tail refuses the odd create even well under
        # the limit, and one refused at the end waits its Retry-After past everyone else.
        self.retry_hold = 0.0  # the longest wait a 429 asked for (seconds, at most long_pause)
        self.latency = 0.0  # how long answers take (send to answer, a moving average)
        self._endgame_rate: float | None = None

    @property
    def pause_until(self) -> float:
        return self.pause.until

    def try_acquire(self, now: float, not_before: float = 0.0) -> Ticket | float:
        """Admit one create now (a Ticket), or return the seconds to wait before asking again
        (at least a microsecond, so that a clock that moves only by the waits moves)."""
        if now < max(self.pause.until, not_before):
            return max(self.pause.until - now, not_before - now, _TICK)
        rate = self.paced_rate()
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate, now)
        wait = self.window.wait(now)
        if wait > 0:
            return max(wait, _TICK)
        wait = self.bucket.try_take(now)
        if wait > 0:
            if self.credit < 1:
                self.adaptive.demand = True  # the rate, not the workers, holds creates back
                return max(wait, _TICK)
            self.credit -= 1  # the server said it has a token to spare right now
        self.window.take(now)
        self.sent += 1
        self._open.add(self.sent - 1)
        if len(self._open) > 4096:  # never answered (a transport error): long gone
            self._open = {s for s in self._open if s >= self.sent - 1024}
        return Ticket(now, rate, self.sent - 1, credit=wait > 0)

    def paced_rate(self) -> float:
        """The rate admissions go at now: the adaptive rate, a little less in the end game."""
        a = self.adaptive
        if self._endgame_rate is None:
            # A 429 now costs its request a latency there, the Retry-After, and a latency back.
            horizon = self.retry_hold + 2 * self.latency if self.retry_hold else 0.0
            if self.remaining is None or self.remaining > a.rate * horizon:
                return a.rate
            measured = max(a.cut_to or a.rate, a.hold * a.rate)  # 3% off a probe since the cut
            self._endgame_rate = min(a.rate, a.peak or a.rate, measured)
        # From here on no probing: the rate it had, less a margin, and lower after 429s.
        rate = min(a.rate, a.peak or a.rate, self._endgame_rate) * self.endgame
        if a.single_token and a.jittery(rate) and self.remaining is not None:
            rate = 1.0 / (1.0 / rate + self._margin(rate, self.remaining))
        return max(a.floor, rate)

    def _margin(self, rate: float, remaining: int) -> float:
        """One token, uneven arrivals, the end game: how much longer than 1/rate to wait
        before a create `remaining` from the end. Refused (odds p: the recent share of 429s,
        at most `jitter_share`, as more is cut; falling by e every s = the answers' spread
        of margin, the jitter's tail), it would cost what is left of the Retry-After past the
        end, c: the margin s x ln(p c / s) minimises both."""
        a = self.adaptive
        spread = a.spread()
        cost = self.retry_hold + 2 * self.latency - remaining / rate
        odds = min(a.jitter_share, max(0.01, a.refused_share()))
        if spread <= 0 or cost <= 0 or odds * cost <= spread:
            return 0.0
        return spread * math.log(odds * cost / spread)

    async def wait_until(self, when: float, stop: anyio.Event | None = None) -> bool:
        """Sleep until clock time `when` (its own Retry-After); False if `stop` was set."""
        while (wait := when - self.clock.now()) > 0:
            if stop is not None and stop.is_set():
                return False
            await self.clock.sleep(min(wait, 0.25))
        return stop is None or not stop.is_set()

    async def acquire(self, stop: anyio.Event | None = None, not_before: float = 0.0) -> Ticket | None:
        """Wait for permission to send one create; None if `stop` was set meanwhile.

        `not_before` is this request's own retry time (a Retry-After it was given).
        """
        if not await self.wait_until(not_before, stop):  # its own wait, out of the queue
            return None
        async with self._turn:  # one waiter at a time, first come first served
            while True:
                if stop is not None and stop.is_set():
                    return None
                got = self.try_acquire(self.clock.now(), not_before)
                if isinstance(got, Ticket):
                    return got
                # Short naps: a rate raised meanwhile, or a stop, is seen promptly.
                await self.clock.sleep(min(got, 0.25))

    def _answered(self, ticket: Ticket, now: float) -> None:
        self._open.discard(ticket.seq)
        took = max(0.0, now - ticket.at)
        self.latency = took if self.answers == 0 else self.latency + 0.1 * (took - self.latency)
        self.answers += 1

    def on_success(self, ticket: Ticket, hint: RateHint | None = None) -> None:
        now = self.clock.now()
        self._answered(ticket, now)
        self.adaptive.on_success(ticket, now)
        if self.adaptive.after_cut(ticket):
            self.pause.fresh_429s = 0
        self._use_hint(hint, ticket)

    def on_429(self, ticket: Ticket, retry_after: float | None, hint: RateHint | None = None) -> float:
        """Learn from a 429; return when (clock time) this request may be sent again.

        Retry-After, when given, is that time (capped at 5 minutes); without it, a jittered
        two token intervals. Every worker pauses only when 429s keep coming after cuts or the
        server asks for a long wait.
        """
        now = self.clock.now()
        self._answered(ticket, now)
        self.rate_limited += 1
        fresh = self.adaptive.after_cut(ticket)  # sent at the rate in force (before this cut)
        cut = self.adaptive.on_429(ticket, now)
        self._use_hint(hint, ticket)
        self.credit = 0.0
        quick = now - ticket.at < 1 / self.paced_rate()  # answered within one interval
        if cut or quick or self.adaptive.mostly_refused(ticket.at):
            self.bucket.spend(now)  # the server is empty now: no token waits (module docstring)
        if fresh:
            self.pause.fresh_429s += 1
        short = (2.0 / self.adaptive.rate) * (0.5 + self.rng.random())  # no Retry-After
        wait = min(max(short if retry_after is None else retry_after, 0.0), 300.0)
        self.retry_hold = max(self.retry_hold, min(wait, self.long_pause))
        long_wait = retry_after is not None and retry_after > self.long_pause
        if long_wait or (fresh and self.pause.fresh_429s >= self.escalate_after):
            if retry_after is None:  # equal jitter over the episodes of this run
                self.pause.episodes += 1
                ceiling = min(30.0, 0.5 * 2 ** min(self.pause.episodes - 1, 10))
                wait = max(wait, ceiling / 2 + self.rng.uniform(0, ceiling / 2))
            if now + wait > self.pause.until:
                self.pause.until = now + wait
                self.pauses += 1
                self.adaptive.restart_run()
            self.pause.fresh_429s = 0
        return now + wait

    def _use_hint(self, hint: RateHint | None, ticket: Ticket) -> None:
        if hint is None:
            return
        if hint.rate is not None and hint.rate > 0:
            self.adaptive.on_hint(hint.rate)
        if hint.remaining is not None and ticket.seq > self._credit_seq:
            # Tokens the server had left after this create, less the creates sent since (they
            # spend them first): what may go now beyond the paced rate, within --rate.
            # Creates sent before it and not answered yet may reach the server after it (the
            # network reorders them) and spend one of those tokens too; and one answered
            # already may have too: one token stays with the server.
            self._credit_seq = ticket.seq
            before = sum(1 for s in self._open if ticket.seq - 1024 < s < ticket.seq)
            spent = (self.sent - ticket.seq - 1) + before + 1
            self.credit = max(0.0, hint.remaining - spent)


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
