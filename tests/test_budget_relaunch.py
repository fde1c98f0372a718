"""Budgets count every session the campaign launches, relaunched attempts included: a relaunch
that would pass the budget is refused before anything is sent, and plan/status show the spend."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from launcher.cli import cli
from launcher.sim import Profile, SimServer

FAILING = Profile.model_validate(
    {
        "name": "failing",
        "outcomes": {"error": 1},
        "lifecycle": {
            "new_seconds": 0,
            "claimed_seconds": 0,
            "working_seconds_min": 5,
            "working_seconds_max": 20,  # 0.05-0.2 real seconds at time scale 100
        },
    }
)


def manifest(write: Any, sessions: int, acu: int) -> Path:
    return write(
        "b.yaml",
        f"""
        version: 1
        campaign: budgeted
        defaults: {{max_acu_limit: 2}}
        budget: {{max_sessions: {sessions}, max_total_acu: {acu}}}
        fleets:
          - name: f
            for_each: {{items: [a, b]}}
            session: {{prompt: "fix {{{{ item }}}}"}}
        """,
    )


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def sim(make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch) -> SimServer:
    server = make_sim(FAILING, time_scale=100)
    monkeypatch.setenv("DEVIN_API_KEY", server.token)
    monkeypatch.setenv("DEVIN_ORG_ID", server.org_id)
    monkeypatch.setenv("DEVIN_API_BASE_URL", server.base_url)
    return server


def test_a_relaunch_past_the_budget_is_refused_before_anything_is_sent(
    sim: SimServer, write: Any
) -> None:
    m = manifest(write, sessions=2, acu=4)
    first = run("apply", m, "--yes", "--wait", "--interval", "0.05")
    assert first.exit_code == 3, first.output  # both failed
    refused = run("apply", m, "--yes", "--relaunch", "failed")
    assert refused.exit_code == 1, refused.output
    assert "b.yaml:4:" in refused.output  # the budget line
    assert "budget.max_sessions: relaunching 2 key(s) would make 4 sessions" in refused.output
    assert "the budget allows 2" in refused.output
    assert "budget.max_total_acu: relaunching 2 key(s) would commit 8 ACUs" in refused.output
    assert "Traceback" not in refused.output
    assert len(sim.sessions()) == 2  # nothing sent
    shown = run("plan", m)
    assert "budget: 2 session(s) launched + 0 to launch / 2; ACU caps 4 launched" in shown.output


def test_plan_and_status_show_relaunches_spent_against_the_budget(sim: SimServer, write: Any) -> None:
    m = manifest(write, sessions=4, acu=8)
    assert run("apply", m, "--yes", "--wait", "--interval", "0.05").exit_code == 3
    assert run("apply", m, "--yes", "--relaunch", "failed").exit_code == 0
    assert len(sim.sessions()) == 4
    status = run("status", m)
    assert "budget: 4 session(s) launched (2 by relaunches) + 0 to launch / 4" in status.output
    assert "ACU caps 8 launched + 0 to launch / 8" in status.output
    data = json.loads(run("status", m, "-o", "json").stdout)
    assert data["budget"]["launched"] == 4 and data["budget"]["relaunched"] == 2
    run("status", m, "--watch", "--interval", "0.05")  # attempt 2 final: "a" may go again
    again = run("apply", m, "--yes", "--relaunch", "a")
    assert again.exit_code == 1 and "would make 5 sessions" in again.output
    assert len(sim.sessions()) == 4


def test_items_added_after_relaunches_are_refused_past_the_budget(sim: SimServer, write: Any) -> None:
    m = manifest(write, sessions=3, acu=100)
    assert run("apply", m, "--yes", "--wait", "--interval", "0.05").exit_code == 3
    assert run("apply", m, "--yes", "--relaunch", "a").exit_code == 0  # 3 sessions: at budget
    grown = m.read_text().replace("items: [a, b]", "items: [a, b, c]")
    m.write_text(grown)  # 3 items fit the plan-time check; with the relaunch they make 4
    res = run("apply", m, "--yes")
    assert res.exit_code == 1, res.output
    assert "launching the rest of the plan would make 4 sessions" in res.output
    assert len(sim.sessions()) == 3
