"""Pacing, driven by a fake clock: the bucket and window bounds, the pacer's --rate and ceiling
guarantees under any sequence of answers, Retry-After, escalation, headers, backoff, the
breaker; and the adaptive rate against server token buckets in the virtual-time model."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.api.pacing import (
    AdaptiveRate,
    CircuitBreaker,
    Pacer,
    Ticket,
    TokenBucket,
    WindowLimit,
    backoff_delay,
)
from launcher.sim.pacing_model import bench_concurrency, run_model, run_shape
from tests.helpers import FakeClock


def most_in_window(times: list[float], window: float) -> int:
    """The most of the sorted `times` in any half-open window [t, t + window)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < t + window:
            j += 1
        best = max(best, j - i)
    return best


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


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(min_value=0.2, max_value=300),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=200),
)
def test_window_limit_admits_at_most_floor_rate_in_any_second(rate: float, gaps: list[float]) -> None:
    limit = WindowLimit.for_rate(rate, margin=0.0)
    now, admitted = 50.0, []
    for gap in gaps:
        now += gap
        while limit.wait(now) == 0.0:
            limit.take(now)
            admitted.append(now)
    assert most_in_window(admitted, 1.0) <= max(1, int(rate + 1e-9))
    if rate < 1:  # below one a second: one per 1/rate seconds
        assert most_in_window(admitted, 1 / rate) <= 1


@dataclass
class Hint:
    rate: float | None
    remaining: int | None


answer = st.one_of(
    st.just(("ok", None, None)),
    st.tuples(st.just("429"), st.one_of(st.none(), st.floats(0, 3)), st.none()),
    st.tuples(
        st.sampled_from(["ok", "429"]),
        st.none(),
        st.builds(
            Hint, st.one_of(st.none(), st.floats(0.01, 1000)), st.one_of(st.none(), st.integers(0, 5))
        ),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=1, max_value=200),
    answers=st.lists(answer, min_size=1, max_size=150),
    latency=st.floats(min_value=0, max_value=0.4),
    seed=st.integers(0, 1000),
)
def test_pacer_never_exceeds_rate_per_second_nor_the_ceiling(
    rate: float,
    answers: list[tuple[str, float | None, Hint | None]],
    latency: float,
    seed: int,
) -> None:
    """Whatever the server answers (429s with or without Retry-After, headers announcing any
    rate), a greedy client never gets more than --rate creates into any one second, the
    adaptive rate never leaves (0, ceiling], and a retry never precedes its Retry-After."""
    clock = FakeClock()
    pacer = Pacer(rate, clock, rng=random.Random(seed))
    sends: list[float] = []
    in_flight: list[tuple[float, Ticket, tuple[str, float | None, Hint | None]]] = []
    not_before = 0.0
    for a in answers:
        while True:
            got = pacer.try_acquire(clock.now(), not_before)
            if isinstance(got, Ticket):
                break
            assert got > 0
            clock.t += got
        assert clock.now() >= not_before
        sends.append(clock.now())
        in_flight.append((clock.now() + latency, got, a))
        # Answers come back after `latency`; meanwhile the caller keeps asking.
        while in_flight and (in_flight[0][0] <= clock.now() or len(in_flight) > 8):
            due, ticket, (kind, retry_after, hint) = in_flight.pop(0)
            clock.t = max(clock.t, due)
            if kind == "ok":
                pacer.on_success(ticket, hint)
            else:
                not_before = pacer.on_429(ticket, retry_after, hint)
                if retry_after is not None:
                    assert not_before >= clock.now() + min(retry_after, 300.0) - 1e-9
            assert 0 < pacer.adaptive.rate <= rate
    assert most_in_window(sends, 1.0) <= max(1, int(rate + 1e-9))


