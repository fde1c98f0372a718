"""The adaptive rate: finds and holds an unknown server rate limit from the answers to the
creates `Pacer` (launcher/api/pacing.py) admitted, each a `Ticket` (send time, the rate it was
paced at), kept by send time so that latency never blurs what they measure.

- A 429 means the server's bucket was empty when that create arrived. The first one after a
  settled period (30 creates accepted since the last cut) starts a *run* and steps the rate
  back to 0.97 x the rate it was sent at (its *peak*: the limit is just below), or, when an
  earlier 429 is known, to what the bucket refilled between the two (empty at both ends: a
  lower bound of the limit, at most 10% down), so the rate does not stay above the limit
  while a bucket of many tokens drains slowly.
- If 429s keep coming within the run, the rate goes to what the server accepted between the
  run's first 429 and this one: its bucket was empty at both, so accepted / the span between
  them is its limit, pauses included (what refilled during a pause was spent after it).
  Before 8 are accepted, (accepted + 1) / span, so a cut is never deeper than needed; at most
  to a tenth at once. The same count over the time creates were going out (a gap counts up to
  1.5 intervals) becomes the peak: a stall with every slot in flight refills a small bucket
  only to its size, and would read as a low limit. 429s for creates sent before a cut cut
  again only when the measure is 30% below the rate (saves a round trip of 429s at 300 ms);
  they empty the client's bucket only when answered within an interval or when 4 in 5 answers
  of the run are refused (else, at high latency, the next creates would wait an interval
  after each, and the server idle after the train).
- One token (at most one create went through before the first 429): the server takes a
  create only once 1 / limit has passed since the one it took last, and wastes what refills
  while the next is on its way (just above the limit, half are refused). So gaps, not
  counts, measure it: an accepted create sent g after the previous accepted one says
  limit >= 1 / g, a refused one limit < 1 / g. The cut goes to the run's shortest accepted
  gap (a rate that went through), the peak to its longest refused gap, and recovery aims at,
  and probing stops at 0.99 x, the lower of the peak and the rate of the latest 429, for 160
  accepted creates. Measured by gaps, workers that all waited a while (a pause, every slot
  in flight) do not read as a low limit.
- Between two 429s the bucket refilled more than (accepted - 1): a lower bound of the limit
  that no cut goes under.
- Back up: after a cut, each accepted create closes a tenth of the way to 0.97 x the peak;
  from there it probes by 0.075% per accepted create while creates wait on the rate, doubling
  every 40 accepted since the cut, at most 0.5% (the limit may have moved up).
- Uneven arrivals (one token): on a loaded machine creates do not reach the server as evenly
  as they leave, and a one-token server refuses a create that follows a late one closely.
  A 429 for a create sent at the pace in force is that jitter, not the limit, when the
  answers come back unevenly (the p5-p95 of their send -> answer times at least 5% of an
  interval) and at most 1 in 20 of the answers at that pace (sent since the last cut, the
  last 50, at least 20 of them) was refused: no cut, and probing goes on past it. 429s drawn
  by a faster pace before the cut do not count against this one. More refusals cut as above.
- Rate-limit headers set the rate directly (quota / window, no probing); a 429 for a create
  sent at that rate (not on the Remaining credit `Pacer` keeps) lowers their trust by 3%.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol


class RateHint(Protocol):
    """What an answer's rate-limit headers said (the API client parses them)."""

    @property
    def rate(self) -> float | None: ...  # sustained creates/s the server allows

    @property
    def remaining(self) -> int | None: ...  # creates it allows right now


@dataclass(frozen=True)
class Ticket:
    """One admission: when it was sent and the rate it was paced at."""

    at: float
    rate: float
    seq: int = 0  # admissions before this one
    credit: bool = False  # sent beyond the rate, on the tokens the server's headers reported


