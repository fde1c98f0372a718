"""apply benchmarks: efficiency under an unknown rate limit, overhead against a naive script,
and peak memory. The simulator runs in its own process; apply runs as a real CLI process.

    python bench/apply_bench.py efficiency   # 2,000 sessions, server limit 50/s, 200 ms latency
    python bench/apply_bench.py overhead     # no limit, 20 ms latency: apply vs bench/naive_launcher.py
    python bench/apply_bench.py memory       # peak RSS of applying 10,000 sessions
    python bench/apply_bench.py all
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent


def as_installed() -> None:
    """Compile the package's bytecode, as installing it does. An editable install compiles on
    first import, except under PYTHONDONTWRITEBYTECODE (set on this machine, as in many
    container images): then every start recompiles its ~30 modules, 60-80 ms of start-up that
    an installed package never pays."""
    compileall.compile_dir(HERE.parent / "launcher", quiet=1)


class Sim:
    """`devin-fleet sim` in a subprocess, with introspection for the duplicate check."""

    def __init__(self, profile: dict[str, object], workdir: Path) -> None:
        path = workdir / "profile.json"
        path.write_text(json.dumps(profile))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launcher",
                "sim",
                "--port",
                "0",
                "--profile",
                str(path),
                "--introspection",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        env: dict[str, str] = {}
        assert self.proc.stdout is not None
        while len(env) < 4:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("simulator did not start")
            m = re.match(r"export (\w+)=(.*)", line.strip())
            if m:
                env[m.group(1)] = m.group(2)
        self.env = env

    def sessions(self) -> list[dict[str, object]]:
        r = httpx.get(f"{self.env['DEVIN_API_BASE_URL']}/_sim/sessions", timeout=60)
        return r.json()["sessions"]  # type: ignore[no-any-return]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def write_campaign(workdir: Path, n: int) -> Path:
    rows = "\n".join(f"acme/repo-{i:05d}" for i in range(n))
    (workdir / "repos.csv").write_text("repo\n" + rows + "\n")
    path = workdir / "bench.yaml"
    path.write_text("""version: 1
campaign: bench
defaults:
  max_acu_limit: 3
fleets:
  - name: repos
    for_each: {file: repos.csv}
    key: "{{ item.repo }}"
    session:
      title: "Upgrade {{ item.repo }}"
      repos: ["{{ item.repo }}"]
      prompt: "Upgrade {{ item.repo }} to Python 3.12 and open a pull request."
""")
    return path


def run_apply(path: Path, sim: Sim, concurrency: int, rate: float) -> tuple[float, int, dict]:
    env = {**os.environ, **sim.env}
    cmd = [
        sys.executable,
        "-m",
        "launcher",
        "apply",
        str(path),
        "--yes",
        "-o",
        "json",
        "--concurrency",
        str(concurrency),
        "--rate",
        str(rate),
        "--ledger",
        str(path.parent / "ledger.db"),
    ]
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    out, _ = proc.communicate()
    elapsed = time.perf_counter() - start
    maxrss = 0
    try:
        import resource

        maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    except ImportError:
        pass
    return elapsed, maxrss, json.loads(out)


def duplicates(sim: Sim) -> tuple[int, int]:
    sessions = sim.sessions()
    keys = Counter(t for s in sessions for t in s["tags"] if str(t).startswith("fleet-key:"))
    return len(sessions), sum(c - 1 for c in keys.values() if c > 1)


def efficiency(n: int = 2000) -> None:
    profile = {
        "name": "bench-limit",
        "faults": {"rate_limit": {"rate": 50, "burst": 50, "retry_after": True}, "latency_seconds": 0.2},
    }
    with tempfile.TemporaryDirectory() as d:
        sim = Sim(profile, Path(d))
        try:
            path = write_campaign(Path(d), n)
            elapsed, _, summary = run_apply(path, sim, concurrency=32, rate=200)
            total, dupes = duplicates(sim)
        finally:
            sim.close()
    ideal = n / 50
    print(
        f"efficiency: {n} sessions, server limit 50/s (unknown to the client), 200 ms latency, "
        f"--rate 200 --concurrency 32"
    )
    print(
        f"  wall {elapsed:.1f}s (includes start-up); ideal {ideal:.0f}s; ratio "
        f"{elapsed / ideal:.3f} (target <= 1.15)"
    )
    print(
        f"  created {summary['counts']['created']}, adopted {summary['counts']['adopted']}, "
        f"429s {summary['rate_limited']}, final rate {summary['final_rate']}/s, "
        f"sessions on server {total}, duplicates {dupes}"
    )


def overhead(n: int = 2000, concurrency: int = 16) -> None:
    profile = {"name": "bench-fast", "faults": {"latency_seconds": 0.02}}
    with tempfile.TemporaryDirectory() as d:
        sim = Sim(profile, Path(d))
        try:
            env = sim.env
            out = subprocess.run(
                [
                    sys.executable,
                    str(HERE / "naive_launcher.py"),
                    env["DEVIN_API_BASE_URL"],
                    env["DEVIN_ORG_ID"],
                    env["DEVIN_API_KEY"],
                    str(n),
                    str(concurrency),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            naive_s = float(re.search(r"in ([\d.]+)s", out).group(1))  # type: ignore[union-attr]
            path = write_campaign(Path(d), n)
            elapsed, _, summary = run_apply(path, sim, concurrency=concurrency, rate=100000)
        finally:
            sim.close()
    apply_s = summary["elapsed_s"]
    print(f"overhead: {n} sessions, no server limit, 20 ms latency, concurrency {concurrency}")
    print(f"  naive script: {naive_s:.2f}s ({n / naive_s:.0f}/s)")
    print(
        f"  apply (ledger, pacing, intent commits): {apply_s:.2f}s ({n / apply_s:.0f}/s), "
        f"{elapsed:.2f}s with start-up and planning"
    )
    print(f"  throughput ratio apply/naive: {naive_s / apply_s:.2f} (target >= 0.8)")


def memory(n: int = 10000) -> None:
    profile = {"name": "bench-mem", "faults": {}}
    with tempfile.TemporaryDirectory() as d:
        sim = Sim(profile, Path(d))
        try:
            path = write_campaign(Path(d), n)
            elapsed, maxrss, summary = run_apply(path, sim, concurrency=32, rate=100000)
        finally:
            sim.close()
    print(
        f"memory: applying {n} sessions: peak RSS {maxrss / 1024:.0f} MB, "
        f"{elapsed:.1f}s wall, created {summary['counts']['created']}"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("which", choices=["efficiency", "overhead", "memory", "all"])
    ap.add_argument("--n", type=int)
    a = ap.parse_args()
    as_installed()
    if a.which in ("efficiency", "all"):
        efficiency(a.n or 2000)
    if a.which in ("overhead", "all"):
        overhead(a.n or 2000)
    if a.which in ("memory", "all"):
        memory(a.n or 10000)
