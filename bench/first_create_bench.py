"""Time to the first create: from `devin-fleet apply` being spawned to the first create reaching
the server (a real simulator process, a real apply process), and where that time goes.

Each scenario runs a fresh simulator (list lag 0.5 s, 20 ms latency) and one apply of a
campaign of `--n` sessions with no ledger yet (`fresh`), then a second apply of the same
campaign grown by 10% (`again`: a day-two apply, the ledger exists, most keys are launched),
then a new campaign of `--n` with a ledger of its own in the same folder (`other`):

    stated   the list lag is stated (`DEVIN_FLEET_LIST_LAG`, as `devin-fleet sim` exports it)
    unknown  nothing stated: a real org (the lag is unknown until this run measures it)

Printed per scenario: the median of `--repeat` runs of spawn -> first request (imports, plan,
ledger, lease), spawn -> first create, and the total wall time.

    .venv/bin/python bench/first_create_bench.py                 # n = 10 and 2,000
    .venv/bin/python bench/first_create_bench.py --n 10000 --repeat 1
    BENCH_LAUNCHER=/tmp/old .venv/bin/python bench/first_create_bench.py   # an older tree's apply
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_bench import Sim, as_installed, write_campaign

PROFILE: dict[str, object] = {"faults": {"list_lag_seconds": 0.5, "latency_seconds": 0.02}}


def one_apply(path: Path, sim: Sim, stated: bool, ledger: str = "ledger.db") -> dict[str, float]:
    """Run one apply; spawn -> first request / first create / exit, in seconds."""
    env = {**os.environ, **sim.env}
    if os.environ.get("BENCH_LAUNCHER"):  # apply from another tree (the simulator: this one's)
        env["PYTHONPATH"] = os.environ["BENCH_LAUNCHER"]
    if not stated:
        env.pop("DEVIN_FLEET_LIST_LAG", None)
    base = sim.env["DEVIN_API_BASE_URL"]
    before = httpx.get(f"{base}/_sim/stats", timeout=30).json()
    nth = httpx.get(f"{base}/_sim/creates", timeout=30).json()["count"]  # this apply's first
    cmd = [sys.executable, "-m", "launcher", "apply", str(path), "--yes", "-o", "json"]
    cmd += ["--ledger", str(path.parent / ledger), "--concurrency", "16", "--rate", "100"]
    spawned, spawned_mono = time.time(), time.monotonic()  # /_sim/creates: monotonic
    out = subprocess.DEVNULL  # from the campaign's folder: `-m` puts the working directory first
    subprocess.run(cmd, env=env, cwd=path.parent, stdout=out, stderr=out, check=True)
    ended = time.time()
    stats = httpx.get(f"{base}/_sim/stats", timeout=30).json()
    first_request = stats["first_request_at"] if before["first_request_at"] is None else None
    creates = httpx.get(f"{base}/_sim/creates", timeout=60).json()["creates"]
    first_create = creates[nth]["received"] - spawned_mono if len(creates) > nth else None
    return {
        "first_request": (first_request - spawned) if first_request else float("nan"),
        "first_create": float("nan") if first_create is None else first_create,
        "wall": ended - spawned,
    }


def scenario(n: int, stated: bool) -> list[dict[str, float]]:
    """A fresh campaign of `n`, then the same grown by 10%, then another campaign of `n` with
    its own ledger in the same folder: the three applies' figures."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sim = Sim(PROFILE, workdir)
        try:
            path = write_campaign(workdir, n)
            first = one_apply(path, sim, stated)
            path = write_campaign(workdir, n + max(1, n // 10))
            again = one_apply(path, sim, stated)
            other = workdir / "other.yaml"
            other.write_text(path.read_text().replace("campaign: bench", "campaign: other"))
            sibling = one_apply(other, sim, stated, ledger="other.db")
        finally:
            sim.close()
    return [first, again, sibling]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, action="append", help="sessions (repeatable; default 10, 2000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per scenario (default 3): the median")
    a = ap.parse_args()
    as_installed()
    print("spawn -> first request / first create / wall, seconds (median of runs)")
    for n in a.n or [10, 2000]:
        for stated in (True, False):
            runs = [scenario(n, stated) for _ in range(max(1, a.repeat))]
            for i, label in enumerate(("fresh", "again", "other")):
                figs = {k: statistics.median(r[i][k] for r in runs) for k in runs[0][i]}
                name = f"n={n:<6} {'stated' if stated else 'unknown':8} {label:6}"
                print(
                    f"{name} first request {figs['first_request']:6.2f}  "
                    f"first create {figs['first_create']:6.2f}  wall {figs['wall']:6.2f}"
                )


if __name__ == "__main__":
    main()