def test_a_429_holds_back_only_its_own_request_for_retry_after() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, clock)
    first = pacer.try_acquire(clock.now())
    assert isinstance(first, Ticket)
    clock.t += 0.1
    retry_at = pacer.on_429(first, 2.0)
    assert retry_at == pytest.approx(clock.now() + 2.0)
    clock.t += 0.2
    assert isinstance(pacer.try_acquire(clock.now()), Ticket)  # the others go on
    assert pacer.try_acquire(clock.now(), retry_at) == pytest.approx(2.0 - 0.2)
    assert pacer.pause_until < clock.now()  # no global pause for one 429


def test_429s_that_keep_coming_after_cuts_pause_every_worker() -> None:
    clock = FakeClock()
    pacer = Pacer(50.0, clock, escalate_after=3)
    for _ in range(3):
        got = pacer.try_acquire(clock.now())
        while not isinstance(got, Ticket):
            clock.t += got
            got = pacer.try_acquire(clock.now())
        clock.t += 0.001
        pacer.on_429(got, 1.0)  # each was sent after the previous cut: fresh evidence
    assert pacer.pause_until == pytest.approx(clock.now() + 1.0)
    assert pacer.try_acquire(clock.now()) == pytest.approx(1.0)  # nobody sends meanwhile


def test_429s_for_creates_sent_before_the_cut_never_pause_every_worker() -> None:
    """A round trip of 429s in flight before the first cut (the first answers at 300 ms, all
    sent at --rate) is one piece of news, not eight: no pause. Counting cuts instead of
    creates sent after their cut paused every worker for a whole Retry-After here."""
    clock = FakeClock()
    pacer = Pacer(100.0, clock)
    sent = [drain(pacer, clock) for _ in range(24)]
    clock.t = sent[0].at + 0.3
    for ticket in sent:
        pacer.on_429(ticket, 1.0)
        clock.t += 0.01
    assert pacer.pauses == 0 and pacer.pause_until < clock.now()


def test_a_long_retry_after_pauses_every_worker_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(50.0, clock, long_pause=5.0)
    ticket = pacer.try_acquire(clock.now())
    assert isinstance(ticket, Ticket)
    pacer.on_429(ticket, 60.0)
    assert pacer.pause_until == pytest.approx(clock.now() + 60.0)


def test_429s_in_flight_before_a_cut_do_not_cut_again() -> None:
    ar = AdaptiveRate(ceiling=100.0)
    sent = [Ticket(1000.0 + i * 0.01, 100.0) for i in range(5)]
    assert ar.on_429(sent[0], 1000.3)
    after_first = ar.rate
    for t in sent[1:3]:  # answered after the cut, sent before it: no new information
        assert not ar.on_429(t, 1000.31)
    assert ar.rate == after_first


def test_headers_set_the_rate_and_remaining_lets_the_servers_burst_go_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(100.0, clock)
    ticket = pacer.try_acquire(clock.now())
    assert isinstance(ticket, Ticket)
    pacer.on_success(ticket, Hint(rate=20.0, remaining=0))
    assert pacer.adaptive.rate == pytest.approx(20.0)
    assert pacer.try_acquire(clock.now()) == pytest.approx(1 / 20.0)
    clock.t += 1 / 20.0 + 1e-9
    second = pacer.try_acquire(clock.now())
    assert isinstance(second, Ticket)
    # The server has 3 tokens left after `second`: two more may go now (one stays with the
    # server: an answered create may have reached it late), then the rate.
    pacer.on_success(second, Hint(rate=20.0, remaining=3))
    assert all(isinstance(pacer.try_acquire(clock.now()), Ticket) for _ in range(2))
    assert pacer.try_acquire(clock.now()) == pytest.approx(1 / 20.0)
    pacer.on_success(second, Hint(rate=1000.0, remaining=None))
    assert pacer.adaptive.rate == 100.0  # a header never lifts the rate above --rate


