"""Pacing matrix: `apply` against a server-side token bucket it is not told about.

Each shape runs a fresh simulator process (its rate limit, burst, Retry-After style, latency and
optional rate-limit headers) and one real `devin-fleet apply` process with `--rate 100`, and
prints one line per shape:

    efficiency = (sessions / server limit) / apply wall time including start-up

plus the 429 count, duplicates (from the simulator's introspection), the most creates that
reached the server in any one second, the rate apply ended at, where the wall time went
(start-up to the first request, to the first create, creating, after the last create), and
the bound: the best efficiency any client with the same start-up could reach (the server's
burst at once, the rest at its limit, one latency for the listing and one for the last answer).

    .venv/bin/python bench/pacing_bench.py                  # the default matrix (~6 min)
    .venv/bin/python bench/pacing_bench.py --shape a --shape d
    .venv/bin/python bench/pacing_bench.py --repeat 3       # each shape 3 times, then min/median/max
    .venv/bin/python bench/pacing_bench.py --list
    .venv/bin/python bench/pacing_bench.py --messages --shape a --shape c   # `message` pacing
    .venv/bin/python bench/pacing_bench.py --trace --shape f   # + where each create's delay goes

--trace runs apply through bench/pacing_trace.py (its pacer's send times recorded) and prints,
per run, the spread of the delay from each create's send time to the server's bucket (client,
transport, server), and for a one-token bucket the best efficiency any client sending at a
fixed interval reaches under that measured jitter (bench/pacing_jitter.py), as a rate
(`jitter`) and as a bound for the whole run (`jbound`, the same start-up and latencies).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from apply_bench import Sim, as_installed, duplicates, run_apply, write_campaign
from pacing_jitter import analyse, match


@dataclass(frozen=True)
class Shape:
    """One server: limit/s, burst, Retry-After (`seconds`, `http-date` or `none`), latency,
    and which rate-limit headers it sends (`none` = the client must probe)."""

    name: str
    limit: float
    burst: int
    retry_after: str
    latency_ms: int
    headers: str = "none"
    in_default: bool = True
    sessions: int | None = None  # instead of --n

    def profile(self) -> dict[str, object]:
        rate_limit: dict[str, object] = {
            "rate": self.limit,
            "burst": self.burst,
            "retry_after": self.retry_after != "none",
            "headers": self.headers,
        }
        if self.retry_after == "http-date":
            rate_limit["retry_after_format"] = "http-date"
        return {
            "name": f"pacing-{self.name}",
            "faults": {"rate_limit": rate_limit, "latency_seconds": self.latency_ms / 1000},
        }

    def message_profile(self) -> dict[str, object]:
        """The same bucket on message sends instead of creates (creates go unlimited)."""
        faults = dict(self.profile()["faults"])  # type: ignore[call-overload]
        faults["message_rate_limit"] = faults.pop("rate_limit")
        return {"name": f"pacing-messages-{self.name}", "faults": faults}

    def concurrency(self, default: int) -> int:
        # Little's law: launching at the limit keeps limit x latency creates in flight. Below
        # that, concurrency (not pacing) caps the rate, so give the shape the slots it needs.
        return max(default, math.ceil(1.5 * self.limit * self.latency_ms / 1000))

    def rate(self, default: float) -> float:
        # The premise is a --rate ceiling well above the limit: at least twice it.
        return max(default, 2 * self.limit)

    def describe(self) -> str:
        hdr = "" if self.headers == "none" else f", headers {self.headers}"
        n = f", {self.sessions} sessions" if self.sessions else ""
        return (
            f"{self.limit:g}/s burst {self.burst}, Retry-After {self.retry_after}, "
            f"{self.latency_ms} ms{hdr}{n}"
        )


SHAPES = [
    # The four shapes of issue 12.
    Shape("a", 20, 5, "seconds", 0),
    Shape("b", 20, 5, "none", 0),
    Shape("c", 50, 10, "seconds", 200),
    Shape("d", 5, 1, "seconds", 0),
    # More corners: the slowest limit, the fastest, dates, no Retry-After with latency.
    Shape("e", 2, 1, "http-date", 100),
    Shape("f", 100, 1, "seconds", 0),
    Shape("g", 100, 100, "none", 300),
    Shape("h", 10, 10, "http-date", 50),
    Shape("i", 35, 1, "none", 300),
    Shape("j", 75, 20, "seconds", 100),
    # Headers: the rate is read from the answers instead of probed.
    Shape("k", 20, 5, "seconds", 0, "ietf"),
    Shape("l", 50, 10, "seconds", 200, "ratelimit"),
    Shape("m", 5, 1, "seconds", 0, "x-ratelimit"),
    # c as issue 22's independent harness ran it: 600 sessions.
    Shape("n", 50, 10, "seconds", 200, sessions=600),
]


def run_traced(path: Path, sim: Sim, concurrency: int, rate: float) -> tuple[float, dict, list]:
    """`run_apply` through bench/pacing_trace.py: (wall, summary, the client's sends)."""
    trace = path.parent / "trace.json"
    env = {**os.environ, **sim.env, "PACING_TRACE": str(trace)}
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "pacing_trace.py"), "apply"]
    cmd += [str(path), "--yes", "-o", "json", "--concurrency", str(concurrency)]
    cmd += ["--rate", str(rate), "--ledger", str(path.parent / "ledger.db")]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    return wall, json.loads(done.stdout), json.loads(trace.read_text())


