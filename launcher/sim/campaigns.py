"""A campaign and its ledger as a finished run would leave them, with a mix of outcomes (most
succeeded, some failed, a few needing a human or still running): what `results`, `status` and
`report` show at 40 or 2,000 sessions, for the tests and the benches alike, without launching."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from launcher.ledger.location import open_ledger
from launcher.ledger.records import EventKind, LaunchState, LedgerEvent
from launcher.spec.build import build_plan
from launcher.spec.manifest import load_manifest

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "tests_passed"],
    "properties": {
        "status": {"type": "string", "enum": ["upgraded", "blocked"]},
        "tests_passed": {"type": "boolean"},
        "notes": {"type": "string"},
    },
}


def mixed_campaign_ledger(root: Path, n: int) -> tuple[Path, Path, dict[str, str]]:
    """A manifest of `n` services under `root` and its ledger with a mix of outcomes:
    (manifest, ledger, key -> outcome)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = "\n".join(f"acme/svc-{i:04d},team-{i % 7}" for i in range(n))
    (root / "svc.csv").write_text("repo,team\n" + rows + "\n", encoding="utf-8")
    path = root / "c.yaml"
    path.write_text(
        f"""version: 1
campaign: day2-{n}
success_when: "output.status == 'upgraded' and output.tests_passed"
fleets:
  - name: services
    for_each: {{file: svc.csv}}
    key: "{{{{ item.repo }}}}"
    session:
      prompt: "Upgrade {{{{ item.repo }}}}"
      structured_output_schema: {json.dumps(SCHEMA)}
""",
        encoding="utf-8",
    )
    plan = build_plan(load_manifest(path))
    rng = random.Random(n)
    kinds = ["succeeded"] * 14 + ["failed"] * 3 + ["needs-human"] * 2 + ["running"] * 1
    truth, events, updates = {}, [], []
    for i, s in enumerate(plan.sessions):
        kind = rng.choice(kinds)
        truth[s.key] = kind
        sid = f"devin-{i:032x}"
        events += [
            LedgerEvent(s.key, EventKind.intent, 1),
            LedgerEvent(
                s.key,
                EventKind.created,
                session_id=sid,
                state=LaunchState.created,
                url=f"https://app.devin.ai/sessions/{i:032x}",
            ),
        ]
        pr = [{"pr_url": f"https://github.com/{s.key}/pull/{i}", "pr_state": "open"}]
        status, detail, prs, output = {
            "succeeded": (
                "running",
                "waiting_for_user",
                pr,
                {"status": "upgraded", "tests_passed": True},
            ),
            "failed": ("error", None, [], None),
            "needs-human": ("running", "waiting_for_user", [], None),
            "running": ("running", "working", [], None),
        }[kind]
        if output is not None and i % 3 == 0:
            output = {**output, "notes": f"moved {i} modules to the new interpreter; " * 3}
        updates.append(
            {
                "session_id": sid,
                "status": status,
                "status_detail": detail,
                "outcome": kind,
                "acus_consumed": round(rng.uniform(0.5, 6), 2),
                "pull_requests": prs,
                "structured_output": output,
            }
        )
    ledger = root / "l.db"
    with open_ledger(path, plan.campaign, ledger) as led:
        led.sync_plan(plan)
        led.write_events(events)
        led.update_status(updates)
    return path, ledger, truth
