"""Rollout: canary waves with gates, the running-sessions ceiling, `apply --wait`, `status
--watch --timeout` and `cancel --gone`, against the simulator over loopback (fast time scale),
through the library and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from launcher import (
    ApiConfig,
    ApplyOptions,
    DevinClient,
    RolloutOptions,
    build_plan,
    load_manifest,
    open_ledger,
)
from launcher.run.rollout import (
    RolloutSummary,
    assign_waves,
    evaluate_gate,
    run_rollout,
)
from launcher.run.summary import Result as LaunchResult
from launcher.sim import Profile, SimServer
from launcher.spec.model import Gate, parse_duration
from launcher.spec.plan import Plan
from launcher.spec.waves import wave_sizes
from tests.helpers import FakeClock, campaign, point_cli_at, run, sessions_per_key, sim_lag

Write = Callable[[str, str], Path]


def profile(
    name: str, outcomes: dict[str, float], working: tuple[float, float], **faults: Any
) -> Profile:
    return Profile.model_validate(
        {
            "name": name,
            "outcomes": outcomes,
            "lifecycle": {
                "new_seconds": 0,
                "claimed_seconds": 0,
                "working_seconds_min": working[0],
                "working_seconds_max": working[1],
            },
            "faults": faults,
        }
    )


# Simulated seconds; the tests run the simulator at time_scale=100: 0.2-0.6 real seconds.
QUICK = profile("quick", {"finished": 1}, (20, 60))
FAILING = profile("failing", {"error": 1}, (20, 60))
HALF = profile("half", {"finished": 1, "error": 1}, (20, 60))
FOREVER = profile("forever", {"finished": 1}, (1e7, 1e7))


def manifest(write: Write, n: int, *, name: str = "ro", rollout: str = "", budget: str = "") -> Path:
    return campaign(write, n, name=name, top=f"{budget}\n{rollout}")


def rollout(
    plan: Plan,
    sim: SimServer,
    ledger: Path,
    ro: RolloutOptions | None = None,
    clock: FakeClock | None = None,
) -> RolloutSummary:
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)

    async def go() -> RolloutSummary:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                return await run_rollout(
                    plan,
                    client,
                    led,
                    ApplyOptions(rate=500.0, preflight=False, list_lag=sim_lag(sim)),
                    ro or RolloutOptions(interval=0.05, max_interval=0.2, ceiling_interval=0.05),
                    environ={},
                    clock=clock,
                )

    return anyio.run(clock.run, go) if clock is not None else anyio.run(go)


def wave_log(plan: Plan, ledger: Path) -> list[tuple[int, str]]:
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        return [(e["wave"], e["decision"]) for e in led.wave_log()]


def waves_of_sim_sessions(plan: Plan, sim: SimServer) -> list[tuple[int, dict[str, Any]]]:
    """(wave, sim session) in creation order."""
    wave = {
        s.identity_tag: w.number for w in assign_waves(plan) for k in w.keys for s in [plan.by_key()[k]]
    }
    return [(next(wave[t] for t in s["tags"] if t in wave), s) for s in sim.sessions()]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimServer], None]:
    def _env(sim: SimServer) -> None:
        point_cli_at(sim, monkeypatch)

    return _env


# =========================================================================== waves, offline


def test_wave_sizes_take_counts_percentages_of_the_plan_and_the_rest() -> None:
    assert wave_sizes([5, "20%", "rest"], 100) == [5, 20, 75]
    assert wave_sizes([5, "20%"], 100) == [5, 20, 75]  # the leftover is a final wave
    assert wave_sizes(["1%", "rest"], 10) == [1, 9]  # rounded up, at least one
    assert wave_sizes([5, "50%", "rest"], 3) == [3]  # empty waves are dropped
    assert wave_sizes([2, 2], 4) == [2, 2]
    assert wave_sizes([5], 0) == []


def test_waves_do_not_depend_on_item_order(write: Write) -> None:
    ro = 'rollout: {waves: [3, "25%", rest]}'
    forward = build_plan(load_manifest(manifest(write, 20, rollout=ro)))
    items = ", ".join(f"repo-{i:03d}" for i in reversed(range(20)))
    text = forward.manifest.path.read_text().replace(
        ", ".join(f"repo-{i:03d}" for i in range(20)), items
    )
    backward = build_plan(load_manifest(write("back.yaml", text)))
    assert [s.key for s in backward.sessions] != [s.key for s in forward.sessions]
    waves = [{k for k in w.keys} for w in assign_waves(forward)]
    assert waves == [{k for k in w.keys} for w in assign_waves(backward)]
    assert [len(w) for w in waves] == [3, 5, 12]
    # A sample, not the first items of the file.
    assert waves[0] != {"repo-000", "repo-001", "repo-002"}


def test_plan_shows_each_sessions_wave(write: Write) -> None:
    path = manifest(write, 10, rollout='rollout: {waves: [2, "30%"], gate: {wait_timeout: 30m}}')
    plan = build_plan(load_manifest(path))
    expected = {k: w.number for w in assign_waves(plan) for k in w.keys}
    res = run("plan", path, "-o", "json")
    assert res.exit_code == 0, res.output
    assert {s["key"]: s["wave"] for s in json.loads(res.stdout)["sessions"]} == expected
    table = run("plan", path)
    assert "wave" in table.stdout
    assert "rollout: 3 waves (wave 1: 2 session(s), wave 2: 3 session(s), wave 3: 5" in table.stdout
    assert plan.manifest.manifest.rollout is not None
    assert plan.manifest.manifest.rollout.gate.wait_timeout == 1800.0


def test_bad_rollout_and_ceiling_are_located_manifest_errors(write: Write) -> None:
    path = manifest(
        write,
        3,
        rollout='rollout: {waves: [0, "rest", "150%", 2], '
        "gate: {wait_timeout: soon, min_success_rate: 2}}",
        budget="budget: {max_running: 0}",
    )
    res = run("validate", path)
    assert res.exit_code == 1
    lines = res.stderr.splitlines()
    assert any("rollout.waves[0]: a wave needs at least 1 session" in ln for ln in lines), lines
    assert any("rollout.waves[2]: a percentage must be in (0, 100]" in ln for ln in lines), lines
    assert any("rollout.gate.wait_timeout: bad duration 'soon'" in ln for ln in lines), lines
    assert any("rollout.gate.min_success_rate" in ln for ln in lines), lines
    assert any("budget.max_running" in ln for ln in lines), lines
    assert all(ln.startswith(str(path)) for ln in lines[:-1]), lines
    assert "Traceback" not in res.output


def test_durations() -> None:
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400
    assert parse_duration(90) == 90 and parse_duration("45s") == 45 and parse_duration("0.5") == 0.5
    for bad in ("2x", "", "-5", 0, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_gate_rules() -> None:
    gate = Gate(min_success_rate=0.8, max_needs_human=1, max_failed=0)
    ok = evaluate_gate(gate, 1, {"succeeded": 4, "cancelled": 3, "running": 0})
    assert ok.passed and ok.success_rate == 1.0  # cancelled ones are left out
    bad = evaluate_gate(gate, 2, {"succeeded": 3, "failed": 1, "needs-human": 2})
    assert not bad.passed and len(bad.reasons) == 3
    assert "success rate 50% is below min_success_rate 80%" in bad.describe()
    assert evaluate_gate(Gate(), 1, {"succeeded": 9, "failed": 1}).passed is False  # default 1.0


# =========================================================================== waves, live


def test_a_passing_gate_opens_each_next_wave_only_after_the_wave_is_final(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(QUICK, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 9, rollout="rollout: {waves: [2, 3, rest]}")))
    summary = rollout(plan, sim, tmp_path / "l.db")
    assert summary.exit_code == 0, summary.to_json()
    assert [g.passed for g in summary.gates] == [True, True]
    assert wave_log(plan, tmp_path / "l.db") == [(1, "passed"), (2, "passed")]
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    launched = waves_of_sim_sessions(plan, sim)
    assert [w for w, _ in launched] == sorted(w for w, _ in launched)  # wave by wave
    for wave in (1, 2):
        done = max(s["settled_time"] for w, s in launched if w == wave)
        nxt = min(s["created_time"] for w, s in launched if w == wave + 1)
        assert done < nxt  # the next wave starts only once this one is final
    # Re-running creates nothing and records nothing new.
    again = rollout(plan, sim, tmp_path / "l.db")
    assert again.exit_code == 0 and len(sim.sessions()) == 9
    assert wave_log(plan, tmp_path / "l.db") == [(1, "passed"), (2, "passed")]


def test_a_stopping_gate_stops_with_exit_7_until_skip_gate(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(FAILING, time_scale=100)
    ro = "rollout: {waves: [2, rest], gate: {min_success_rate: 0.5}}"
    path = manifest(write, 6, rollout=ro)
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    env(sim)
    args = ("apply", path, "--yes", "--ledger", ledger, "--interval", "0.05")
    first = run(*args)
    assert first.exit_code == 7, first.output
    assert "wave 1: 0 of 2 succeeded (0%), 2 failed" in first.stdout
    assert "gate stopped: success rate 0% is below min_success_rate 50%" in first.stdout
    assert "--skip-gate" in first.stdout and "Traceback" not in first.output
    assert len(sim.sessions()) == 2  # wave 2 was not launched
    again = run(*args, "-o", "json")  # the gate is checked again, and still stops
    assert again.exit_code == 7
    data = json.loads(again.stdout)
    assert data["exit_code"] == 7 and data["rollout"]["stopped"]["wave"] == 1
    assert len(sim.sessions()) == 2
    skipped = run(*args, "--skip-gate")
    assert skipped.exit_code == 0, skipped.output
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert wave_log(plan, ledger) == [(1, "stopped"), (1, "stopped"), (1, "skipped")]


def test_limit_counts_over_the_whole_run_and_stops_inside_a_wave(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(QUICK, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 8, rollout="rollout: {waves: [2, rest]}")))
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    ro = RolloutOptions(interval=0.05, max_interval=0.2)

    async def go() -> RolloutSummary:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                options = ApplyOptions(rate=500.0, preflight=False, limit=4, list_lag=sim_lag(sim))
                return await run_rollout(plan, client, led, options, ro, environ={})

    summary = anyio.run(go)
    assert len(sim.sessions()) == 4 and summary.exit_code == 4  # unfinished: re-run to resume
    assert summary.incomplete == "wave 2: 4 session(s) not launched yet (--limit)"
    assert rollout(plan, sim, tmp_path / "l.db").exit_code == 0 and len(sim.sessions()) == 8


def test_wave_n_goes_straight_to_that_wave_and_is_recorded(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(QUICK, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 8, rollout="rollout: {waves: [2, 2, 2, rest]}")))
    ro = RolloutOptions(wave=3, interval=0.05, max_interval=0.2)
    summary = rollout(plan, sim, tmp_path / "l.db", ro)
    assert summary.exit_code == 0, summary.to_json()
    assert wave_log(plan, tmp_path / "l.db") == [(1, "forced"), (2, "forced"), (3, "passed")]
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert [g.wave for g in summary.gates] == [3]  # the forced waves were not followed
    res = run("apply", plan.manifest.path, "--yes", "--ledger", tmp_path / "l.db", "--wave", "9")
    assert res.exit_code == 64 and "the plan has 4 wave(s)" in res.stderr


def test_a_wave_still_running_at_its_wait_timeout_stops_with_exit_8_on_the_injected_clock(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    ro = "rollout: {waves: [2, rest], gate: {wait_timeout: 2h}}"
    plan = build_plan(load_manifest(manifest(write, 5, rollout=ro)))
    clock = FakeClock()
    summary = rollout(plan, sim, tmp_path / "l.db", RolloutOptions(interval=60, max_interval=600), clock)
    assert summary.exit_code == 8 and summary.view is not None and summary.view.timed_out
    assert summary.next_wave == 1 and len(sim.sessions()) == 2
    assert clock.t - 1000.0 >= 7200 and max(clock.sleeps) <= 600
    assert wave_log(plan, tmp_path / "l.db") == [(1, "timeout")]


# =========================================================================== kill -9 mid-wave


def start_apply(path: Path, sim: SimServer, ledger: Path, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }
    cmd = ["apply", str(path), "--yes", "--rate", "20", "--concurrency", "2", "--interval", "0.05"]
    cmd += ["--request-timeout", "3"]  # a killed run's create is not in transit for 30 s
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", *cmd, *extra, "--ledger", str(ledger), "-o", "json"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_wave_then_rerun_resumes_at_that_wave_exactly_once(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    # Sessions work 0.5-1 real seconds: wave 2's launch and follow leave a wide window for the
    # kill (it comes as soon as wave 2's second create shows).
    slow = profile(
        "slowquick", {"finished": 1}, (100, 200), latency_seconds=0.05, latency_jitter_seconds=0.1
    )
    sim = make_sim(slow, time_scale=200)
    path = manifest(write, 24, rollout="rollout: {waves: [3, 12, rest]}")
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    proc = start_apply(path, sim, ledger)
    deadline = time.monotonic() + 90
    while len(sim.sessions()) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # wave 1 passed its gate: wave 2 is launching
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -9  # killed mid-run, not finished
    before = len(sim.sessions())
    assert 5 <= before < 24, before
    assert max(sessions_per_key(plan, sim).values()) == 1
    assert wave_log(plan, ledger)[0] == (1, "passed")
    again = start_apply(path, sim, ledger)
    out, errs = again.communicate(timeout=100)
    assert again.returncode == 0, errs
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert wave_log(plan, ledger) == [(1, "passed"), (2, "passed")]  # no wave gated twice
    launched = [w for w, _ in waves_of_sim_sessions(plan, sim)]
    assert launched == sorted(launched)


@pytest.mark.slow
def test_ctrl_c_while_following_exits_130_and_a_rerun_keeps_following(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    import signal

    sim = make_sim(FOREVER, time_scale=100)
    path = manifest(write, 4)
    ledger = tmp_path / "l.db"
    proc = start_apply(path, sim, ledger, "--wait")
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if sim.stats()["requests"].get("GET /sessions", 0) >= 2:  # following
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130, errs
    assert "interrupted" in errs and json.loads(out)["interrupted"] is True
    assert len(sim.sessions()) == 4
    again = start_apply(path, sim, ledger, "--wait-timeout", "0.3")
    out, errs = again.communicate(timeout=60)
    assert again.returncode == 8, errs  # nothing more to launch; following timed out
    assert json.loads(out)["already_launched"] == 4 and len(sim.sessions()) == 4


# =========================================================================== the ceiling


def max_running(sessions: list[dict[str, Any]]) -> int:
    """The most sessions not final at once, replayed from the simulator's recorded times."""
    assert all(s["settled_time"] is not None for s in sessions)
    return max(
        sum(1 for o in sessions if o["created_time"] <= s["created_time"] < o["settled_time"])
        for s in sessions
    )


