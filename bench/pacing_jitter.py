"""How unevenly paced creates reach a server's bucket, and what that allows any client (used by
bench/pacing_bench.py --trace).

The client's trace (bench/pacing_trace.py) gives each create's ticket (the pacer's send time)
and when the API client was called; the simulator's `/_sim/creates` gives when it was received
and when it reached the bucket; all four on the machine's monotonic clock. Matched by title
(the k-th send of a title with its k-th arrival), the delay ticket -> bucket splits into the
client (apply's fence and request building), the transport, and the server (its latency fault).

The bound: a bucket of one token takes a create only once 1/limit has passed since the one it
took last. A client that sends every T seconds has its creates arrive at i*T + d_i; replayed
over the measured delays d_i, the share accepted at each T gives accepted/s; the best T over a
fine grid is the most any fixed-interval client reaches under this jitter (refused creates are
sent again at no further cost: an upper bound of the rate).

A whole campaign also pays for each refused create its Retry-After (a whole second, as the
simulator writes it, for a create a few milliseconds early) when it falls at the end: the
schedule bound (`best_schedule`) replays the delays through a client that sends every T1,
the last creates (those within a Retry-After and two latencies of the end) every T2, honours
every Retry-After, and ends when the last create is taken; the best T1, T2 over a grid.
"""

from __future__ import annotations

import heapq
import math
import statistics
from collections import defaultdict
from typing import Any


def match(sends: list[dict[str, Any]], arrivals: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One row per create both sides saw: ticket, called, received, at (bucket), accepted."""
    seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in arrivals:
        if a.get("title") is not None:
            seen[a["title"]].append(a)
    taken: dict[str, int] = defaultdict(int)
    rows = []
    for s in sorted(sends, key=lambda s: s["called"]):
        title = s.get("title")
        if title is None or s.get("ticket") is None:
            continue
        k = taken[title]
        if k >= len(seen[title]):
            continue
        taken[title] += 1
        a = seen[title][k]
        rows.append(
            {
                "ticket": s["ticket"],
                "rate": s["rate"],
                "called": s["called"],
                "received": a["received"],
                "at": a["at"],
                "accepted": float(bool(a["accepted"])),
            }
        )
    rows.sort(key=lambda r: r["ticket"])
    return rows


def _pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]


def spread(xs: list[float]) -> dict[str, float]:
    """Median, p5-p95 and p1-p99 widths of `xs`, in milliseconds."""
    return {
        "median_ms": round(1000 * statistics.median(xs), 2),
        "p5_p95_ms": round(1000 * (_pct(xs, 0.95) - _pct(xs, 0.05)), 2),
        "p1_p99_ms": round(1000 * (_pct(xs, 0.99) - _pct(xs, 0.01)), 2),
    }


def accepted_per_second(delays: list[float], interval: float, limit: float) -> float:
    """Creates a one-token bucket of `limit`/s takes per second from a client that sends every
    `interval` s, when the i-th arrives `delays[i]` after it was sent."""
    last = None
    taken = 0
    arrivals = sorted(i * interval + d for i, d in enumerate(delays))
    for t in arrivals:
        if last is None or t - last >= 1.0 / limit - 1e-9:
            taken += 1
            last = t
    return taken / (len(delays) * interval)


def best_fixed_interval(delays: list[float], limit: float) -> tuple[float, float]:
    """(efficiency = accepted/s / limit, the interval that reaches it) over intervals from
    1/limit to 1.5/limit, for a one-token bucket under the measured `delays`."""
    best = (0.0, 1.0 / limit)
    for step in range(0, 501):
        interval = (1.0 + step / 1000) / limit
        eff = accepted_per_second(delays, interval, limit) / limit
        if eff > best[0]:
            best = (eff, interval)
    return best


def analyse(
    rows: list[dict[str, float]],
    limit: float,
    burst: int,
    *,
    n: int = 0,
    latency: float = 0.0,
    retry_after: str = "seconds",
) -> dict[str, Any]:
    """Where the delay ticket -> bucket goes, its spread, and (one token) the jitter bounds:
    the best fixed interval's rate, and with `n` the best schedule's time for the creates."""
    if len(rows) < 10:
        return {"matched": len(rows)}
    total = [r["at"] - r["ticket"] for r in rows]
    steps = [b - a for a, b in zip(total, total[1:], strict=False)]
    out: dict[str, Any] = {
        "matched": len(rows),
        "client": spread([r["called"] - r["ticket"] for r in rows]),
        "transport": spread([r["received"] - r["called"] for r in rows]),
        "server": spread([r["at"] - r["received"] for r in rows]),
        "total": spread(total),
        "step": spread(steps),  # change of the delay from one create to the next
    }
    if burst == 1:
        eff, interval = best_fixed_interval(total, limit)
        out["jitter_bound"] = round(eff, 3)
        out["best_interval_ms"] = round(1000 * interval, 3)
        if n:
            took, t1, t2 = best_schedule(total, limit, n, latency, retry_after)
            out["schedule_s"] = round(took, 3)
            out["schedule_ms"] = [round(1000 * t1, 2), round(1000 * t2, 2)]
    return out


def retry_cost(retry_after: str, limit: float) -> float:
    """What a refused create waits before it may go again: `seconds` 1 s (the simulator's
    least), an HTTP date half a second on average, none: the client chooses (1/limit)."""
    return {"seconds": 1.0, "http-date": 0.5}.get(retry_after, 1.0 / limit)


def schedule_time(
    delays: list[float], limit: float, n: int, latency: float, wait: float, t1: float, t2: float
) -> float:
    """When the last of `n` creates is taken by a one-token bucket of `limit`/s from a client
    that sends every `t1`, the last `m` every `t2`, a refused create again `wait` after its
    answer (delays[i % len] for the i-th send, to the bucket, which answers at once; the
    last `m`: those a Retry-After and two latencies cover, as the pacer's end game)."""
    m = math.ceil(limit * (wait + 2 * latency))
    parked: list[float] = []
    fresh, taken, i, t = n, 0, 0, 0.0
    last = -math.inf
    end = 0.0
    while taken < n:
        if parked and (parked[0] <= t or not fresh):
            t = max(t, heapq.heappop(parked))
        else:
            fresh -= 1
        arrival = t + delays[i % len(delays)]
        i += 1
        if arrival - last >= 1.0 / limit - 1e-9:
            last = arrival
            taken += 1
            end = max(end, arrival)
        else:
            heapq.heappush(parked, arrival + wait)
        t += t2 if n - taken <= m else t1
    return end


def best_schedule(
    delays: list[float], limit: float, n: int, latency: float, retry_after: str
) -> tuple[float, float, float]:
    """(the least `schedule_time`, its t1, t2) over t1 in [1, 1.4]/limit, t2 up to 1.4 x t1."""
    wait = retry_cost(retry_after, limit)
    best = (math.inf, 0.0, 0.0)
    for step in range(41):
        t1 = (1.0 + step / 100) / limit
        for k in (1.0, 1.03, 1.06, 1.1, 1.15, 1.2, 1.3, 1.4):
            took = schedule_time(delays, limit, n, latency, wait, t1, t1 * k)
            if took < best[0]:
                best = (took, t1, t1 * k)
    return best
