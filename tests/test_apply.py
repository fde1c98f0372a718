"""apply against the simulator over loopback TCP: exactly once under every fault profile,
auth stops, nothing sent for bad input, the plan/ledger diff, replace, and the lock."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from launcher import (
    AuthError,
    LockedError,
    SecretError,
    build_plan,
    load_manifest,
    open_ledger,
)
from launcher.cli import cli
from launcher.ledger.store import Change, LedgerEvent
from launcher.run.summary import Result
from launcher.sim import Profile, SimServer, load_profile
from tests.helpers import (
    assert_exactly_once_and_ledger_agrees,
    campaign,
    point_cli_at,
    run_apply,
    sessions_per_key,
)
from tests.holders import dead_holder, live_holder

Write = Callable[[str, str], Path]


def test_clean_apply_creates_each_session_once_and_a_rerun_creates_nothing(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 25)))
    first = run_apply(plan, sim, tmp_path / "l.db")
    assert first.count(Result.created) == 25 and first.exit_code == 0
    second = run_apply(plan, sim, tmp_path / "l.db")
    assert second.already == 25 and second.results == {} and second.exit_code == 0
    assert_exactly_once_and_ledger_agrees(plan, sim, tmp_path / "l.db")
    # What was sent is what was planned: same prompt, repos, both identity tags.
    sent = {t: s for s in sim.sessions() for t in s["tags"]}
    for p in plan.sessions:
        assert sent[p.identity_tag]["prompt"] == p.request["prompt"]
        assert set(p.tags) <= set(sent[p.identity_tag]["tags"])


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["ratelimited", "flaky", "hostile"])
def test_every_fault_profile_ends_with_exactly_one_session_per_key(
    profile: str, write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """Each shipped fault profile, its list lag at most 0.25 s (hostile's 2 s, flaky's 0.5,
    scaled down: a lookup round waits twice the lag seen; the lag is still there to miss, and
    still waited for, but a round costs about a second, not 4.7). The grace is the request
    timeout: the lag bound, not a grace, keeps a lookup from missing a session (the race of a
    lag longer than the grace is test_exactly_once's test_3)."""
    prof = load_profile(profile)
    lag = min(prof.faults.list_lag_seconds, 0.25)
    sim = make_sim(
        prof.model_copy(update={"faults": prof.faults.model_copy(update={"list_lag_seconds": lag})}),
        seed=7,
    )
    plan = build_plan(load_manifest(campaign(write, 40)))
    ledger = tmp_path / "l.db"
    summaries = []
    for _ in range(3):  # hostile may leave unknowns for the next run: that is the design
        s = run_apply(
            plan, sim, ledger, read_timeout=1.0, lookup_grace=1.0, concurrency=10, breaker_threshold=50
        )
        summaries.append(s)
        if s.exit_code == 0:
            break
    if profile != "hostile":
        assert summaries[0].exit_code == 0 and len(summaries) == 1, summaries[0].to_json()
    assert summaries[-1].exit_code == 0, summaries[-1].to_json()
    assert_exactly_once_and_ledger_agrees(plan, sim, ledger)
    faults = sim.stats()["faults"]
    if profile == "ratelimited":
        assert sum(s.rate_limited for s in summaries) > 0  # the limit was hit and survived
    else:
        injected = {k for k, v in faults.items() if v}
        assert {"error_after_create", "drop_after_create"} & injected, faults
        adopted = sum(s.count(Result.adopted) for s in summaries)
        assert adopted > 0  # ambiguous creates were found by tag, not resent


def test_401_stops_the_run_before_any_create(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 10)))
    with pytest.raises(AuthError):
        run_apply(plan, sim, tmp_path / "l.db", token="cog_wrong")
    assert sim.sessions() == []


