"""Relaunch with lineage (`apply --relaunch`): one new attempt per selected key, exactly once
(re-runs, SIGKILL mid-relaunch, a lost ledger), the earlier live attempt terminated unless
kept, `session_links` and `previous` in the new request, located errors for selectors that
match nothing; against the simulator over loopback (fast time scale) through the real CLI."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher import build_plan, load_manifest, open_ledger
from launcher.sim import Profile, SimServer
from launcher.spec.plan import Plan, attempt_of
from tests.helpers import campaign, run

Write = Callable[[str, str], Path]


def profile(name: str, outcomes: dict[str, float], working: float, **faults: Any) -> Profile:
    return Profile.model_validate(
        {
            "name": name,
            "outcomes": outcomes,
            "lifecycle": {
                "new_seconds": 0,
                "claimed_seconds": 0,
                "working_seconds_min": working,
                "working_seconds_max": working * 3,
            },
            "faults": faults,
        }
    )


HALF = profile("half", {"finished": 1, "error": 1}, 20)  # 0.2-0.6 s at time_scale=100
DELIVERING = profile("delivering", {"delivered": 1}, 20)
FOREVER = profile("forever", {"finished": 1}, 1e7)
SLOW_FOREVER = profile(
    "slow-forever", {"finished": 1}, 1e7, latency_seconds=0.05, latency_jitter_seconds=0.1
)
PROMPT = (
    "Fix {{ item }}{% if previous %} (attempt {{ previous.attempt + 1 }}: the last one ended "
    "{{ previous.status }}){% endif %}"
)


def manifest(write: Write, n: int, name: str = "rl") -> Path:
    return campaign(write, n, name=name, prompt=PROMPT)


def by_key(plan: Plan, sim: SimServer) -> dict[str, list[dict[str, Any]]]:
    """The simulator's sessions per planned key, in creation order."""
    tags = {s.identity_tag: s.key for s in plan.sessions}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sim.sessions():
        out[next(tags[t] for t in s["tags"] if t in tags)].append(s)
    return out


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimServer], dict[str, str]]:
    def _env(sim: SimServer) -> dict[str, str]:
        values = {
            "DEVIN_API_KEY": sim.token,
            "DEVIN_ORG_ID": sim.org_id,
            "DEVIN_API_BASE_URL": sim.base_url,
        }
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return values

    return _env


def test_relaunch_failed_makes_one_attempt_per_failed_key_with_lineage_and_a_rerun_makes_none(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(HALF, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 8), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    first = run("apply", path, "--yes", "--ledger", ledger, "--wait", "--interval", "0.05")
    assert first.exit_code == 3, first.output  # some failed
    failed = {k for k, v in by_key(plan, sim).items() if v[0]["planned_outcome"] == "error"}
    assert 0 < len(failed) < len(plan)
    old = {k: v[0]["session_id"] for k, v in by_key(plan, sim).items()}

    res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "failed", "-o", "json")
    assert res.exit_code == 0, res.output
    assert f"relaunch: {len(failed)} new attempt(s)" in res.stderr
    assert json.loads(res.stdout)["relaunch"]["new_attempts"] == {k: 2 for k in sorted(failed)}
    sessions = by_key(plan, sim)
    assert {k: len(v) for k, v in sessions.items()} == {
        s.key: 2 if s.key in failed else 1 for s in plan.sessions
    }
    for key in failed:
        new = sessions[key][1]
        assert attempt_of(new["tags"]) == 2 and "fleet-attempt:2" in new["tags"]
        assert new["session_links"] == [old[key]]  # the new session starts with that context
        assert new["prompt"].endswith("(attempt 2: the last one ended error)")  # `previous`
    for key in set(old) - failed:
        assert "attempt" not in sessions[key][0]["prompt"]  # attempt 1: previous is None

    # Once final, the keys whose new attempt failed too are relaunched again by the same
    # command (test_relaunch_failed_again_takes_the_keys_whose_new_attempt_failed_too).
    run("status", path, "--ledger", ledger, "--watch", "--interval", "0.05")

    # The plan does not show relaunched keys as changed: their fingerprint is the manifest's.
    shown = run("plan", path, "--ledger", ledger)
    assert shown.exit_code == 0 and "~" not in shown.output, shown.output

    # status and results show the latest attempt; results --history every one.
    status = json.loads(run("status", path, "--ledger", ledger, "-o", "json").stdout)
    attempts = {s["key"]: s["attempt"] for s in status["sessions"]}
    assert attempts == {s.key: 2 if s.key in failed else 1 for s in plan.sessions}
    hist = json.loads(run("results", path, "--ledger", ledger, "--history", "-o", "json").stdout)
    rows = [(r["key"], r["attempt"], r["latest"], r["session_id"]) for r in hist["sessions"]]
    assert len(rows) == len(plan) + len(failed)
    for key in failed:
        assert (key, 1, False, old[key]) in rows
        assert (key, 2, True, sessions[key][1]["session_id"]) in rows