def run_shape(
    shape: Shape, n: int, rate: float, concurrency: int, *, trace: bool = False
) -> dict[str, object]:
    """Apply `n` sessions against a fresh simulator of `shape`; what happened, as a dict."""
    jitter: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pacing-bench-") as tmp:
        workdir = Path(tmp)
        sim = Sim(shape.profile(), workdir)
        try:
            path = write_campaign(workdir, n)
            spawned = time.time()
            if trace:
                wall, summary, sends = run_traced(path, sim, concurrency, rate)
            else:
                wall, _, summary = run_apply(path, sim, concurrency, rate)
            ended = time.time()
            if not summary:
                raise SystemExit("apply printed no summary")
            sessions, dups = duplicates(sim)
            import httpx

            base = sim.env["DEVIN_API_BASE_URL"]
            stats = httpx.get(f"{base}/_sim/stats", timeout=30).json()
            if trace:
                arrivals = httpx.get(f"{base}/_sim/creates", timeout=30).json()["creates"]
                rows = match(sends, arrivals)
                latency = shape.latency_ms / 1000
                jitter = analyse(
                    rows, shape.limit, shape.burst, n=n, latency=latency, retry_after=shape.retry_after
                )
        finally:
            sim.close()
    ideal = n / shape.limit
    bound = _bound(shape, n, stats.get("first_request_at"), spawned)
    if "jitter_bound" in jitter and bound:
        # The same start-up and latencies, the creates at the best rate the jitter allows.
        fixed = ideal / bound - (n - shape.burst) / shape.limit
        best = fixed + (n - shape.burst) / (shape.limit * jitter["jitter_bound"])
        jitter["run_bound"] = round(ideal / best, 3)
        # ... and paying the Retry-After of a create refused at the end (the best schedule).
        startup = fixed - 2 * shape.latency_ms / 1000
        jitter["run_schedule_bound"] = round(
            ideal / (startup + jitter["schedule_s"] + shape.latency_ms / 1000), 3
        )
        first = stats.get("first_create_at")
        if isinstance(first, float | int):  # ... with this run's own start (up to the first create)
            own = float(first) - spawned + jitter["schedule_s"]
            jitter["run_schedule_bound_same_start"] = round(ideal / own, 3)
    return {
        "shape": shape.name,
        "server": shape.describe(),
        "concurrency": concurrency,
        "rate": rate,
        "sessions": sessions,
        "duplicates": dups,
        "wall_s": round(wall, 2),
        "apply_s": summary["elapsed_s"],
        "ideal_s": round(ideal, 2),
        "efficiency": round(ideal / wall, 3),
        "efficiency_in_apply": round(ideal / summary["elapsed_s"], 3),
        "rate_limited": summary["rate_limited"],
        "rate_limited_pct": round(100 * summary["rate_limited"] / max(1, n), 1),
        "max_creates_per_s": stats.get("creates_max_per_second"),
        "final_rate": summary["final_rate"],
        "exit_code": summary["exit_code"],
        # Where the wall time went (the simulator stamps arrivals on the same wall clock).
        "startup_s": _span(spawned, stats.get("first_request_at")),
        "before_creates_s": _span(stats.get("first_request_at"), stats.get("first_create_at")),
        "creating_s": _span(stats.get("first_create_at"), stats.get("last_create_at")),
        "tail_s": _span(stats.get("last_create_at"), ended),
        # The best any client with this start-up could do: the server's burst at once, the
        # rest at its limit, a latency for the listing before the first create and one for
        # the last answer.
        "bound": bound,
        # The same, with this run's requests before the first create (the start listing and
        # any wait for a young listing: apply's start, not its pacing) counted as they were.
        "bound_same_start": _bound_same_start(shape, n, stats.get("first_create_at"), spawned),
        "jitter": jitter,
    }


