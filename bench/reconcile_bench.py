"""Benchmark the API-as-source-of-truth work of apply (issue 9).

1. `reconcile`: the start-of-apply reconcile of a campaign of N sessions (default 10,000) whose
   ledger was lost: N sessions are created directly in the simulator (loopback TCP), then a
   fresh ledger runs `apply_plan` (list the campaign tag 200 a page, adopt every key, create
   nothing). Prints API requests (goal: <= 1 per 200 sessions) and wall time (goal: < 5 s).

2. `late`: the late-arrival window. A create's answer never comes (the client times out after
   the request timeout) and the request lands on the server `d` seconds after the client gave
   up; the list shows it `lag` seconds after that. For d = 0, 0.5, 1, ... the run is replayed
   on a fake clock against a scripted API (instant), and the largest d that still ends with one
   session (no duplicate) is the window in which a late create is caught. Run it against older
   code with BENCH_LAUNCHER=/path/to/old/tree (whose `launcher/` is imported instead).

    .venv/bin/python bench/reconcile_bench.py reconcile --n 10000
    .venv/bin/python bench/reconcile_bench.py late
    BENCH_LAUNCHER=/tmp/old .venv/bin/python bench/reconcile_bench.py late

3. `laggy`: issue 9's case 3 against the simulator (list lag 3.5 s, 20% of creates failing after
   creating): planned sessions vs sessions that exist afterwards.

4. `young`: issue 23's case 1, and what its fix costs. List lag 2 s; `apply --ledger a.db`, then
   at once `apply --ledger b.db` (a lost ledger), for three lag settings: `--list-lag 0` (the
   start listing trusted at once: what apply did before), `--list-lag 2` (stated), and none (10 s
   assumed). Prints the time to the first create of the first run, both runs' wall times and
   the sessions that exist afterwards (planned: N).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
if os.environ.get("BENCH_LAUNCHER"):
    sys.path.insert(0, os.environ["BENCH_LAUNCHER"])

import anyio  # noqa: E402
import httpx  # noqa: E402

from launcher import (  # noqa: E402
    ApiConfig,
    ApplyOptions,
    DevinClient,
    apply_plan,
    build_plan,
    load_manifest,
    open_ledger,
)


def _virtual_clock() -> Any:
    """This tree's `VirtualClock` (stdlib and anyio only), loaded from its file: with
    BENCH_LAUNCHER the `launcher` package is an older tree, which may not have one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("_bench_clock", ROOT / "launcher/sim/clock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VirtualClock


FakeClock = _virtual_clock()


def reconcile(n: int, concurrency: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from status_bench import create_all, write_campaign  # type: ignore[import-not-found]

    from launcher.sim import running_simulator

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = build_plan(load_manifest(write_campaign(root, n)))
        with running_simulator("clean", time_scale=1.0, introspection=True) as sim:
            t0 = time.perf_counter()
            anyio.run(create_all, sim, plan, concurrency)
            print(f"campaign: {n:,} sessions created in {time.perf_counter() - t0:.1f}s")
            cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)

            async def go() -> tuple[float, Any]:
                async with DevinClient(cfg) as client:
                    with open_ledger(plan.manifest.path, plan.campaign, root / "lost.db") as led:
                        t = time.perf_counter()
                        summary = await apply_plan(
                            plan, client, led, ApplyOptions(preflight=False), environ={}
                        )
                        return time.perf_counter() - t, summary

            before = dict(sim.stats()["requests"])
            wall, summary = anyio.run(go)
            created = sum(1 for r in summary.results.values() if r == "created")
            after = sim.stats()["requests"]
            seen = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
            print(
                f"apply on a lost ledger: {summary.requests} API requests "
                f"(goal <= {-(-n // 200)}), {wall:.2f}s wall (goal < 5 s); adopted "
                f"{summary.reconciled:,}, created {created}"
                f"; server saw {seen}; sessions now {len(sim.sessions()):,}"
            )


class LateArrival:
    """A scripted API whose first create lands `delay` s after the client gave up."""

    def __init__(self, clock: FakeClock, delay: float, lag: float, timeout: float) -> None:
        self.clock, self.delay, self.lag, self.timeout = clock, delay, lag, timeout
        self.landed: list[tuple[float, dict[str, Any]]] = []
        self.creates = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/sessions"):
            self.creates += 1
            body = json.loads(request.content)
            if self.creates == 1:  # held in transit: the client times out first
                await self.clock.sleep(self.timeout)
                self.landed.append((self.clock.now() + self.delay, self._session(body)))
                raise httpx.ReadTimeout("timed out", request=request)
            s = self._session(body)
            self.landed.append((self.clock.now(), s))
            return httpx.Response(200, json=s)
        if request.method == "GET" and path.endswith("/sessions"):
            tags = set(request.url.params.get_list("tags"))
            now = self.clock.now()
            items = [s for at, s in self.landed if at + self.lag <= now and tags <= set(s["tags"])]
            return httpx.Response(200, json={"items": items, "end_cursor": None, "has_next_page": False})
        return httpx.Response(200, json={})

    def _session(self, body: dict[str, Any]) -> dict[str, Any]:
        n = len(self.landed) + 1
        return {
            "session_id": f"devin-{n:04d}",
            "url": f"u{n}",
            "status": "new",
            "tags": body.get("tags") or [],
            "created_at": n,
            "updated_at": n,
        }


def late(lag: float, timeout: float, grace: float, step: float, top: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "m.yaml"
        path.write_text(
            "version: 1\ncampaign: late\nfleets:\n  - name: f\n    for_each: {items: [a]}\n"
            "    session: {prompt: hi}\n"
        )
        plan = build_plan(load_manifest(path))
        caught = -1.0
        d = 0.0
        while d <= top:
            clock = FakeClock()
            api = LateArrival(clock, d, lag, timeout)
            cfg = ApiConfig("http://127.0.0.1:9", "org-b", "cog_b", read_timeout=timeout)

            async def go(
                api: LateArrival = api, clock: FakeClock = clock, d: float = d, cfg: Any = cfg
            ) -> Any:
                async with DevinClient(cfg, transport=httpx.MockTransport(api.handle)) as client:
                    with open_ledger(path, plan.campaign, root / f"{d}.db") as led:
                        opts = ApplyOptions(preflight=False, lookup_grace=grace)
                        return await apply_plan(plan, client, led, opts, clock=clock, environ={})

            anyio.run(clock.run, go)
            if len(api.landed) > 1:
                break
            caught = d
            d += step
        found = (
            f"a create landing up to {caught:g}s after the client gave up is found"
            if caught >= 0
            else "even a create landing at once is missed"
        )
        print(
            f"late-arrival window (lag {lag:g}s, request timeout {timeout:g}s, grace {grace:g}s): "
            f"{found}; later ones "
            f"{'are resent (duplicate)' if d <= top else f'not tried past {top:g}s'}"
        )


def laggy(n: int, lag: float, fail_after: float, seed: int) -> None:
    """Issue 9 case 3 as measured: list lag and fail-after-create; sessions per planned key."""
    sys.path.insert(0, str(ROOT / "bench"))
    from status_bench import write_campaign

    from launcher.sim import Profile, running_simulator

    profile = Profile.model_validate(
        {"name": "laggy", "faults": {"error_after_create": fail_after, "list_lag_seconds": lag}}
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plan = build_plan(load_manifest(write_campaign(root, n)))
        with running_simulator(profile, seed=seed, introspection=True) as sim:
            cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)

            async def go() -> Any:
                async with DevinClient(cfg) as client:
                    with open_ledger(plan.manifest.path, plan.campaign, root / "l.db") as led:
                        opts = ApplyOptions(preflight=False, rate=50, breaker_threshold=10_000)
                        return await apply_plan(plan, client, led, opts, environ={})

            t = time.perf_counter()
            summary = anyio.run(go)
            print(
                f"list lag {lag:g}s, {fail_after:.0%} fail after create: {n} planned -> "
                f"{len(sim.sessions())} sessions; {summary.to_json()['counts']}, exit "
                f"{int(summary.exit_code)}, {time.perf_counter() - t:.1f}s"
            )


async def _timed_apply(plan: Any, cfg: ApiConfig, ledger: Path, stated: float | None) -> float:
    async with DevinClient(cfg) as client:
        with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
            t = time.perf_counter()
            opts = ApplyOptions(rate=50, list_lag=stated)
            await apply_plan(plan, client, led, opts, environ={})
            return time.perf_counter() - t


def young(n: int, lag: float) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from status_bench import write_campaign

    from launcher.sim import Profile, running_simulator

    profile = Profile.model_validate({"name": "young", "faults": {"list_lag_seconds": lag}})
    for stated in (0.0, lag, None):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            plan = build_plan(load_manifest(write_campaign(root, n)))
            with running_simulator(profile, introspection=True) as sim:
                cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
                started = time.time()
                first_run = anyio.run(_timed_apply, plan, cfg, root / "a.db", stated)
                to_first = sim.stats()["first_create_at"] - started
                second_run = anyio.run(_timed_apply, plan, cfg, root / "b.db", stated)
                label = "none (10 s assumed)" if stated is None else f"{stated:g} s"
                print(
                    f"--list-lag {label:>20}: first create after {to_first:5.2f}s; runs "
                    f"{first_run:5.2f}s + {second_run:5.2f}s; {len(sim.sessions())} sessions "
                    f"for {n} planned"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("reconcile")
    r.add_argument("--n", type=int, default=10_000)
    r.add_argument("--concurrency", type=int, default=8)
    la = sub.add_parser("late")
    la.add_argument("--lag", type=float, default=1.0)
    la.add_argument("--timeout", type=float, default=30.0)
    la.add_argument("--grace", type=float, default=3.0)
    la.add_argument("--step", type=float, default=0.5)
    la.add_argument("--top", type=float, default=120.0)
    lg = sub.add_parser("laggy")
    lg.add_argument("--n", type=int, default=100)
    lg.add_argument("--lag", type=float, default=3.5)
    lg.add_argument("--fail-after", type=float, default=0.2)
    lg.add_argument("--seed", type=int, default=1)
    yo = sub.add_parser("young")
    yo.add_argument("--n", type=int, default=30)
    yo.add_argument("--lag", type=float, default=2.0)
    args = ap.parse_args()
    if args.what == "young":
        young(args.n, args.lag)
    elif args.what == "reconcile":
        reconcile(args.n, args.concurrency)
    elif args.what == "laggy":
        laggy(args.n, args.lag, args.fail_after, args.seed)
    else:
        late(args.lag, args.timeout, args.grace, args.step, args.top)


if __name__ == "__main__":
    main()