@pytest.mark.parametrize(
    ("limit", "burst", "retry_after", "latency"),
    [
        (20, 5, "seconds", 0.0),
        (20, 5, "none", 0.0),
        (50, 10, "seconds", 0.2),
        (5, 1, "seconds", 0.0),
        (2, 1, "http-date", 0.1),
        (10, 10, "http-date", 0.05),
        (3, 3, "seconds", 0.3),
        (8, 8, "none", 0.2),
        (40, 40, "seconds", 0.0),
        (75, 20, "seconds", 0.1),
        (100, 10, "none", 0.1),
        (10, 1, "none", 0.0),
        (3, 1, "none", 0.3),
        (50, 50, "seconds", 0.3),
    ],
)
def test_the_adaptive_rate_finds_and_holds_an_unknown_limit(
    limit: int, burst: int, retry_after: str, latency: float
) -> None:
    """In virtual time (no start-up, no scheduler): 300 creates at >= 0.9 of the server's
    limit, few 429s, never more than the concurrency in flight."""
    concurrency = bench_concurrency(limit, latency)
    out = run_shape(limit, burst, retry_after, latency)
    assert out.created == 300
    assert out.efficiency(limit) >= 0.9, out.efficiency(limit)
    assert out.rate_limited <= 0.1 * 300  # most of them in the first round trip
    assert out.max_in_flight <= concurrency
    assert max(out.rates) <= max(100.0, 2 * limit)


def bound(limit: float, burst: int, latency: float, jitter: float = 0.0005, n: int = 300) -> float:
    """The best efficiency any client can reach (bench/pacing_sweep.py), at most 1."""
    best = (n - burst) / limit + 2 * latency
    if burst == 1:  # a one-token server refuses a create that arrives a jitter early
        best = max(best, (n - 1) * (1 / limit + jitter) + 2 * latency)
    return min(1.0, (n / limit) / best)


@pytest.mark.parametrize(
    ("limit", "burst", "retry_after", "latency"),
    [
        (100, 1, "seconds", 0.3),  # was 0.82 of the bound: a stall after the first round trip
        (75, 1, "none", 0.2),  # was 0.86: no end game without Retry-After
        (20, 2, "seconds", 0.2),  # was 0.94: a round trip of 429s paused every worker
        (35, 2, "seconds", 0.3),  # was 0.91: a stall read as a low limit, slow recovery
        (75, 18, "seconds", 0.3),  # was 0.83 in one seed: the end game from a probed-up rate
        (50, 1, "seconds", 0.3),  # was 0.87 in one seed
    ],
)
def test_one_token_and_small_buckets_reach_095_of_the_bound(
    limit: int, burst: int, retry_after: str, latency: float
) -> None:
    for seed in range(3):
        out = run_shape(limit, burst, retry_after, latency, seed=seed)
        assert out.created == 300
        assert out.efficiency(limit) >= 0.95 * bound(limit, burst, latency), (seed, out.elapsed)


def test_headers_mean_no_probing_and_no_429s() -> None:
    out = run_model(n=300, limit=20, burst=5, latency=0.05, rate=100, headers=True)
    assert out.rate_limited <= 5  # only before the first answer arrived
    assert out.efficiency(20) >= 0.95


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


def test_circuit_breaker_opens_after_consecutive_failures_and_success_closes() -> None:
    cb = CircuitBreaker(threshold=3)
    assert not cb.record(False)
    assert not cb.record(False)
    assert not cb.record(True)  # reset
    assert not cb.record(False)
    assert not cb.record(False)
    assert cb.record(False)


def drain(pacer: Pacer, clock: FakeClock) -> Ticket:
    """The next admission, moving the fake clock by the waits."""
    got = pacer.try_acquire(clock.now())
    while not isinstance(got, Ticket):
        clock.t += got
        got = pacer.try_acquire(clock.now())
    return got