def run_messages(shape: Shape, n: int, rate: float, concurrency: int) -> dict[str, object]:
    """`devin-fleet message` to `n` sessions against a fresh simulator whose message endpoint
    has `shape`'s bucket (the sessions are launched first, unlimited); what happened."""
    with tempfile.TemporaryDirectory(prefix="pacing-bench-") as tmp:
        workdir = Path(tmp)
        sim = Sim(shape.message_profile(), workdir)
        try:
            path = write_campaign(workdir, n)
            run_apply(path, sim, concurrency, max(rate, 200.0))
            env = {**os.environ, **sim.env}
            cmd = [sys.executable, "-m", "launcher", "message", str(path), "--yes"]
            cmd += ["--text", "Rebase on main, please.", "--rate", f"{rate:g}"]
            cmd += ["--concurrency", str(concurrency), "--ledger", str(workdir / "ledger.db")]
            spawned = time.time()
            t = time.perf_counter()
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - t
            import httpx

            base = sim.env["DEVIN_API_BASE_URL"]
            stats = httpx.get(f"{base}/_sim/stats", timeout=30).json()
            sessions = sim.sessions()
        finally:
            sim.close()
    sent = re.search(r"sent (\d+) message", done.stdout)
    first = stats.get("first_message_at")
    ideal = n / shape.limit
    best = None
    if isinstance(first, float | int):  # start-up and the refresh before the first send, fixed
        best = (float(first) - spawned) + (n - shape.burst) / shape.limit + shape.latency_ms / 1000
    return {
        "shape": shape.name,
        "server": shape.describe(),
        "concurrency": concurrency,
        "rate": rate,
        "exit_code": done.returncode,
        "sent": int(sent.group(1)) if sent else None,
        "duplicates": sum(1 for x in sessions if int(str(x.get("messages", 0))) > 2),
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "efficiency": round(ideal / wall, 3),
        "rate_limited": stats.get("faults", {}).get("messages_rate_limited", 0),
        "max_messages_per_s": stats.get("messages_max_per_second"),
        "before_sends_s": _span(spawned, first),
        "bound": round(ideal / best, 3) if best else None,
    }


def _bound(shape: Shape, n: int, first_request: object, spawned: float) -> float | None:
    if not isinstance(first_request, float | int):
        return None
    best = (float(first_request) - spawned) + (n - shape.burst) / shape.limit
    return round((n / shape.limit) / (best + 2 * shape.latency_ms / 1000), 3)


def _bound_same_start(shape: Shape, n: int, first_create: object, spawned: float) -> float | None:
    if not isinstance(first_create, float | int):
        return None
    best = (float(first_create) - spawned) + (n - shape.burst) / shape.limit
    return round((n / shape.limit) / (best + shape.latency_ms / 1000), 3)