def test_the_earlier_live_attempt_is_terminated_first_unless_kept(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 3), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0

    asked = run("apply", path, "--ledger", ledger, "--relaunch", "repo-000", input="n\n")
    assert asked.exit_code != 0
    assert "relaunch: 1 new attempt(s)" in asked.output  # said before asking
    assert "1 earlier live session(s) terminated first: repo-000" in asked.output
    assert "confirm" in asked.output and "Launch up to 0" not in asked.output
    assert len(sim.sessions()) == 3  # not confirmed: nothing done

    res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "repo-000")
    assert res.exit_code == 0, res.output
    kept = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "repo-001", "--keep-previous")
    assert kept.exit_code == 0, kept.output
    assert "kept running (--keep-previous)" in kept.output
    s = by_key(plan, sim)
    assert [x["terminated"] for x in s["repo-000"]] == [True, False]
    assert [x["terminated"] for x in s["repo-001"]] == [False, False]
    assert [x["terminated"] for x in s["repo-002"]] == [False]

    # The earlier attempts are known: no warning about sessions "not in this ledger".
    status = run("status", path, "--ledger", ledger)
    assert "not this ledger's" not in status.output, status.output
    assert "attempt" in status.output  # the table shows each key's attempt once there are 2

    # The kept one is still tracked: `cancel --earlier` ends it (and only it).
    ended = run("cancel", path, "--ledger", ledger, "--earlier", "--yes")
    assert ended.exit_code == 0, ended.output
    assert "terminated 1 earlier attempt(s)" in ended.output
    s = by_key(plan, sim)
    assert [x["terminated"] for x in s["repo-001"]] == [True, False]
    nothing = run("cancel", path, "--ledger", ledger, "--earlier", "--yes")
    assert "nothing to cancel (no earlier attempt was kept running)" in nothing.output

    # A lost ledger: status rebuilds it from the API, attempt 2 as the latest.
    ledger.unlink()
    rebuilt = json.loads(run("status", path, "--ledger", ledger, "-o", "json").stdout)
    latest = {x["key"]: (x["attempt"], x["session_id"]) for x in rebuilt["sessions"]}
    assert latest["repo-000"] == (2, s["repo-000"][1]["session_id"])
    assert latest["repo-001"] == (2, s["repo-001"][1]["session_id"])
    assert latest["repo-002"] == (1, s["repo-002"][0]["session_id"])
    hist = json.loads(run("results", path, "--ledger", ledger, "--history", "-o", "json").stdout)
    rows = [(r["key"], r["attempt"], r["session_id"]) for r in hist["sessions"]]
    assert ("repo-000", 1, s["repo-000"][0]["session_id"]) in rows  # attempt 1 is not lost
    assert len(rows) == 5
    with open_ledger(path, plan.campaign, ledger) as led:  # never adopted as a later attempt
        assert s["repo-000"][0]["session_id"] in led.known_session_ids("repo-000")
    # ... and re-running the relaunch with the rebuilt ledger creates nothing more
    again = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "repo-000")
    assert again.exit_code == 0, again.output
    assert len(sim.sessions()) == 5


def test_a_succeeded_session_needs_its_key_and_the_confirmation_names_its_pr(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(DELIVERING, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 2), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    done = run("apply", path, "--yes", "--ledger", ledger, "--wait", "--interval", "0.05")
    assert done.exit_code == 0, done.output
    for outcome in ("failed", "needs-human", "cancelled", "changed"):
        res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", outcome)
        assert res.exit_code == 64, res.output
        assert f"error: --relaunch {outcome}: no session of campaign rl is {outcome}" in res.output
        assert "Traceback" not in res.output
    assert len(sim.sessions()) == 2

    asked = run("apply", path, "--ledger", ledger, "--relaunch", "repo-001", input="n\n")
    with open_ledger(path, plan.campaign, ledger) as led:
        pr = (led.record("repo-001").pull_requests or [{}])[0]["pr_url"]
    assert pr and f"repo-001: attempt 1 SUCCEEDED ({pr})" in asked.output, asked.output
    assert len(sim.sessions()) == 2
    res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "repo-001")
    assert res.exit_code == 0, res.output
    assert {k: len(v) for k, v in by_key(plan, sim).items()} == {"repo-000": 1, "repo-001": 2}
    # The earlier attempt's PR is not lost.
    hist = run("results", path, "--ledger", ledger, "--history", "-o", "json")
    assert pr in hist.stdout