def test_the_end_game_slows_down_once_the_rest_fits_in_a_retry_after_and_stays_there() -> None:
    """Once what is left would be sent within one Retry-After, a 429 would hold its request
    past everyone else's end: the rate drops by a margin and probes no more."""
    clock = FakeClock()
    pacer = Pacer(20.0, clock)
    pacer.remaining = 100
    first = drain(pacer, clock)
    clock.t += 0.01
    pacer.on_429(first, 1.0)  # Retry-After 1 s: a 429 costs its request a second
    rate = pacer.adaptive.rate
    assert pacer.paced_rate() == rate  # 100 left: 5 s of work, more than the hold
    pacer.remaining = 19  # under a second at this rate
    assert pacer.paced_rate() == pytest.approx(0.95 * rate)
    for _ in range(60):  # accepted creates would probe the rate up: the end game holds
        t = drain(pacer, clock)
        pacer.adaptive.demand = True
        pacer.on_success(t)
    assert pacer.adaptive.rate > rate  # it did probe ...
    assert pacer.paced_rate() == pytest.approx(0.95 * rate)  # ... but sends do not follow
    gaps = [drain(pacer, clock).at for _ in range(3)]
    assert gaps[2] - gaps[1] == pytest.approx(1 / (0.95 * rate))


def test_without_a_retry_after_the_end_game_spans_the_short_wait_and_two_latencies() -> None:
    """A 429 without Retry-After holds its request for a short jittered wait, and it costs a
    latency to learn of it and one to send it again: the end game starts once what is left
    fits in that (it used to start never, and the last 429 cost a round trip)."""
    clock = FakeClock()
    pacer = Pacer(20.0, clock)
    first = drain(pacer, clock)
    clock.t += 0.25  # the answer takes 250 ms
    pacer.on_429(first, None)
    rate = pacer.adaptive.rate
    assert 0 < pacer.retry_hold < 0.2  # its own short wait: two token intervals, jittered
    horizon = rate * (pacer.retry_hold + 2 * 0.25)
    pacer.remaining = math.floor(horizon) + 1
    assert pacer.paced_rate() == rate
    pacer.remaining = math.floor(horizon)
    assert pacer.paced_rate() == pytest.approx(0.95 * rate)


def test_what_the_server_accepted_counts_the_refill_during_a_pause() -> None:
    """Between two 429s the bucket went from empty to empty: what it accepted in between is
    its limit times the span, a pause included (what refilled then was spent after it)."""
    ar = AdaptiveRate(ceiling=100.0)
    t = 1000.0
    answers = [(t, False)]  # a 429: empty here
    answers += [(t + 0.02 * i, True) for i in range(1, 11)]  # 10 accepted in 0.2 s
    answers += [(t + 1.2 + 0.02 * i, True) for i in range(10)]  # a 1 s pause, then 10 more
    answers.append((t + 1.4, False))  # empty again
    for at, ok in answers:
        ticket = Ticket(at, 50.0)
        if ok:
            ar.on_success(ticket, at + 0.1)
        else:
            ar._record(ticket, False, at + 0.1)
    # 20 accepted over 1.4 s: 14.3/s (the old measure left the pause out: 20 / 0.4 = 50/s)
    assert ar.accepted_rate(t, t + 1.4) == pytest.approx(20 / 1.4)


def test_one_token_buckets_are_not_taken_at_half_what_they_accept() -> None:
    """A one-token server just under the rate accepts every other create: half the rate is
    only a lower bound. In the model of apply the rate settles near the limit, never at half."""
    limit, rate = 40.0, 50.0
    out = run_model(n=300, limit=limit, burst=1, latency=0.0, rate=rate, retry_after="none")
    assert out.created == 300
    assert min(out.rates[50:]) > 0.7 * limit  # never down at half
    assert out.efficiency(limit) >= 0.9


def one_token(limit: float, sends: list[float], latency: float = 0.3) -> AdaptiveRate:
    """An adaptive rate that heard a one-token server of `limit` answer creates sent at 100/s
    at `sends`: it takes a create only 1/limit after the one it took last."""
    ar = AdaptiveRate(ceiling=100.0)
    last_ok = -math.inf
    for at in sends:
        if at - last_ok >= 1 / limit:
            last_ok = at
            ar.on_success(Ticket(at, 100.0), at + latency)
        else:
            ar.on_429(Ticket(at, 100.0), at + latency)
    return ar


