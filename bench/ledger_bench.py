"""Ledger backends side by side: an apply of 1,000 sessions against the simulator with the
SQLite ledger and with the PostgreSQL ledger (same run, same simulator profile), and the ledger
operations per second of each backend (the writes an apply makes per create).

    python bench/ledger_bench.py [--sessions 1000] [--pg URL]

The PostgreSQL URL comes from --pg or DEVIN_FLEET_TEST_PG (`.ci/pg.sh start` prints one).
Figures on a shared machine are noisy: compare within one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from apply_bench import Sim, as_installed, write_campaign

from launcher.ledger.location import open_ledger
from launcher.ledger.records import EventKind, LedgerEvent
from launcher.ledger.store import LedgerStore

PROFILE = {"name": "bench", "faults": {"latency_seconds": 0.02}}


def fresh_pg(base: str) -> str:
    """A schema of its own on the server (the bench's rows never meet anyone's)."""
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def apply_once(n: int, ledger: str, workdir: Path) -> dict[str, float | int]:
    """One `devin-fleet apply` of n sessions into `ledger`, against a fresh simulator."""
    path = write_campaign(workdir, n)
    sim = Sim(PROFILE, workdir)
    try:
        cmd = [sys.executable, "-m", "launcher", "apply", str(path), "--yes", "-o", "json"]
        cmd += ["--rate", "200", "--concurrency", "16", "--ledger", ledger]
        start = time.perf_counter()
        proc = subprocess.run(cmd, env={**os.environ, **sim.env}, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        created = len(sim.sessions())
    finally:
        sim.close()
    return {"sessions": created, "seconds": round(elapsed, 2), "per_second": round(created / elapsed, 1)}


def ops_per_second(led: LedgerStore, n: int) -> dict[str, float]:
    """What an apply asks of the store per create: an intent, the created fact (group commits
    of 8, as the writer batches them under load), and the fence check before the send."""
    from launcher import build_plan, load_manifest

    workdir = Path(tempfile.mkdtemp())
    plan = build_plan(load_manifest(write_campaign(workdir, n)))
    led.sync_plan(plan)
    led.acquire_lock()
    keys = [s.key for s in plan.sessions]
    start = time.perf_counter()
    for i in range(0, n, 8):
        chunk = keys[i : i + 8]
        led.write_events([LedgerEvent(k, EventKind.intent, 1) for k in chunk])
        for _ in chunk:
            led.holds_lock()
        led.write_events([LedgerEvent(k, EventKind.created, session_id=f"devin-{k}") for k in chunk])
    elapsed = time.perf_counter() - start
    led.release_lock()
    commits = 2 * ((n + 7) // 8)
    return {
        "commits_per_second": round(commits / elapsed, 1),
        "events_per_second": round(2 * n / elapsed, 1),
        "fence_checks_per_second": round(n / elapsed, 1),  # one per create, beside the commits
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--pg", default=os.environ.get("DEVIN_FLEET_TEST_PG"))
    args = parser.parse_args()
    if not args.pg:
        sys.exit("no PostgreSQL: pass --pg URL or set DEVIN_FLEET_TEST_PG (.ci/pg.sh start)")
    as_installed()
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("sqlite", "postgres"):
            where = str(root / f"{name}.db") if name == "sqlite" else fresh_pg(args.pg)
            work = root / name
            work.mkdir()
            row: dict[str, object] = {"apply": apply_once(args.sessions, where, work)}
            ops_where = str(root / "ops.db") if name == "sqlite" else fresh_pg(args.pg)
            with open_ledger(root, "bench", ops_where) as led:
                row["ledger"] = ops_per_second(led, args.sessions)
            out[name] = row
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
