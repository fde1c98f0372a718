"""Day-two commands as a person runs them, piped (what lands in a file, grep or a CI log): lines
written and wall time of `results`, `status` and `report` at 40 and 2,000 sessions, through the
installed CLI, offline, on a ledger built through the ledger's API (no network).

    python bench/day_two_bench.py                 # 40 and 2,000 sessions, median of 3 runs
    PYTHONPATH=/path/to/other/checkout python bench/day_two_bench.py   # another version's CLI

Timings on a shared machine are noisy: compare medians taken back to back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher.sim.campaigns import mixed_campaign_ledger  # a mix of outcomes, as the tests use


def measure(argv: list[str], repeat: int) -> tuple[int, float]:
    times, lines = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - t)
        lines = proc.stdout.count("\n")
    return lines, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="*", default=[40, 2000])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cli = [sys.executable, "-m", "launcher"]
    env_path = os.environ.get("PYTHONPATH", "(this checkout)")
    print(f"CLI: {' '.join(cli)}; PYTHONPATH={env_path}")
    with tempfile.TemporaryDirectory() as d:
        for n in args.n:
            path, ledger, _ = mixed_campaign_ledger(Path(d) / str(n), n)
            base = [str(path), "--ledger", str(ledger), "--offline"]
            html = Path(d) / f"r{n}.html"
            for name, extra in (
                ("results", ["results", *base]),
                ("status", ["status", *base]),
                ("report", ["report", *base, "-o", str(html)]),
            ):
                lines, seconds = measure([*cli, *extra], args.repeat)
                print(f"{name:8s} {n:6,} sessions piped: {lines:7,} lines {seconds:6.2f} s")


if __name__ == "__main__":
    main()