def test_selectors_that_match_nothing_are_usage_errors(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 2), tmp_path / "l.db"
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "nope-*")
    assert res.exit_code == 64, res.output
    assert "error: --relaunch 'nope-*': no key of campaign rl matches it" in res.output
    assert "hint:" in res.output and "Traceback" not in res.output
    # --replace is folded into --relaunch: an unknown key is an error, not "exit 0, nothing"
    old = run("apply", path, "--yes", "--ledger", ledger, "--replace", "repo-999")
    assert old.exit_code == 64, old.output
    assert len(sim.sessions()) == 2


def start_relaunch(path: Path, ledger: Path, environ: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", "apply", str(path), "--yes", "--rate", "25"]
        + ["--concurrency", "4", "--ledger", str(ledger), "--relaunch", "repo-*"],
        env={**os.environ, **environ},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_relaunch_then_rerun_still_makes_exactly_one_new_attempt_per_key(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(SLOW_FOREVER, time_scale=100)
    environ = env(sim)
    path, ledger = manifest(write, 24), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    assert run("apply", path, "--yes", "--ledger", ledger, "--rate", "50").exit_code == 0
    rng = random.Random(20261130)
    kills = 0
    for _ in range(4):
        before = (len(sim.sessions()), sum(x["terminated"] for x in sim.sessions()))
        proc = start_relaunch(path, ledger, environ)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            now = (len(sim.sessions()), sum(x["terminated"] for x in sim.sessions()))
            if now != before:  # terminating or creating: kill somewhere in there
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=20)
        for sessions in by_key(plan, sim).values():
            assert [attempt_of(x["tags"]) for x in sessions] in ([1], [1, 2])
    assert kills >= 2
    final = start_relaunch(path, ledger, environ)
    _, errs = final.communicate(timeout=120)
    assert final.returncode == 0, errs
    sessions = by_key(plan, sim)
    for key in (s.key for s in plan.sessions):
        first, second = sessions[key]  # exactly two: attempt 1, ended; attempt 2, running
        assert attempt_of(first["tags"]) == 1 and first["terminated"], key
        assert attempt_of(second["tags"]) == 2 and not second["terminated"], key
        assert second["session_links"] == [first["session_id"]]
    with open_ledger(path, plan.campaign, ledger) as led:
        records = led.records()
    assert {k: (r.launch_attempt, r.session_id) for k, r in records.items()} == {
        k: (2, v[1]["session_id"]) for k, v in sessions.items()
    }


def test_ambiguous_creates_of_a_relaunch_are_adopted_as_that_attempt_not_resent(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Half the creates answer 500 after creating, and the listing lags: each relaunched key
    still gets exactly one attempt-2 session, found by its identity and attempt tags."""
    faulty = profile("faulty", {"finished": 1}, 1e7, error_after_create=0.5, list_lag_seconds=0.3)
    sim = make_sim(faulty, time_scale=100, seed=7)
    env(sim)
    path, ledger = manifest(write, 12), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    args = ("--yes", "--ledger", ledger, "--lookup-grace", "0.5", "--rate", "50")
    assert run("apply", path, *args).exit_code == 0
    res = run("apply", path, *args, "--relaunch", "repo-00*")
    assert res.exit_code == 0, res.output
    assert sim.stats()["faults"], sim.stats()  # the fault did fire
    for key, sessions in by_key(plan, sim).items():
        want = [1, 2] if key.startswith("repo-00") else [1]
        assert [attempt_of(x["tags"]) for x in sessions] == want, key
    with open_ledger(path, plan.campaign, ledger) as led:
        events = led.events()
    assert any(e["kind"] == "adopted" and e["launch_attempt"] == 2 for e in events)


def test_a_crash_right_after_the_relaunch_was_recorded_is_finished_by_a_plain_apply(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    from launcher.ledger.attempts import relaunch

    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 2), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    with open_ledger(path, plan.campaign, ledger) as led:  # what a killed run left behind
        assert relaunch(led, "repo-000", live=True, keep=False, request="repo-000") == 2
        # a second run that selected attempt 1 before this one recorded: nothing more
        assert relaunch(led, "repo-000", live=True, keep=False, request="x", expected=1) is None
    shown = run("plan", path, "--ledger", ledger)
    assert "+ create: 1, = same: 1" in shown.output, shown.output  # attempt 2: to create
    res = run("apply", path, "--yes", "--ledger", ledger)
    assert res.exit_code == 0, res.output
    assert "relaunch: terminated 1 earlier attempt(s)" in res.output
    s = by_key(plan, sim)
    assert [(attempt_of(x["tags"]), x["terminated"]) for x in s["repo-000"]] == [(1, True), (2, False)]
    assert len(s["repo-001"]) == 1
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    assert len(sim.sessions()) == 3


def test_the_confirmation_says_exactly_what_will_happen() -> None:
    from launcher.run.relaunch import Pick, Selection
    from launcher.run.status import Outcome

    def pick(key: str, outcome: Outcome, live: bool, prs: tuple[str, ...] = ()) -> Pick:
        return Pick(key, 1, outcome, f"devin-{key}", live, prs)

    sel = Selection(
        "failed r-2",
        [
            pick("r-1", Outcome.failed, False),
            pick("r-2", Outcome.succeeded, True, ("https://github.com/acme/r-2/pull/7",)),
        ],
        already={"r-3": 2},
    )
    assert sel.question(0, keep=False) == (
        "Relaunch 2 key(s) as new attempts (terminating 1 earlier live session(s) first)"
    )
    assert sel.question(3, keep=True) == (
        "Relaunch 2 key(s) as new attempts (keeping 1 earlier live session(s) running), and "
        "launch up to 3 session(s) not launched yet"
    )
    text = "\n".join(sel.describe(keep=False))
    assert "relaunch: 2 new attempt(s)" in text
    assert "1 earlier live session(s) terminated first: r-2" in text
    assert "r-2: attempt 1 SUCCEEDED (https://github.com/acme/r-2/pull/7)" in text
    assert "already relaunched, not again: 1 key(s) whose new attempt is not final" in text
    assert "r-3" in text
    assert Selection("failed", [], already={"r-3": 2}).question(0, keep=False) == ""


def test_relaunch_changed_then_plan_shows_them_unchanged_and_a_rerun_makes_none(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 3), tmp_path / "l.db"
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    path.write_text(path.read_text().replace("Fix {{ item }}", "Fix {{ item }} carefully"))
    plan = build_plan(load_manifest(path))
    assert "~ changed: 3" in run("plan", path, "--ledger", ledger).output
    res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "changed")
    assert res.exit_code == 0, res.output
    assert "3 earlier live session(s) terminated first" in res.output
    for key, sessions in by_key(plan, sim).items():
        assert [(attempt_of(x["tags"]), x["terminated"]) for x in sessions] == [
            (1, True),
            (2, False),
        ], key
        assert sessions[1]["prompt"].startswith(f"Fix {key} carefully (attempt 2:")
    shown = run("plan", path, "--ledger", ledger)
    assert "= same: 3" in shown.output and "~" not in shown.output, shown.output
    again = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "changed")
    assert again.exit_code == 0, again.output
    assert "already relaunched, not again: 3 key(s)" in again.output
    assert len(sim.sessions()) == 6


def test_relaunch_failed_again_takes_the_keys_whose_new_attempt_failed_too(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Issue 21 item 3: `--relaunch failed` works as often as needed (the keys whose latest
    attempt is failed now), and is a no-op while the new attempts are live."""
    from launcher.sim import ManualClock

    clock = ManualClock()  # sessions end only when the test moves the simulator's time
    sim = make_sim(HALF, clock=clock, seed=SEED)
    env(sim)
    path, ledger = manifest(write, 12), tmp_path / "l.db"

    def outcomes() -> dict[str, tuple[int, str]]:
        res = run("status", path, "--ledger", ledger, "-o", "json")
        return {s["key"]: (s["attempt"], s["outcome"]) for s in json.loads(res.stdout)["sessions"]}

    def relaunch() -> dict[str, Any]:
        res = run("apply", path, "--yes", "--ledger", ledger, "--relaunch", "failed", "-o", "json")
        assert res.exit_code == 0, res.output
        return dict(json.loads(res.stdout)["relaunch"])

    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    clock.advance(1000)
    failed = {k for k, (_, o) in outcomes().items() if o == "failed"}
    assert 0 < len(failed) < 12
    assert relaunch()["new_attempts"] == {k: 2 for k in sorted(failed)}
    live = relaunch()  # right after: the new attempts run, nothing new
    assert live["new_attempts"] == {} and set(live["already_relaunched"]) == failed
    assert len(sim.sessions()) == 12 + len(failed)

    clock.advance(1000)
    now = outcomes()
    again = {k for k, (n, o) in now.items() if o == "failed"}
    assert again < failed and again and all(now[k][0] == 2 for k in failed)
    second = relaunch()  # the keys that failed again, and only them (not those that succeeded)
    assert second["new_attempts"] == {k: 3 for k in sorted(again)}
    assert second["already_relaunched"] == {}
    assert len(sim.sessions()) == 12 + len(failed) + len(again)


SEED = 3