def test_403_on_create_aborts_after_the_first_answers(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    profile = Profile.model_validate(
        {"tokens": [{"token": "cog_readonly", "name": "ro", "permissions": ["ReadAccountMeta"]}]}
    )
    sim = make_sim(profile)
    plan = build_plan(load_manifest(campaign(write, 50)))
    summary = run_apply(plan, sim, tmp_path / "l.db", token="cog_readonly", concurrency=4)
    assert summary.exit_code == 5 and isinstance(summary.aborted, AuthError)
    assert sim.sessions() == []
    creates = sim.stats()["requests"].get("POST /sessions", 0)
    assert creates <= 4  # at most what was in flight, not 50 (the reconcile listing stops it first)
    assert summary.count(Result.not_started) >= 46


def test_bad_manifest_sends_nothing(
    write: Write, make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 3, prompt="Fix {{ item.nope }}")
    point_cli_at(sim, monkeypatch)
    result = CliRunner().invoke(cli, ["apply", str(path), "--yes"])
    assert result.exit_code == 1
    assert "undefined" in result.output and "Traceback" not in result.output
    assert sim.stats()["requests"] == {}


def test_missing_secret_env_is_refused_before_anything_is_sent(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    path = campaign(
        write,
        3,
        extra="""              session_secrets:
                - key: TOKEN
                  value: {env: FLEET_TEST_SECRET}""",
    )
    plan = build_plan(load_manifest(path), environ={})
    assert any("FLEET_TEST_SECRET" in w for w in plan.warnings)
    with pytest.raises(SecretError):
        run_apply(plan, sim, tmp_path / "l.db", environ={})
    assert sim.stats()["requests"] == {}
    # With the variable set, the value reaches the API and nowhere else.
    secret = "s3cr3t-value-xyz"
    summary = run_apply(plan, sim, tmp_path / "l.db", environ={"FLEET_TEST_SECRET": secret})
    assert summary.count(Result.created) == 3
    assert all(s["session_secret_keys"] == ["TOKEN"] for s in sim.sessions())
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_plan_diff_shows_created_changed_and_gone_and_replace_relaunches(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 6)
    ledger = tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    run_apply(plan, sim, ledger, limit=4)
    runner = CliRunner()
    args = ["plan", str(path), "--ledger", str(ledger), "-o", "json", "--detailed-exitcode"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 2
    import json

    changes = [s["change"] for s in json.loads(res.output)["sessions"]]
    assert changes == ["=", "=", "=", "=", "+", "+"]
    run_apply(plan, sim, ledger)
    assert runner.invoke(cli, args).exit_code == 0  # nothing to do

    # Change one item's request (its prompt) and drop another item.
    text = path.read_text().replace("repo-001,", "repo-001-renamed,")
    path.write_text(
        text.replace(
            'prompt: "Fix {{ item }}"',
            "prompt: \"Fix {{ item }}{% if item == 'repo-002' %}!{% endif %}\"",
        )
    )
    changed = build_plan(load_manifest(path))
    with open_ledger(path, changed.campaign, ledger) as led:
        diff = {k: c for c, k, _ in led.diff(changed)}
    assert diff["repo-002"] == Change.changed
    assert diff["repo-001"] == Change.gone
    assert diff["repo-001-renamed"] == Change.create
    assert diff["repo-000"] == Change.same

    summary = run_apply(changed, sim, ledger)
    assert summary.changed == ["repo-002"]  # not relaunched unless asked (`--relaunch changed`)
    assert summary.count(Result.created) == 1  # the renamed one
    assert sessions_per_key(changed, sim)["repo-002"] == 1


def test_an_intent_left_by_a_crash_is_adopted_when_the_session_exists(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, sim_client: Callable[..., Any]
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 3)))
    ledger_path = tmp_path / "l.db"
    crashed, never_sent = plan.sessions[0], plan.sessions[1]
    with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as led:
        led.sync_plan(plan)
        # A crash right after the request left: the intent is durable, the outcome is not.
        led.write_events(
            [LedgerEvent(crashed.key, "intent", 1), LedgerEvent(never_sent.key, "intent", 1)]
        )
    resp = sim_client(sim).post(f"/v3/organizations/{sim.org_id}/sessions", json=crashed.body({}))
    assert resp.status_code == 200
    # A crashed run's request may still be in transit: its key is looked up a request timeout
    # later (1 s here, not the default 30, and no longer grace: to keep the test short).
    summary = run_apply(plan, sim, ledger_path, read_timeout=1.0, lookup_grace=0.5)
    assert summary.results == {
        crashed.key: Result.adopted,
        never_sent.key: Result.created,
        plan.sessions[2].key: Result.created,
    }
    assert_exactly_once_and_ledger_agrees(plan, sim, ledger_path)
    with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as led:
        assert led.record(crashed.key).session_id == resp.json()["session_id"]  # type: ignore[union-attr]
        kinds = [e["kind"] for e in led.events(never_sent.key)]
    assert kinds == ["intent", "absent", "intent", "created"]


def test_a_live_lock_refuses_a_second_apply_and_a_dead_holder_is_taken_over(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 2)))
    ledger_path = tmp_path / "l.db"
    with live_holder(str(ledger_path), plan.campaign) as owner:
        with pytest.raises(LockedError) as info:
            run_apply(plan, sim, ledger_path, lock_timeout=0)
        assert "devin-fleet unlock" in (info.value.hint or "") and owner in info.value.message
        assert sim.sessions() == []
        runner = CliRunner()
        res = runner.invoke(cli, ["unlock", str(plan.manifest.path), "--ledger", str(ledger_path)])
        assert res.exit_code == 0 and owner in res.output
    # A holder on this host whose process is gone is taken over without asking.
    dead_holder(str(ledger_path), plan.campaign)
    assert run_apply(plan, sim, ledger_path).count(Result.created) == 2