def test_a_one_token_cut_goes_to_the_shortest_accepted_gap_and_aims_at_the_longest_refused() -> None:
    """One token, 35/s, sent at 100/s: every third create goes through (30 ms apart) and the
    two between are refused (10 and 20 ms after one). The limit is at least 1/30 ms and below
    1/20 ms: the cut goes to the first (no guess above what went through), and the peak the
    rate recovers towards to the second."""
    ar = one_token(35.0, [1000.0 + i * 0.010 for i in range(15)])
    assert ar.single_token
    assert ar.rate == pytest.approx(1 / 0.030)  # what went through: at least the limit
    assert ar.peak == pytest.approx(1 / 0.020)  # refused 20 ms after one: the limit is below
    # Sends that stop a while (every worker waiting on an answer) change nothing: the gaps
    # are the same, though accepted / time would read as a far lower limit.
    paused = [1000.0 + i * 0.010 for i in range(6)] + [1000.3 + i * 0.010 for i in range(9)]
    assert one_token(35.0, paused).rate == pytest.approx(1 / 0.030)


def test_after_a_deep_cut_the_rate_comes_back_to_the_limit_quickly() -> None:
    """After a measured cut the rate returns towards what was measured in tens of creates,
    not hundreds (the slow probe is for just above the limit)."""
    ar = AdaptiveRate(ceiling=100.0, rate=30.0, cuts=1, peak=60.0)
    t = 1000.0
    for i in range(30):
        ar.demand = True
        ar.on_success(Ticket(t + i * 0.03, ar.rate), t + i * 0.03)
    assert ar.rate > 0.9 * ar.hold * 60.0
    for i in range(30, 60):  # at the target, only the slow probe remains
        ar.demand = True
        ar.on_success(Ticket(t + i * 0.03, ar.rate), t + i * 0.03)
    assert ar.rate < 1.05 * ar.hold * 60.0


def test_waiters_queue_first_come_first_served_and_a_retry_waits_outside_the_queue() -> None:
    """One waiter at a time polls the bucket, the others queue in order; a request waiting
    out its own Retry-After does not hold the queue up meanwhile."""
    import anyio

    clock = FakeClock()
    pacer = Pacer(10.0, clock)
    order: list[str] = []

    async def waiter(name: str, not_before: float = 0.0) -> None:
        ticket = await pacer.acquire(not_before=not_before)
        assert ticket is not None
        order.append(name)

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter, "retry", clock.now() + 2.0)  # first in, but not before 2 s
            await anyio.lowlevel.checkpoint()
            for name in "abcd":
                tg.start_soon(waiter, name)
                await anyio.lowlevel.checkpoint()

    anyio.run(clock.run, go)
    assert order == ["a", "b", "c", "d", "retry"]
    assert clock.now() == pytest.approx(1000.0 + 2.0)


def test_a_real_sleep_spins_out_its_last_stretch_and_never_ends_early() -> None:
    """The real clock's sleep yields to the loop until its deadline (a timer cannot wake that
    precisely): it never returns before it. Its time source stepped by hand, 0.4 ms a read, so
    no test time depends on the machine."""
    import anyio

    from launcher.api.pacing import MonotonicClock

    class Stepped(MonotonicClock):
        def __init__(self) -> None:
            self.t, self.reads = 100.0, 0

        def now(self) -> float:
            self.reads += 1
            self.t += 0.0004
            return self.t

    async def go() -> list[tuple[float, int]]:
        clock = Stepped()
        out = []
        for want in (0.0, 0.0005, 0.0015, 0.0041):  # the last sleeps on a timer (2.6 ms real) first
            clock.reads = 0
            deadline = clock.t + 0.0004 + want  # what its first read will make of it
            await clock.sleep(want)
            out.append((clock.t - deadline, clock.reads))
        return out

    (late0, reads0), *rest = anyio.run(go)
    assert late0 >= 0 and reads0 == 2  # nothing to wait: one read for the deadline, one past it
    for late, reads in rest:
        assert 0 <= late < 0.0004  # never early, and out at the first read past the deadline
        assert reads >= 3  # it spun: read the clock again after yielding