def test_the_running_ceiling_is_never_exceeded(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    longer = profile("longer", {"finished": 1}, (100, 200))  # 0.25-0.5 real seconds each
    sim = make_sim(longer, time_scale=400)
    path = manifest(write, 8, budget="budget: {max_running: 6}")
    env(sim)
    args = ("--yes", "--ledger", tmp_path / "l.db", "--interval", "0.05", "--wait")
    res = run("apply", path, *args, "--max-running", "3")  # the flag beats the budget
    assert res.exit_code == 0, res.output
    sessions = sim.sessions()
    assert len(sessions) == 8
    assert max_running(sessions) <= 3
    assert "holding: 3 running (ceiling 3)" in res.stderr
    # Checking the ceiling lists the campaign; it never GETs sessions one by one.
    assert sim.stats()["requests"].get("GET /sessions/{id}", 0) == 0


def test_without_a_ceiling_the_replay_sees_them_all_running(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The replay the ceiling test relies on can fail: uncapped, all 8 run at once."""
    sim = make_sim(FOREVER, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 8)))
    summary = rollout(plan, sim, tmp_path / "l.db")
    assert summary.exit_code == 0
    with pytest.raises(AssertionError):
        max_running(sim.sessions())  # none settled
    sessions = [{**s, "settled_time": s["created_time"] + 1e9} for s in sim.sessions()]
    assert max_running(sessions) == 8


def test_ceiling_counts_launches_the_listing_does_not_show_yet(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The adversary: sessions appear in list results late (list lag: as long as half a
    session's work), so a ceiling that trusted the listing alone would launch past it."""
    laggy = profile("laggy", {"finished": 1}, (100, 200), list_lag_seconds=0.25)
    sim = make_sim(laggy, time_scale=400)  # 0.25-0.5 real seconds of work each
    plan = build_plan(load_manifest(manifest(write, 7)))
    ro = RolloutOptions(max_running=2, wait=True, interval=0.05, max_interval=0.2, ceiling_interval=0.05)
    summary = rollout(plan, sim, tmp_path / "l.db", ro)
    assert summary.exit_code == 0, summary.to_json()
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert max_running(sim.sessions()) <= 2
    assert summary.holds >= 1


@pytest.mark.slow
def test_waves_and_ceiling_under_ambiguous_creates_launch_each_key_once(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The adversary: 500s after creating and dropped connections (the session exists, the
    answer is lost) while waves and the ceiling are on: apply adopts, never duplicates, and
    the adopted sessions count against the ceiling."""
    faulty = profile(
        "faulty",
        {"finished": 1},
        (100, 200),
        error_before_create=0.1,
        error_after_create=0.2,
        drop_after_create=0.15,
    )
    sim = make_sim(faulty, time_scale=400, seed=7)  # 0.25-0.5 real seconds of work each
    plan = build_plan(load_manifest(manifest(write, 10, rollout="rollout: {waves: [3, rest]}")))
    # a dropped answer's create may be in transit for a request timeout: 3 s, not 30, here
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token, read_timeout=3.0)
    ro = RolloutOptions(max_running=3, wait=True, interval=0.05, max_interval=0.2, ceiling_interval=0.05)

    async def go() -> RolloutSummary:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                options = ApplyOptions(
                    rate=500.0, preflight=False, lookup_grace=0.1, list_lag=sim_lag(sim)
                )
                return await run_rollout(plan, client, led, options, ro, environ={})

    summary = anyio.run(go)
    assert summary.exit_code == 0, summary.to_json()
    assert summary.apply.count(LaunchResult.adopted) >= 1  # the faults did land
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert max_running(sim.sessions()) <= 3


def test_ceiling_holds_polls_with_backoff_on_the_injected_clock_and_survives_a_5xx(
    write: Write,
) -> None:
    import httpx

    from launcher.run.ceiling import RunningCeiling
    from tests.helpers import ScriptedLists, session_json

    plan = build_plan(load_manifest(manifest(write, 2, name="fu")))
    busy = [session_json(f"devin-{i}", "running", "working") for i in range(3)]
    eased = [*busy[:2], session_json("devin-2", "running", "finished")]
    api = ScriptedLists([busy] * 5 + [503, eased])  # the first call lists before any hold
    clock, notes = FakeClock(), []
    cfg = ApiConfig("https://api.example.test", "org-x", "cog_x")

    async def go() -> tuple[bool, bool, int]:
        async with DevinClient(cfg, transport=httpx.MockTransport(api)) as client:
            ceiling = RunningCeiling(
                plan, client, 3, clock=clock, interval=1, max_interval=2, note=notes.append
            )
            admitted = await ceiling.admit("repo-000", anyio.Event())
            ceiling.done("repo-000", LaunchResult.created)  # not listed yet: still counted
            stopped = anyio.Event()
            stopped.set()
            return admitted, await ceiling.admit("repo-001", stopped), ceiling.running

    admitted, after_stop, running = anyio.run(clock.run, go)
    assert admitted and not after_stop and running == 3
    # Unchanged counts: the interval grows by half up to 2; the 503 is retried after a pause.
    assert clock.sleeps == [1, 1.5, 2, 2, 1]
    assert len(api.calls) == 7 and set(api.calls) == {"GET /v3/organizations/org-x/sessions"}
    assert notes[0] == "holding: 3 running (ceiling 3)" and len(notes) == 2 and "503" in notes[1]


# =========================================================================== apply --wait


@pytest.mark.slow
def test_the_readme_first_command_shows_the_whole_loop() -> None:
    """The README's first command, exactly as written: launch, follow, results table."""
    import re
    import shlex

    root = Path(__file__).resolve().parent.parent
    block = re.search(r"```bash\n(.*?)```", (root / "README.md").read_text(), re.S)
    assert block is not None
    line = next(ln for ln in block.group(1).splitlines() if ln.startswith("devin-fleet apply"))
    argv = shlex.split(line.split("#")[0])
    assert "--sim" in argv and "--wait" in argv
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "200"}
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    assert "created 20" in proc.stdout and "succeeded: 20" in proc.stdout
    assert "20 sessions, 20 succeeded" in proc.stdout and "need attention" not in proc.stdout
    assert "following: 20/20" in proc.stderr


def test_apply_wait_all_succeeded_exits_0_with_the_results_table(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(QUICK, time_scale=100)
    env(sim)
    path = manifest(write, 6)
    res = run("apply", path, "--yes", "--ledger", tmp_path / "l.db", "--wait", "--interval", "0.05")
    assert res.exit_code == 0, res.output
    assert "succeeded: 6" in res.stdout and "6 sessions, 6 succeeded" in res.stdout
    assert f"every session: devin-fleet results {path}" in res.stdout
    assert "6 sessions, 6 succeeded" in res.stdout


def test_apply_wait_some_failed_exits_3(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(HALF, time_scale=100)
    env(sim)
    path = manifest(write, 8)
    res = run(
        "apply",
        path,
        "--yes",
        "--ledger",
        tmp_path / "l.db",
        "--wait",
        "--interval",
        "0.05",
        "-o",
        "json",
    )
    assert res.exit_code == 3, res.output
    data = json.loads(res.stdout)
    counts = data["followed"]["counts"]
    planned = Counter(s["planned_outcome"] for s in sim.sessions())
    assert counts["failed"] == planned["error"] >= 1 and counts["succeeded"] == planned["finished"]
    assert data["exit_code"] == 3 and not data["followed"]["timed_out"]


def test_apply_wait_timeout_exits_8(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path = manifest(write, 4)
    args = ("apply", path, "--yes", "--ledger", tmp_path / "l.db", "--interval", "0.05")
    res = run(*args, "--wait-timeout", "0.3s")
    assert res.exit_code == 8, res.output
    assert "wait timed out with 4 session(s) still running" in res.stdout
    bad = run(*args, "--wait-timeout", "soon")
    assert bad.exit_code == 64 and "bad duration 'soon'" in bad.output


def test_status_watch_timeout_exits_8_not_6(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path = manifest(write, 3)
    assert run("apply", path, "--yes", "--ledger", tmp_path / "l.db").exit_code == 0
    res = run(
        "status",
        path,
        "--ledger",
        tmp_path / "l.db",
        "--watch",
        "--interval",
        "0.05",
        "--timeout",
        "0.3",
    )
    assert res.exit_code == 8, res.output
    assert "3 session(s) still running" in res.stderr


# =========================================================================== cancel --gone


def test_cancel_gone_asks_first_and_terminates_only_removed_items_sessions(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[[SimServer], None]
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    ledger = tmp_path / "l.db"
    path = manifest(write, 5)
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    full = build_plan(load_manifest(path))
    tags = {s.key: s.identity_tag for s in full.sessions}
    path.write_text(path.read_text().replace("repo-000, ", "").replace(", repo-004", ""))
    plan = run("plan", path, "--ledger", ledger)
    assert sum(ln.startswith("- ") for ln in plan.stdout.splitlines()) == 2, plan.stdout
    assert "cancel MANIFEST --gone" in plan.stdout
    asked = run("cancel", path, "--ledger", ledger, "--gone")
    assert asked.exit_code == 1 and "pass --yes" in asked.stderr
    assert "2 live session(s) of items removed from the manifest to terminate" in asked.stdout
    assert "repo-000" in asked.stdout and "repo-004" in asked.stdout
    assert not any(s["terminated"] for s in sim.sessions())  # nothing before the answer
    done = run("cancel", path, "--ledger", ledger, "--gone", "--yes")
    assert done.exit_code == 0, done.output
    terminated = {t for s in sim.sessions() if s["terminated"] for t in s["tags"]}
    assert {k for k, t in tags.items() if t in terminated} == {"repo-000", "repo-004"}
    again = run("cancel", path, "--ledger", ledger, "--gone", "--yes")
    assert again.exit_code == 0 and "nothing to cancel of items removed" in again.stdout


def test_a_lease_lost_while_following_a_wave_stops_the_rollout(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The adversary: another apply takes the campaign over while this one follows wave 1
    (paused past its lease). This run must neither decide the gate nor launch wave 2."""
    import contextlib

    from launcher.errors import ExitCode, LockedError, LockLostError
    from tests.holders import live_holder

    sim = make_sim(FOREVER, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 4, rollout="rollout: {waves: [1, rest]}")))
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    ledger = tmp_path / "l.db"
    ro = RolloutOptions(interval=0.05, max_interval=0.2)

    async def go() -> None:
        async with DevinClient(cfg) as client, anyio.create_task_group() as tg:

            async def take_over() -> None:
                while len(sim.sessions()) < 1:  # noqa: ASYNC110 (polls another thread: the sim)
                    await anyio.sleep(0.02)
                # Another process takes the campaign over and stays alive: a lock row of this
                # host and pid would be this process's own. In one transaction: an `unlock`
                # before it would let this run take the free lease back for its next wave.
                owners.append(
                    await anyio.to_thread.run_sync(
                        lambda: holders.enter_context(
                            live_holder(str(ledger), plan.campaign, takeover=True)
                        )
                    )
                )

            tg.start_soon(take_over)
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                # A lease of 3 s: renewed every 0.5 s, so a loaded machine does not lose it
                # by itself; the takeover is what must stop the run.
                options = ApplyOptions(rate=500.0, preflight=False, lock_ttl=3.0, list_lag=sim_lag(sim))
                try:
                    summary = await run_rollout(plan, client, led, options, ro, environ={})
                    outcome.append(summary.exit_code)
                except (LockLostError, LockedError) as exc:
                    outcome.append(exc)

    outcome: list[object] = []
    owners: list[str] = []
    with contextlib.ExitStack() as holders:
        anyio.run(go)
    (result,) = outcome
    if isinstance(result, LockLostError):  # found lost while following wave 1: the usual case
        assert "lost the campaign lock" in str(result)
    elif isinstance(result, LockedError):  # it landed after wave 1's last create: found at once
        assert owners[0] in str(result)
    else:  # the takeover landed while wave 1 was still launching: apply_plan's own fence
        assert result == ExitCode.lock_lost
    assert len(sim.sessions()) == 1  # wave 2 never launched
    assert wave_log(plan, ledger) == []  # no gate decided on a lost lease
