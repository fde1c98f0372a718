"""Benchmark `status`'s refresh: N campaign sessions refreshed through the list endpoint.

Starts the simulator (clean profile, in this process, loopback TCP), plans a generated campaign
of N sessions with a structured-output schema, creates every session directly through the
simulator's HTTP API (concurrent httpx client, the planned bodies, so each carries the campaign
and identity tags), records them in a fresh ledger as apply would, then times `follow.refresh`
(list pages of 200 + GET fallback + outcome classification + output validation + ledger write)
and prints the API requests it made and the wall time.

    .venv/bin/python bench/status_bench.py                  # N = 10,000
    .venv/bin/python bench/status_bench.py --n 2000 --repeat 3
    .venv/bin/python bench/status_bench.py --cli          # also the commands, as users run them
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import anyio
import httpx
from anyio.abc import ObjectReceiveStream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher import ApiConfig, DevinClient, build_plan, load_manifest, open_ledger
from launcher.ledger.store import LaunchState
from launcher.ledger.store import LedgerEvent as Event
from launcher.run.status import refresh
from launcher.sim import SimServer, running_simulator
from launcher.spec.plan import Plan

SCHEMA = {
    "type": "object",
    "required": ["verdict", "files_changed"],
    "properties": {
        "verdict": {"type": "string", "enum": ["fixed", "skipped", "blocked"]},
        "files_changed": {"type": "integer", "minimum": 0},
    },
    "additionalProperties": False,
}


def write_campaign(root: Path, n: int) -> Path:
    (root / "items.csv").write_text(
        "repo,team\n" + "".join(f"svc-{i:05d},team-{i % 7}\n" for i in range(n)), encoding="utf-8"
    )
    path = root / "bench-status.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        campaign: bench-status
        defaults:
          max_acu_limit: 3
        fleets:
          - name: services
            key: "{{{{ item.repo }}}}"
            for_each:
              file: items.csv
            session:
              prompt: "Fix the flaky tests of {{{{ item.repo }}}} ({{{{ item.team }}}})"
              repos: ["acme/{{{{ item.repo }}}}"]
              structured_output_schema: {json.dumps(SCHEMA)}
        """),
        encoding="utf-8",
    )
    return path


async def create_all(sim: SimServer, plan: Plan, concurrency: int) -> dict[str, tuple[str, str]]:
    """POST every planned body; key -> (session_id, url)."""
    made: dict[str, tuple[str, str]] = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=sim.base_url,
        limits=limits,
        timeout=60.0,
        headers={"Authorization": f"Bearer {sim.token}"},
    ) as http:
        send, recv = anyio.create_memory_object_stream[int](max_buffer_size=concurrency)

        async def worker(recv: ObjectReceiveStream[int]) -> None:
            async with recv:
                async for i in recv:
                    s = plan.sessions[i]
                    resp = await http.post(f"/v3/organizations/{sim.org_id}/sessions", json=s.request)
                    resp.raise_for_status()
                    body = resp.json()
                    made[s.key] = (body["session_id"], body["url"])

        async with anyio.create_task_group() as tg:
            async with recv:
                for _ in range(concurrency):
                    tg.start_soon(worker, recv.clone())
            async with send:
                for i in range(len(plan.sessions)):
                    await send.send(i)
    return made


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="Sessions in the campaign.")
    ap.add_argument("--concurrency", type=int, default=4, help="Concurrent creates.")
    ap.add_argument("--repeat", type=int, default=2, help="Refreshes to time.")
    ap.add_argument(
        "--time-scale",
        type=float,
        default=100_000.0,
        help="Simulated seconds per real second (high: sessions settle at once, "
        "with structured outputs to validate).",
    )
    ap.add_argument(
        "--cli",
        action="store_true",
        help="Also time the commands users run (`status`, `results` as a table and as CSV), "
        "each a fresh `devin-fleet` process: start-up, plan, refresh and rendering included.",
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        plan = build_plan(load_manifest(write_campaign(root, args.n)))
        t_plan = time.perf_counter() - t0
        with running_simulator("clean", time_scale=args.time_scale, introspection=True) as sim:
            t0 = time.perf_counter()
            made = anyio.run(create_all, sim, plan, args.concurrency)
            t_create = time.perf_counter() - t0
            ledger_path = root / "ledger.db"
            with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as led:
                led.sync_plan(plan)
                led.write_events(
                    Event(
                        s.key,
                        "created",
                        session_id=made[s.key][0],
                        url=made[s.key][1],
                        fingerprint=s.fingerprint,
                        state=LaunchState.created,
                    )
                    for s in plan.sessions
                )
            print(
                f"campaign: {args.n:,} sessions (plan {t_plan:.2f}s; created in "
                f"{t_create:.2f}s = {args.n / t_create:,.0f}/s, concurrency "
                f"{args.concurrency})"
            )
            cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
            budget = -(-args.n // 150)
            for run in range(1, args.repeat + 1):
                before = dict(sim.stats()["requests"])

                async def go() -> tuple[float, int, dict[str, int]]:
                    async with DevinClient(cfg) as client:
                        with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as led:
                            t = time.perf_counter()
                            view = await refresh(plan, client, led)
                            return time.perf_counter() - t, view.requests, view.counts()

                wall, requests, counts = anyio.run(go)
                after = sim.stats()["requests"]
                seen = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
                print(
                    f"refresh #{run}: {requests} API requests (target <= {budget}), "
                    f"{wall:.2f}s wall; server saw {seen}; outcomes "
                    f"{ {k: v for k, v in counts.items() if v} }"
                )
            if args.cli:
                time_cli(plan.manifest.path, ledger_path, sim, args.repeat)


def time_cli(manifest: Path, ledger: Path, sim: SimServer, repeat: int) -> None:
    """Wall time of each command as a user runs it (a new process; output to a pipe)."""
    env = {
        **os.environ,
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
        "NO_COLOR": "1",
    }
    exe = Path(sys.executable).with_name("devin-fleet")
    for args in (["status"], ["results"], ["results", "-o", "csv"]):
        walls = []
        for _ in range(repeat):
            cmd = [str(exe), *args, str(manifest), "--ledger", str(ledger)]
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            walls.append(time.perf_counter() - t)
            if done.returncode not in (0, 4, 6):
                raise SystemExit(f"{' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
        print(
            f"devin-fleet {' '.join(args):<16} {min(walls):.2f}s best, {max(walls):.2f}s worst "
            f"of {repeat} (wall, a new process each, output {len(done.stdout):,} chars)"
        )


if __name__ == "__main__":
    main()