def test_a_429_after_a_steady_stretch_goes_back_to_what_the_bucket_refilled() -> None:
    """Just above the limit a bucket of many tokens drains slowly: a 429 every few seconds.
    Between two of them it was empty at both ends, so what it accepted in between is its
    limit: the cut lands there (just under it), not 3% under a rate that is still too high."""
    limit, rate = 20.0, 20.8
    ar = AdaptiveRate(ceiling=100.0, rate=rate)
    t = 1000.0
    for i in range(5):  # its burst first: a bucket of five tokens
        ar.on_success(Ticket(t - 0.5 + 0.01 * i, rate), t - 0.5 + 0.01 * i + 0.001)
    ar.on_429(Ticket(t, rate), t + 0.001)  # empty here
    assert not ar.single_token
    sends = [t + 0.05 * i for i in range(1, 60)]  # 59 accepted in 3 s: 20/s, as the bucket
    for at in sends:
        ar.on_success(Ticket(at, rate), at + 0.001)
    assert ar.on_429(Ticket(t + 3.0, rate), t + 3.001)  # empty again
    assert ar.rate == pytest.approx((59 - 1) / 3.0)  # the refill, a lower bound of the limit
    assert 0.95 * limit < ar.rate < limit < ar.hold * rate


def test_a_one_token_server_that_took_most_creates_only_draws_a_step_back() -> None:
    """Near its limit a one-token bucket refuses the odd early create (jitter): most still go
    through, so it is not the every-other pattern of a rate well above it. A step back."""
    ar = AdaptiveRate(ceiling=100.0, rate=49.3)
    ar.on_success(Ticket(999.9, 49.3), 999.901)
    ar.on_429(Ticket(1000.0, 49.3), 1000.001)  # at most one through before: one token
    assert ar.single_token
    rate = ar.rate
    for i in range(1, 21):  # 20 of 20 accepted since: just under the limit
        at = 1000.0 + i / rate
        ar.on_success(Ticket(at, rate), at + 0.001)
    at = 1000.0 + 21 / rate
    assert ar.on_429(Ticket(at, rate), at + 0.001)  # one early arrival
    assert ar.rate == pytest.approx(ar.hold * rate)


def settled_one_token(rtt_spread: float, accepted: int = 60) -> tuple[AdaptiveRate, float]:
    """An adaptive rate that found a one-token server (first 429 at 100/s, cut to 76.9/s) and
    then had `accepted` creates at that pace accepted, answered after 1 ms plus up to
    `rtt_spread` (spread evenly); returns it and the send time of the next create."""
    ar = AdaptiveRate(ceiling=100.0)
    ar.on_success(Ticket(999.98, 100.0), 999.981)
    assert ar.on_429(Ticket(999.99, 100.0), 999.991)
    assert ar.single_token
    rate = ar.rate
    at = 1000.0
    for i in range(accepted):
        at = 1000.0 + i / rate
        ar.on_success(Ticket(at, rate), at + 0.001 + rtt_spread * (i % 10) / 9)
    return ar, at + 1 / rate