def test_only_and_limit_select_sessions(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 12)))
    s = run_apply(plan, sim, tmp_path / "l.db", only=("repo-00*",), limit=4)
    assert sorted(s.results) == ["repo-000", "repo-001", "repo-002", "repo-003"]
    s = run_apply(plan, sim, tmp_path / "l.db", only=("repo-00*",))
    assert len(s.results) == 6 and s.already == 4
    assert len(sim.sessions()) == 10


def test_apply_cli_needs_yes_without_a_terminal_and_prints_a_json_summary(
    write: Write, make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 3)
    for k, v in {
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }.items():
        monkeypatch.setenv(k, v)
    runner = CliRunner()
    res = runner.invoke(cli, ["apply", str(path)])
    assert res.exit_code == 1 and "--yes" in res.output
    assert sim.sessions() == []
    res = runner.invoke(cli, ["apply", str(path), "--yes", "-o", "json"])
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.output[res.output.index("{") :])
    assert data["counts"]["created"] == 3 and data["exit_code"] == 0
    assert sim.token not in res.output
    assert (path.parent / ".devin-fleet" / "demo.db").exists()  # the default ledger location


def test_apply_sim_runs_with_nothing_configured() -> None:
    """The README's first command: an example campaign against the embedded simulator."""
    root = Path(__file__).resolve().parent.parent
    res = CliRunner().invoke(
        cli, ["apply", str(root / "manifests/py312-upgrade.yaml"), "--sim", "--yes", "--rate", "100"]
    )
    assert res.exit_code == 0, res.output
    assert "created 20" in res.output
    assert not (root / "manifests/.devin-fleet").exists()  # a rehearsal leaves no ledger behind
    assert os.environ.get("DEVIN_API_KEY") is None


def test_request_timeout_turns_a_slow_create_into_a_lookup_that_adopts_it(
    write: Write, make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow = Profile.model_validate({"faults": {"delay_after_create": 1.0, "delay_seconds": 30}})
    sim = make_sim(slow)
    path = campaign(write, 3)
    for k, v in {
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }.items():
        monkeypatch.setenv(k, v)
    res = CliRunner().invoke(
        cli,
        [
            "apply",
            str(path),
            "--yes",
            "-o",
            "json",
            "--request-timeout",
            "0.3",
            "--lookup-grace",  # the default 3 s adds nothing here: the session exists at once
            "0.3",
            "--ledger",
            str(tmp_path / "l.db"),
        ],
    )
    assert res.exit_code == 0, res.output
    import json

    data = json.loads(res.output[res.output.index("{") :])
    assert data["counts"]["adopted"] == 3 and data["counts"]["created"] == 0
    assert_exactly_once_and_ledger_agrees(build_plan(load_manifest(path)), sim, tmp_path / "l.db")