@dataclass
class AdaptiveRate:
    """Finds and holds an unknown server rate limit (see the module docstring)."""

    ceiling: float  # the configured --rate: never exceeded
    floor: float = 0.05
    hold: float = 0.97  # after a 429: this fraction of the rate that drew it
    probe: float = 0.00075  # first step up per accepted create after a cut (fraction of rate)
    probe_doubling: int = 40  # accepted creates without a 429 that double the step
    probe_max: float = 0.005  # the largest step (a server's burst hides an overshoot a while)
    window: float = 60.0  # send-time seconds of evidence kept
    settled: int = 30  # accepted creates after a cut after which a 429 means "just above"
    min_answers: int = 4  # answers in a run of 429s before their accepted share is used
    min_measured: int = 8  # accepted in a run before its rate is taken as measured
    rate: float = 0.0
    limit: float | None = None  # a lower bound of the server's limit, creates/s
    hint: float | None = None  # the rate the server's headers announced
    hint_trust: float = 1.0  # fraction of the announced rate used; 429s shrink it
    cuts: int = 0
    peak: float | None = None  # just above the limit: a fresh 429's rate, or a run's measure
    recover: float = 0.1  # after a cut, each accepted create closes this share of the way back
    jitter_share: float = 0.05  # one token: refused this rarely at the pace is arrival jitter
    recent: int = 50  # the answers (by send time) that share is taken over
    jitter_answers: int = 20  # ... or fewer, at least this many, when all sent at the pace
    jitter_width: float = 0.05  # ... when answer times vary by this share of an interval
    single_token: bool | None = None  # the server's bucket holds one token (seen at its first 429)
    demand: bool = False  # creates waited for the rate since the last step up (else no probe)
    cut_to: float | None = None  # the rate the last cut went to (below the limit, measured)
    _cut_at: float = -math.inf  # tickets sent before this were paced at a rate already cut
    _since_cut: int = 0  # accepted creates sent after the last cut
    _run_start: float = -math.inf  # send time of the first 429 of the current run
    _drew: float | None = None  # the rate of the latest create answered 429 (sent after a cut)
    # Answers by send time: (sent, accepted, paced rate); and 429 send times, both sorted.
    _answers: list[tuple[float, bool, float]] = field(default_factory=list)
    _limited: list[float] = field(default_factory=list)
    _rtts: deque[float] = field(default_factory=lambda: deque(maxlen=50))  # send -> answer

    def __post_init__(self) -> None:
        self.rate = min(self.ceiling, self.rate or self.ceiling)
        self.floor = min(self.floor, self.ceiling)

    def _clamp(self, rate: float) -> float:
        return min(self.ceiling, max(self.floor, rate))

    def _record(self, ticket: Ticket, accepted: bool, now: float) -> None:
        bisect.insort(self._answers, (ticket.at, accepted, ticket.rate))
        self._rtts.append(now - ticket.at)
        if not accepted:
            bisect.insort(self._limited, ticket.at)
        old = now - self.window
        if self._answers[0][0] < old:
            del self._answers[: bisect.bisect_left(self._answers, (old,))]
            del self._limited[: bisect.bisect_left(self._limited, old)]

    def on_success(self, ticket: Ticket, now: float) -> None:
        self._record(ticket, True, now)
        if ticket.at >= self._cut_at:
            self._since_cut += 1
        if self.hint is not None:
            return
        if ticket.at >= self._cut_at and self.cuts and self.demand:
            self.demand = False
            target = self.hold * (self.peak or self.rate)
            if self.rate < target * 0.995:  # a deep cut: back towards the limit quickly
                self.rate = self._clamp(self.rate + (target - self.rate) * self.recover)
                return
            near = self._drew is not None and self.rate >= 0.99 * self._drew
            held = near and self._since_cut < 4 * self.probe_doubling
            if self.single_token and held and not self._jitter_only(ticket.at, 0.5):
                return  # one token: just above the limit, half the creates are refused
            step = self.probe * 2 ** (self._since_cut / self.probe_doubling)
            self.rate = self._clamp(self.rate * (1 + min(step, self.probe_max)))

    def accepted_rate(self, since: float, until: float, *, busy: bool = False) -> float | None:
        """What the server accepts per second, from the answers to creates sent in
        [since, until] (a run of 429s: its bucket was empty at `since`): accepted / sending
        time. With fewer than `min_measured` accepted, (accepted + 1) / time: the most it
        could have accepted, so a cut to it is never deeper than needed. `busy`: the time
        counts only while creates left at their pace (a gap is counted up to 1.5 intervals)."""
        lo = bisect.bisect_left(self._answers, (since,))
        hi = bisect.bisect_right(self._answers, (until, True, math.inf))
        answers = self._answers[lo:hi]
        if len(answers) < self.min_answers:
            return None
        # The bucket was empty at both ends (each a 429): what it accepted in between is what
        # it refilled, pauses included (a refill during a pause is spent after it).
        paced = answers[-1][0] - answers[0][0]
        if busy:
            paced = sum(min(b[0] - a[0], 1.5 / b[2]) for a, b in itertools.pairwise(answers))
        accepted = sum(1 for _, ok, _ in answers[1:] if ok)
        if paced <= 0:
            return None
        return (accepted if accepted >= self.min_measured else accepted + 1) / paced

    def _gaps(self, since: float, until: float) -> tuple[float | None, float | None]:
        """For creates sent in [since, until]: the shortest send-time gap from the previous
        accepted create to an accepted one, and the longest to a refused one (None when
        there is none)."""
        lo = bisect.bisect_left(self._answers, (since,))
        hi = bisect.bisect_right(self._answers, (until, True, math.inf))
        prev = next((self._answers[j][0] for j in range(lo - 1, -1, -1) if self._answers[j][1]), None)
        ok_gap: float | None = None
        refused_gap: float | None = None
        for at, ok, _ in self._answers[lo:hi]:
            if prev is not None and at > prev:
                g = at - prev
                if ok:
                    ok_gap = g if ok_gap is None else min(ok_gap, g)
                else:
                    refused_gap = g if refused_gap is None else max(refused_gap, g)
            if ok:
                prev = at
        return ok_gap, refused_gap

    def _lower_bound(self, sent: float) -> None:
        """Between the previous 429 and this one the server's bucket refilled more than n - 1
        tokens (it was empty at both): (n - 1) / span is a lower bound of its limit."""
        i = bisect.bisect_left(self._limited, sent)
        if i == 0:
            return
        s_a = self._limited[i - 1]
        lo = bisect.bisect_right(self._answers, (s_a, True, math.inf))
        hi = bisect.bisect_left(self._answers, (sent,))
        n = sum(1 for _, ok, _ in self._answers[lo:hi] if ok)
        if n >= 2 and sent > s_a:
            b = (n - 1) / (sent - s_a)
            self.limit = b if self.limit is None else max(self.limit, b)

    def on_429(self, ticket: Ticket, now: float) -> bool:
        """Learn from a 429 and lower the rate if it tells something new; True if cut."""
        self._record(ticket, False, now)
        if self.single_token is None:  # how many creates its full bucket took before this
            before = bisect.bisect_left(self._answers, (ticket.at,))
            self.single_token = sum(1 for _, ok, _ in self._answers[:before] if ok) <= 1
        self._lower_bound(ticket.at)
        fresh = ticket.at >= self._cut_at
        settled = not self.cuts or self._since_cut >= self.settled
        if self.single_token and fresh and self.cuts and self._jitter_only(ticket.at, paced=True):
            # Held a while, and refused as rarely as the arrival jitter makes a one-token
            # server refuse creates sent at the pace: not the limit. No cut, no faster probe.
            self._since_cut = self.settled
            return False
        if fresh:  # a new run resets the peak: the limit may have moved either way
            self._drew = ticket.rate
            renew = settled or self.peak is None
            self.peak = ticket.rate if renew else min(self.peak or ticket.rate, ticket.rate)
        if fresh and (settled or self._run_start == math.inf):
            self._run_start = ticket.at  # a first 429 after a settled period starts a run
        est = self.accepted_rate(self._run_start, ticket.at)
        cap = self.hold * ticket.rate
        # The most the limit can be, by what was measured: counted while creates went out.
        top = self.accepted_rate(self._run_start, ticket.at, busy=True)
        if est is not None and self.single_token:
            # One token: gaps, not counts (module docstring). The cut goes to the run's
            # shortest accepted gap, recovery aims at its longest refused one.
            ok_gap, refused_gap = self._gaps(self._run_start, ticket.at)
            top = None if refused_gap is None else 1.0 / refused_gap
            if ok_gap is not None:
                est = 1.0 / ok_gap
            elif top is not None:
                est = min(est, top)  # at most one went through: below the refused gaps' rate
            if est is not None and top is not None:
                top = max(top, est)  # jitter can make the two overlap
        at_hint = self.hint is not None and ticket.rate <= self.hint * self.hint_trust * 1.001
        if fresh and at_hint and not ticket.credit:
            self.hint_trust *= self.hold  # sent at what the headers said, and refused anyway
        if not fresh:
            # In flight before the last cut, which answered it; unless the run's answers
            # already show the rate is far too high (saves a round trip of 429s).
            if est is None or est * 1.3 >= self.rate:
                return False
            new = max(ticket.rate * 0.1, est)
        elif settled and self.limit is not None and not self.single_token and self.hint is None:
            # Held the rate a while, just above the limit: back to what the bucket refilled
            # between the last two 429s (empty at both), at most 10% down.
            new = min(cap, max(self.limit, 0.9 * ticket.rate))
        elif settled or self.hint is not None or est is None:
            new = cap  # held the rate a while: just above the limit, step back a little
        else:  # 429s keep coming: go to what the server accepts (at most a tenth at once)
            new = max(ticket.rate * 0.1, min(cap, est))
        if self.limit is not None:
            new = max(new, min(cap, self.limit))  # never below what it measurably accepts
        self.rate = self._clamp(min(self.rate, new))
        self.cut_to = self.rate
        if top is not None and (not fresh or not settled):
            self.peak = min(self.peak or top, top)  # measured: recover to it, probe beyond
        self._cut_at = now
        self._since_cut = 0
        self.cuts += 1
        return True

    def spread(self) -> float:
        """How unevenly answers come back: the p5-p95 of the last 50 send -> answer times
        (0.0 before 20); creates arrive at least about as unevenly."""
        if len(self._rtts) < 20:
            return 0.0
        rtts = sorted(self._rtts)
        return rtts[round(0.95 * (len(rtts) - 1))] - rtts[round(0.05 * (len(rtts) - 1))]

    def jittery(self, rate: float | None = None) -> bool:
        """Whether that spread is at least `jitter_width` of an interval (at `rate`, else at
        the adaptive rate)."""
        return self.spread() >= self.jitter_width / (rate or self.rate)

    def refused_share(self) -> float:
        """The share of the last `recent` answers (by send time) that were refused."""
        recent = self._answers[-self.recent :]
        return sum(1 for _, ok, _ in recent if not ok) / len(recent) if recent else 0.0

    def _jitter_only(self, until: float, scale: float = 1.0, *, paced: bool = False) -> bool:
        """Whether answers come back unevenly enough (their send -> answer times' p5-p95 at
        least `jitter_width` of an interval) for arrival jitter to explain the odd 429, and at
        most `scale` x `jitter_share` of the last `recent` answers sent up to `until` were
        refused (and there are that many). `paced`: of those sent at the pace in force (after
        the last cut), and `jitter_answers` of them are enough: 429s drawn by a faster pace
        before the cut say nothing of this one."""
        if not self.jittery():
            return False  # too even for jitter to explain a 429: the limit
        hi = bisect.bisect_right(self._answers, (until, True, math.inf))
        lo = hi - self.recent
        if paced:
            lo = max(lo, bisect.bisect_left(self._answers, (self._cut_at,)))
        if hi - lo < (self.jitter_answers if paced else self.recent):
            return False
        refused = sum(1 for _, ok, _ in self._answers[max(0, lo) : hi] if not ok)
        return refused <= scale * self.jitter_share * (hi - lo)

    def mostly_refused(self, until: float) -> bool:
        """Whether 4 in 5 of the (4+) answers of the current run up to `until` were refused."""
        lo = bisect.bisect_left(self._answers, (self._run_start,))
        hi = bisect.bisect_right(self._answers, (until, True, math.inf))
        refused = sum(1 for _, ok, _ in self._answers[lo:hi] if not ok)
        return hi - lo >= 4 and 5 * refused >= 4 * (hi - lo)

    def after_cut(self, ticket: Ticket) -> bool:
        """Whether `ticket` was sent at the rate now in force (after the last cut)."""
        return ticket.at >= self._cut_at

    def restart_run(self) -> None:
        """After a pause every measurement starts afresh (the server refilled meanwhile)."""
        self._run_start = math.inf

    def on_hint(self, rate: float) -> None:
        """The server announced its rate: use it instead of probing."""
        self.hint = rate
        self.rate = self._clamp(rate * self.hint_trust)
