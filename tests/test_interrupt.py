"""A real `devin-fleet apply` process killed (SIGKILL) or interrupted (SIGINT) mid-run, then
re-run: never a duplicate session, never a session missing from the ledger."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest, open_ledger
from launcher.sim import Profile, SimServer
from tests.helpers import assert_exactly_once_and_ledger_agrees, campaign, sessions_per_key, wait_for

Write = Callable[[str, str], Path]
# Latency stretches the run over a few seconds, so kills land before, during and after creates.
SLOW = Profile.model_validate(
    {"name": "slow", "faults": {"latency_seconds": 0.05, "latency_jitter_seconds": 0.1}}
)


def start_apply(path: Path, sim: SimServer, ledger: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "apply",
            str(path),
            "--yes",
            "--rate",
            "25",
            "--concurrency",
            "4",
            "--ledger",
            str(ledger),
            "-o",
            "json",
            # the simulator answers in milliseconds: a killed run's create is not in transit
            # for the default 30 s, which a re-run would wait before looking it up
            "--request-timeout",
            "3",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_creates_each_session_exactly_once(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(SLOW)
    path = campaign(write, 60)
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    rng = random.Random(20261128)
    for _ in range(5):
        proc = start_apply(path, sim, ledger)
        before = len(sim.sessions())
        # Kill once the server has seen a random number (0-6) of this run's creates: before its
        # first, right after one (its answer still on the way), or between two. Five rounds of
        # at most 6 (+ 4 in flight) leave most of the 60 to do, so every round ends in a kill.
        k = rng.randint(0, 6)
        wait_for(lambda p=proc, b=before, k=k: len(sim.sessions()) >= b + k or p.poll() is not None, 60)
        assert proc.poll() is None, proc.communicate()  # still running: killed, not finished
        proc.kill()
        proc.communicate(timeout=20)
        assert max(sessions_per_key(plan, sim).values(), default=0) <= 1
    assert len(sim.sessions()) < len(plan)  # the resume below has work left
    final = start_apply(path, sim, ledger)
    out, errs = final.communicate(timeout=120)
    assert final.returncode == 0, errs
    assert_exactly_once_and_ledger_agrees(plan, sim, ledger)
    with open_ledger(path, plan.campaign, ledger) as led:
        kinds = {e["kind"] for e in led.events()}
    assert "intent" in kinds and "created" in kinds


@pytest.mark.slow
def test_sigint_finishes_in_flight_creates_exits_130_and_resumes(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(SLOW)
    path = campaign(write, 60)
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    proc = start_apply(path, sim, ledger)
    assert wait_for(lambda: len(sim.sessions()) >= 5, 30)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130, errs
    assert "interrupted" in errs
    import json

    summary = json.loads(out)
    assert summary["interrupted"] is True
    created_before_resume = len(sim.sessions())
    assert 5 <= created_before_resume < 60
    # Nothing in flight was lost: every session the API has is in the ledger already.
    with open_ledger(path, plan.campaign, ledger) as led:
        launched = {r.session_id for r in led.records().values() if r.state.launched}
    assert {s["session_id"] for s in sim.sessions()} == launched
    again = start_apply(path, sim, ledger)
    out, errs = again.communicate(timeout=120)
    assert again.returncode == 0, errs
    assert json.loads(out)["already_launched"] == created_before_resume
    assert_exactly_once_and_ledger_agrees(plan, sim, ledger)