def _span(start: object, end: object) -> float | None:
    if not isinstance(start, float | int) or not isinstance(end, float | int):
        return None
    return round(float(end) - float(start), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", action="append", help="shape name (repeatable); default: all")
    ap.add_argument("--n", type=int, default=300, help="sessions per shape (default 300)")
    ap.add_argument(
        "--rate",
        type=float,
        default=100.0,
        help="apply --rate (default 100; at least twice the shape's limit)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        default=16,
        help="apply --concurrency (default 16; raised for limit x latency)",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per shape (default 1); then a summary per shape"
    )
    ap.add_argument(
        "--messages",
        action="store_true",
        help="pace `message` sends instead of creates (the shape's bucket on the message "
        "endpoint; the bound counts start-up and the refresh before the first send as fixed)",
    )
    ap.add_argument(
        "--trace",
        action="store_true",
        help="trace every create's send time and arrival: the delay's spread and, for one "
        "token, the best any client reaches under the measured jitter",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per shape")
    ap.add_argument("--list", action="store_true", help="list the shapes and exit")
    a = ap.parse_args()
    if a.list:
        for s in SHAPES:
            print(f"{s.name}: {s.describe()}, ideal {(s.sessions or a.n) / s.limit:.0f}s")
        return
    chosen = [s for s in SHAPES if (s.name in a.shape if a.shape else s.in_default)]
    if not chosen:
        raise SystemExit(f"no such shape; choose from {', '.join(s.name for s in SHAPES)}")
    as_installed()
    if a.messages:
        main_messages(chosen, a)
        return
    print(
        f"{a.n} sessions per shape; efficiency = (sessions / limit) / wall incl. start-up; "
        "eff(apply) leaves start-up out"
    )
    print(
        f"{'':2} {'server':52} {'rate':>4} {'conc':>4} {'wall s':>7} {'ideal':>6} {'eff':>6} "
        f"{'eff(apply)':>10} {'429s':>5} {'429%':>5} {'dup':>4} {'max/s':>5} {'final':>6}"
        f"  {'start':>5} {'pre':>5} {'send':>5} {'tail':>5} {'bound':>5}"
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    for shape in [s for s in chosen for _ in range(max(1, a.repeat))]:
        conc = shape.concurrency(a.concurrency)
        r = run_shape(shape, shape.sessions or a.n, shape.rate(a.rate), conc, trace=a.trace)
        runs.setdefault(shape.name, []).append(r)
        if a.json:
            print(json.dumps(r), flush=True)
            continue
        print(
            f"{r['shape']:2} {r['server']:52} {r['rate']:>4g} {r['concurrency']:>4} {r['wall_s']:>7} "
            f"{r['ideal_s']:>6} {r['efficiency']:>6} {r['efficiency_in_apply']:>10} "
            f"{r['rate_limited']:>5} {r['rate_limited_pct']:>5} {r['duplicates']:>4} "
            f"{r['max_creates_per_s']:>5} {r['final_rate']:>6}"
            f"  {r['startup_s']:>5} {r['before_creates_s']:>5} {r['creating_s']:>5} "
            f"{r['tail_s']:>5} {r['bound']:>5}",
            flush=True,
        )
        if r["jitter"]:
            print(f"   jitter: {json.dumps(r['jitter'])}", flush=True)
    if a.repeat > 1 and not a.json:
        _print_repeats(runs, a.repeat)


def _print_repeats(runs: dict[str, list[dict[str, Any]]], repeat: int) -> None:
    """Each shape over its repeated runs: efficiency min / median / max, bound and 429s medians."""
    print(
        f"\nover {repeat} runs: efficiency min / median / max (bound median; the bound with "
        "the run's own requests before the first create), 429s median"
    )
    for name, rs in runs.items():
        effs = sorted(r["efficiency"] for r in rs)
        bound = statistics.median(r["bound"] or 0.0 for r in rs)
        limited = statistics.median(r["rate_limited"] for r in rs)
        jb = [r["jitter"]["run_bound"] for r in rs if "run_bound" in r.get("jitter", {})]
        js = [r["jitter"]["run_schedule_bound"] for r in rs if "run_bound" in r.get("jitter", {})]
        jo = [
            r["jitter"].get("run_schedule_bound_same_start", 0.0)
            for r in rs
            if "run_bound" in r.get("jitter", {})
        ]
        jitter = ""
        if jb:
            jitter = (
                f", jitter bounds {statistics.median(jb):.3f} / {statistics.median(js):.3f} "
                f"(same start {statistics.median(jo):.3f})"
            )
        same = statistics.median(r["bound_same_start"] or 0.0 for r in rs)
        print(
            f"{name:2} {rs[0]['server']:52} {effs[0]:.3f} / {statistics.median(effs):.3f} / "
            f"{effs[-1]:.3f} ({bound:.3f}; same start {same:.3f}), {limited:g}{jitter}"
        )


def main_messages(chosen: list[Shape], a: argparse.Namespace) -> None:
    print(f"{a.n} messages per shape; efficiency = (messages / limit) / `message` wall time")
    runs: dict[str, list[dict[str, Any]]] = {}
    for shape in [s for s in chosen for _ in range(max(1, a.repeat))]:
        r = run_messages(shape, a.n, shape.rate(a.rate), shape.concurrency(a.concurrency))
        runs.setdefault(shape.name, []).append(r)
        print(json.dumps(r) if a.json else _message_line(r), flush=True)
    if a.repeat > 1 and not a.json:
        _print_repeats(runs, a.repeat)


def _message_line(r: dict[str, Any]) -> str:
    return (
        f"{r['shape']:2} {r['server']:52} rate {r['rate']:g} conc {r['concurrency']} "
        f"sent {r['sent']} exit {r['exit_code']} wall {r['wall_s']}s ideal {r['ideal_s']}s "
        f"eff {r['efficiency']} bound {r['bound']} 429s {r['rate_limited']} "
        f"dup {r['duplicates']} max/s {r['max_messages_per_s']} pre {r['before_sends_s']}s"
    )


if __name__ == "__main__":
    main()
