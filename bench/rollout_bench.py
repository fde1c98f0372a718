"""Benchmark the running ceiling: N sessions applied with `max_running` C and followed to the
end, against the simulator (in this process, loopback TCP, sessions of 1-3 simulated minutes
at time scale 60 plus the default new/claimed phases).

Prints the most sessions that were ever running at once (replayed from the simulator's
recorded creation and settle times, not sampled), how often a launch was held, the list
requests the whole run made (ceiling checks and following), and the wall time.

    .venv/bin/python bench/rollout_bench.py                      # N = 200, C = 20
    .venv/bin/python bench/rollout_bench.py --n 500 --max-running 50
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher import (
    ApiConfig,
    ApplyOptions,
    DevinClient,
    RolloutOptions,
    build_plan,
    load_manifest,
    open_ledger,
)
from launcher.run.rollout import RolloutSummary, run_rollout
from launcher.sim import Profile, running_simulator

PROFILE = Profile.model_validate(
    {
        "name": "bench",
        "outcomes": {"finished": 1},
        "lifecycle": {"working_seconds_min": 60, "working_seconds_max": 180},
    }
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--max-running", type=int, default=20)
    ap.add_argument("--time-scale", type=float, default=60.0)
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_simulator(PROFILE, time_scale=args.time_scale, introspection=True) as sim,
    ):
        path = Path(tmp) / "bench.yaml"
        items = ", ".join(f"r{i:05d}" for i in range(args.n))
        path.write_text(
            textwrap.dedent(
                f"""
                version: 1
                campaign: bench
                fleets:
                  - name: f
                    for_each: {{items: [{items}]}}
                    session: {{prompt: "do {{{{ item }}}}"}}
                """
            )
        )
        plan = build_plan(load_manifest(path))
        cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
        ro = RolloutOptions(
            wait=True, max_running=args.max_running, interval=0.5, max_interval=2, ceiling_interval=0.2
        )

        async def go() -> RolloutSummary:
            async with DevinClient(cfg) as client:
                with open_ledger(path, plan.campaign, Path(tmp) / "l.db") as led:
                    return await run_rollout(
                        plan, client, led, ApplyOptions(rate=50, preflight=False), ro, environ={}
                    )

        started = time.monotonic()
        summary = anyio.run(go)
        wall = time.monotonic() - started
        sessions = sim.sessions()
        times = sorted(
            [(s["created_time"], 1) for s in sessions] + [(s["settled_time"], -1) for s in sessions],
            key=lambda t: (t[0], t[1]),  # a settle at the same instant frees the slot first
        )
        running = peak = 0
        for _, step in times:
            running += step
            peak = max(peak, running)
        lists = sim.stats()["requests"].get("GET /sessions", 0)
        print(f"sessions: {len(sessions)} (exit {int(summary.exit_code)})")
        print(f"ceiling: {args.max_running}; most running at once: {peak}")
        print(f"launches held: {summary.holds}; list requests: {lists}")
        print(f"wall: {wall:.1f}s at time scale {args.time_scale:g}")


if __name__ == "__main__":
    main()