def test_one_token_a_rare_429_at_the_pace_is_jitter_when_answers_come_back_unevenly() -> None:
    """Creates sent at the pace that most often go through, refused once in fifty, while
    answers come back a sizeable share of an interval unevenly: the arrival jitter (a create
    a little early after one a little late), not the limit. No cut, and probing goes on; with
    answers as even as a clock's ticks the same 429 is the limit and steps the rate back."""
    ar, at = settled_one_token(rtt_spread=0.004)  # 4 ms of a 13 ms interval
    rate = ar.rate
    assert ar.jittery()
    assert not ar.on_429(Ticket(at, rate), at + 0.001)
    assert ar.rate == rate
    for i in range(1, 11):  # and accepted creates still probe up
        ar.demand = True
        ar.on_success(Ticket(at + i / rate, rate), at + i / rate + 0.001)
    assert ar.rate > rate

    even, at = settled_one_token(rtt_spread=0.0001)
    rate = even.rate
    assert not even.jittery()
    assert even.on_429(Ticket(at, rate), at + 0.001)
    assert even.rate == pytest.approx(even.hold * rate)


def test_one_token_jitter_is_judged_on_the_answers_at_the_pace_in_force() -> None:
    """Twenty-odd creates after a cut, all but one accepted, answers uneven: the 429 is the
    jitter at this pace, whatever the faster pace before the cut drew (its 429s said that
    pace was too fast, not this one). It used to cut 3% whenever a 429 came within 30
    accepted creates of the last cut: on a loaded machine, where one create in twenty is
    refused at the best pace, the rate stepped down 3% at a time from 92/s to 76/s (the
    model's 100/s one-token server under bench/pacing_sweep.py --spikes 0.1)."""
    ar, at = settled_one_token(rtt_spread=0.004, accepted=24)  # 4 ms of a 10 ms interval
    rate = ar.rate
    assert ar.jittery()
    assert not ar.on_429(Ticket(at, rate), at + 0.001)  # 1 in 25 at this pace
    assert ar.rate == rate
    # Two in the same 25: more than jitter explains at this pace, a step back.
    ar, at = settled_one_token(rtt_spread=0.004, accepted=23)
    rate = ar.rate
    assert not ar.on_429(Ticket(at, rate), at + 0.001)  # 1 in 24
    assert ar.on_429(Ticket(at + 1 / rate, rate), at + 1 / rate + 0.001)
    assert ar.rate < rate
    # Too few answers at this pace to tell: a step back, as before.
    ar, at = settled_one_token(rtt_spread=0.004, accepted=10)
    rate = ar.rate
    assert ar.on_429(Ticket(at, rate), at + 0.001)
    assert ar.rate < rate


def test_one_token_429s_more_often_than_jitter_explains_still_cut() -> None:
    """Jitter or not, a share of refusals above `jitter_share` means the pace is too fast."""
    ar, at = settled_one_token(rtt_spread=0.004)
    rate = ar.rate
    refused = [at + i / rate for i in range(3)]  # 3 of the last 50 refused: over 5%
    assert not ar.on_429(Ticket(refused[0], rate), refused[0] + 0.001)
    assert not ar.on_429(Ticket(refused[1], rate), refused[1] + 0.001)
    assert ar.on_429(Ticket(refused[2], rate), refused[2] + 0.001)
    assert ar.rate < rate


def test_one_token_with_uneven_arrivals_the_end_game_widens_the_last_gaps() -> None:
    """One token, answers coming back unevenly: a create refused at the end waits its
    Retry-After past everyone else, so the last gaps get a margin of a few spreads of the
    answers' times (by how likely a refusal is and what it would cost), widest for the last
    create, and none while the rest is long."""
    clock = FakeClock()
    pacer = Pacer(100.0, clock)
    first = drain(pacer, clock)
    clock.t += 0.001
    pacer.on_success(first)
    second = drain(pacer, clock)
    clock.t += 0.001
    pacer.on_429(second, 1.0)  # one token: Retry-After 1 s
    for i in range(60):  # answers 1-5 ms after their send
        t = drain(pacer, clock)
        clock.t += 0.001 + 0.004 * (i % 10) / 9
        pacer.on_success(t)
    assert pacer.adaptive.single_token and pacer.adaptive.jittery()
    plain = min(pacer.adaptive.rate, pacer.adaptive.peak or math.inf)
    pacer.remaining = 1000
    assert pacer.paced_rate() == pacer.adaptive.rate  # far from the end: no margin
    rates = []
    for left in (60, 30, 1):
        pacer.remaining = left
        rates.append(pacer.paced_rate())
    assert rates[0] <= 0.95 * plain * 1.0001
    assert rates[0] > rates[1] > rates[2]  # the closer to the end, the wider
    assert 1 / rates[2] - 1 / (0.95 * plain) > 0.5 * pacer.adaptive.spread()


