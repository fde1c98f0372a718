"""Pacing sweep: the real `Pacer` in the discrete-event model of apply (launcher/sim/pacing_model.py),
over a grid of server shapes, in virtual time: no start-up, no scheduler, so thousands of
campaigns in seconds. It shows the shapes the socket bench (bench/pacing_bench.py) does not.

For each shape: efficiency = (sessions / limit) / time to the last accepted create, averaged
over seeds; the bound, the best any client can do ((n - burst) / limit + 2 x latency: the
first answer and the last take a latency each; with one token, a gap of 1 / limit + the
arrival jitter between creates, as the server refuses any create that arrives early); and
the 429 share.

    .venv/bin/python bench/pacing_sweep.py            # the grid, then the worst shapes
    .venv/bin/python bench/pacing_sweep.py --all      # every shape's line
    .venv/bin/python bench/pacing_sweep.py --spikes 0.1 --jitter 0.001   # a loaded machine

--spikes P delays each create, with probability P, by an extra exponential of mean 2 ms (what
bench/pacing_bench.py --trace measured on a loaded 2-core machine: p5-p95 of the delay about
1.2 ms, p1-p99 3-4 ms). With spikes, a one-token shape's bound is the best any fixed-interval
client reaches under the very delays of that run (bench/pacing_jitter.py), not 1/limit + jitter.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pacing_jitter import best_fixed_interval, best_schedule

from launcher.sim.pacing_model import Outcome, run_shape

LIMITS = [2, 5, 10, 20, 35, 50, 75, 100]
LATENCIES = [0.0, 0.1, 0.2, 0.3]
RETRY_AFTER = ["seconds", "http-date", "none"]


def bursts(limit: int) -> list[int]:
    return sorted({1, 2, max(1, limit // 10), max(1, limit // 4), limit})


def shape_bound(
    out: Outcome, limit: float, burst: int, latency: float, ra: str, a: argparse.Namespace
) -> float:
    """The best efficiency any client reaches on this shape (module docstring)."""
    bound = (a.n / limit) / ((a.n - burst) / limit + 2 * latency)
    if burst != 1:
        return bound
    if a.spikes and a.schedule:  # the best schedule under this run's delays, Retry-After paid
        took, _, _ = best_schedule(out.delays, limit, a.n, latency, ra)
        return min(bound, (a.n / limit) / (took + latency))
    if a.spikes:  # the best fixed interval under this run's own delays
        rate, _ = best_fixed_interval(out.delays, limit)
        return min(bound, (a.n / limit) / ((a.n - 1) / (limit * rate) + 2 * latency))
    # One token: no client beats a gap of 1/limit + the jitter.
    return min(bound, (a.n / limit) / ((a.n - 1) * (1 / limit + a.jitter) + 2 * latency))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jitter", type=float, default=0.0005, help="arrival jitter, seconds")
    ap.add_argument("--spikes", type=float, default=0.0, help="share of creates delayed more")
    ap.add_argument(
        "--schedule",
        action="store_true",
        help="with --spikes: one-token bounds pay the Retry-After of refused creates (slower)",
    )
    ap.add_argument("--one-token", action="store_true", help="only shapes with a burst of 1")
    ap.add_argument("--all", action="store_true", help="print every shape")
    a = ap.parse_args()
    rows = []
    for limit, latency, ra in itertools.product(LIMITS, LATENCIES, RETRY_AFTER):
        for burst in bursts(limit) if not a.one_token else [1]:
            outs = [
                run_shape(limit, burst, ra, latency, n=a.n, jitter=a.jitter, spikes=a.spikes, seed=seed)
                for seed in range(a.seeds)
            ]
            eff = statistics.mean(o.efficiency(limit) for o in outs)
            bounds = [shape_bound(o, limit, burst, latency, ra, a) for o in outs]
            # The worst seed, as a share of its own bound, back on the efficiency scale.
            worst = min(o.efficiency(limit) / b for o, b in zip(outs, bounds, strict=True))
            bound = statistics.mean(bounds)
            worst *= bound
            pct = 100 * statistics.mean(o.rate_limited for o in outs) / a.n
            rows.append((limit, burst, ra, latency, eff, worst, bound, pct))
            if a.all:
                print(
                    f"{limit:>4}/s burst {burst:>3} {ra:>9} {latency * 1000:>4.0f} ms: "
                    f"eff {eff:.3f} (worst {worst:.3f}, bound {bound:.3f}) 429s {pct:.1f}%"
                )
    n = len(rows)
    ok = [r for r in rows if r[5] >= 0.9]
    reachable = [r for r in rows if r[6] >= 0.9 / 0.97]  # the bound leaves room for 0.9
    ok_reachable = [r for r in reachable if r[5] >= 0.9]
    few = [r for r in rows if r[7] <= 5.0]
    print(f"{n} shapes x {a.seeds} seeds, {a.n} sessions each (virtual time, start-up left out)")
    print(f"  efficiency >= 0.9 in every seed: {len(ok)}/{n}")
    print(f"  ... where the bound allows it (bound >= 0.93): {len(ok_reachable)}/{len(reachable)}")
    print(f"  429s <= 5%: {len(few)}/{n}; median {statistics.median(r[7] for r in rows):.1f}%")
    print(f"  mean efficiency / bound: {statistics.mean(r[4] / min(1.0, r[6]) for r in rows):.3f}")
    close = [r for r in rows if r[5] >= 0.95 * min(1.0, r[6])]
    print(f"  >= 0.95 of the bound (at most 1) in every seed: {len(close)}/{n}")
    print("worst 12 by efficiency / bound:")
    for limit, burst, ra, latency, eff, worst, bound, pct in sorted(
        rows, key=lambda r: r[5] / min(1.0, r[6])
    )[:12]:
        print(
            f"  {limit:>4}/s burst {burst:>3} {ra:>9} {latency * 1000:>4.0f} ms: "
            f"eff {eff:.3f} (worst {worst:.3f}, bound {bound:.3f}) 429s {pct:.1f}%"
        )
    print("most 429s:")
    for limit, burst, ra, latency, *_, pct in sorted(rows, key=lambda r: -r[7])[:6]:
        print(f"  {limit:>4}/s burst {burst:>3} {ra:>9} {latency * 1000:>4.0f} ms: 429s {pct:.1f}%")


if __name__ == "__main__":
    main()
