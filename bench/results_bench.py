"""results/report benchmark: time to build the rows, write CSV, markdown and the HTML report
for a large synthetic campaign (no network: the view is built in memory), and the report's size.

    python bench/results_bench.py            # 10,000 sessions
    python bench/results_bench.py --n 40000
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launcher import build_plan, load_manifest
from launcher.run.status import CampaignView, Outcome, SessionView
from launcher.views.report import render_report
from launcher.views.results import build_results, to_csv, to_markdown

SCHEMA = """{"type": "object", "properties": {"migrated": {"type": "boolean"},
  "files_changed": {"type": "integer"}, "blockers": {"type": "array", "items": {"type": "string"}},
  "stats": {"type": "object", "properties": {"added": {"type": "integer"}}}}}"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.yaml"
        path.write_text(
            textwrap.dedent(
                f"""
                version: 1
                campaign: bench
                success_when: "output.migrated and not output.blockers"
                fleets:
                  - name: f
                    for_each: {{items: [x]}}
                    session:
                      prompt: p
                      structured_output_schema: {" ".join(SCHEMA.split())}
                """
            )
        )
        plan = build_plan(load_manifest(path))
    rng = random.Random(1)
    outcomes = list(Outcome)
    sessions = [
        SessionView(
            f"repo-{i:05d}",
            "f",
            {"repo": f"repo-{i:05d}", "team": f"team-{i % 7}"},
            f"devin-{i:032x}",
            f"https://app.devin.ai/sessions/{i:032x}",
            "running",
            "waiting_for_user",
            rng.choice(outcomes),
            [{"pr_url": f"https://github.com/acme/r{i}/pull/1", "pr_state": "open"}],
            rng.uniform(0, 8),
            {
                "migrated": rng.random() < 0.7,
                "files_changed": rng.randint(0, 90),
                "blockers": rng.sample(["ci", "tests", "owner"], rng.randint(0, 2)),
                "stats": {"added": rng.randint(0, 500)},
            },
            True,
            attempts=1,
        )
        for i in range(n)
    ]
    view = CampaignView("bench", sessions, 40_000)
    launched = {s.key: 1_700_000_000 + i for i, s in enumerate(sessions)}
    for name, fn in (
        ("build rows", lambda: build_results(view, plan.schemas)),
        ("csv", lambda: to_csv(build_results(view, plan.schemas))),
        ("markdown", lambda: to_markdown(build_results(view, plan.schemas))),
        ("group by output.blockers", lambda: build_results(view, plan.schemas).group("blockers")),
        ("html report", lambda: render_report(plan, view, launched, now=0)),
    ):
        t = time.perf_counter()
        out = fn()
        ms = (time.perf_counter() - t) * 1000
        size = f", {len(out):,} chars" if isinstance(out, str) else ""
        print(f"{name:26s} {n:,} sessions: {ms:8.1f} ms{size}")


if __name__ == "__main__":
    main()