def test_the_end_game_judges_the_answers_spread_at_its_own_pace_not_a_probed_up_rate() -> None:
    """In the end game the adaptive rate may still probe up (the pace no longer follows it),
    which shortens its interval: answers as even as the model's 0.5 ms jitter, under 5% of
    the pace actually kept, then read as uneven and widened the last gaps by a jitter margin
    (2 ms a create at 100/s: 0.942 of the sweep's bound in the worst seed, from 0.955)."""
    bound = (300 / 100) / ((300 - 1) * (1 / 100 + 0.0005))  # bench/pacing_sweep.py's, one token
    for seed in range(3):
        out = run_shape(100, 1, "http-date", 0.0, seed=seed)
        assert out.created == 300
        assert out.efficiency(100) >= 0.95 * bound, (seed, out.efficiency(100))
        last = [b - a for a, b in zip(out.sends[-20:], out.sends[-19:], strict=False)]
        assert max(last) < 0.012  # 0.95 x the rate: no jitter margin on top


@pytest.mark.parametrize(
    ("limit", "retry_after", "latency"), [(75, "seconds", 0.1), (75, "http-date", 0.0)]
)
def test_one_token_on_a_loaded_machine_loses_little_to_jitter(
    limit: int, retry_after: str, latency: float
) -> None:
    """The model with a loaded machine's arrival jitter (1 ms even, and one create in ten
    later by 2 ms on average, as bench/pacing_bench.py --trace measured): the rare 429 a
    late create causes no longer sets the pace for the rest of the run (was 0.667 and 0.716
    in the worst of three seeds; the best schedule for those delays reaches 0.81-0.87)."""
    for seed in range(3):
        out = run_shape(limit, 1, retry_after, latency, jitter=0.001, spikes=0.1, seed=seed)
        assert out.created == 300
        assert out.efficiency(limit) >= 0.76, (seed, out.efficiency(limit))


def test_remaining_counts_creates_still_in_flight_and_a_429_on_it_keeps_the_announced_rate() -> None:
    """A create answered with Remaining 3 while one sent before it is still in flight: that
    one may reach the server after it (the network reorders), so it spends a token of the
    three too. A 429 for a create sent on that credit says the credit was wrong, not the
    announced rate: the trust in the rate stays (it used to fall 3% for each, for good: k of
    bench/pacing_bench.py ended at 0.58 of the announced rate after 18 of them)."""
    clock = FakeClock()
    pacer = Pacer(100.0, clock)
    first = drain(pacer, clock)
    pacer.on_success(first, Hint(rate=20.0, remaining=4))
    a = drain(pacer, clock)  # on credit: tokens the server reported
    b = drain(pacer, clock)
    assert a.credit and b.credit and a.at == b.at == first.at
    pacer.on_success(b, Hint(rate=20.0, remaining=3))  # b answered first; a still out
    assert pacer.credit == 3 - 1 - 1  # a, and one kept with the server
    c = drain(pacer, clock)
    assert c.credit and c.at == b.at
    clock.t += 0.001
    pacer.on_429(c, 1.0, Hint(rate=20.0, remaining=0))
    assert pacer.adaptive.hint_trust == 1.0
    assert pacer.adaptive.rate == pytest.approx(20.0)
    paced = drain(pacer, clock)  # paced at the announced rate, and refused: trust falls
    assert not paced.credit
    pacer.on_429(paced, 1.0, Hint(rate=20.0, remaining=0))
    assert pacer.adaptive.hint_trust == pytest.approx(pacer.adaptive.hold)
