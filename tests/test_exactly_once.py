"""Issue 9: exactly-once, closed. The API is the source of truth: each numbered way to create a
duplicate, as an adversary would try it, against the simulator over real sockets (and the real
CLI where users meet it), plus fresh-clone follow-through, strays and duplicate healing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import httpx
import pytest
from click.testing import CliRunner

from launcher import ApiConfig, DevinClient, build_plan, load_manifest, open_ledger
from launcher.cli import cli
from launcher.errors import ExitCode
from launcher.ledger.store import Change, LaunchState
from launcher.run.remote import check_remote
from launcher.run.summary import Result
from launcher.sim import Profile, SimServer
from tests.helpers import (
    ScriptedAPI,
    assert_exactly_once_and_ledger_agrees,
    campaign,
    cli_env,
    crash_after_sending,
    created,
    run_apply,
    sessions_per_key,
    wait_for,
)

Write = Callable[[str, str], Path]


def invoke(sim: SimServer, *args: object) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args], env=cli_env(sim))


# ------------------------------------------------------------------ 1. a lost ledger


@pytest.mark.parametrize("identity", ["tags", "title"])
def test_1_a_lost_ledger_does_not_relaunch_the_campaign(
    write: Write, make_sim: Callable[..., SimServer], identity: str
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 20, identity=identity)
    plan = build_plan(load_manifest(path))
    first = invoke(sim, "apply", path, "--yes", "--rate", "100", "-o", "json")
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    shutil.rmtree(path.parent / ".devin-fleet")  # a fresh clone, a CI runner
    again = invoke(sim, "apply", path, "--yes", "--rate", "100", "-o", "json")
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    summary = json.loads(again.stdout)  # type: ignore[attr-defined]
    assert summary["counts"]["created"] == 0 and summary["reconciled"] == 20
    assert len(sim.sessions()) == 20
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    # The rebuilt ledger tells unchanged from changed: plan shows `=` for all.
    res = invoke(sim, "plan", path, "-o", "json")
    assert {e["change"] for e in json.loads(res.stdout)["sessions"]} == {"="}  # type: ignore[attr-defined]


@pytest.mark.parametrize("identity", ["tags", "title"])
def test_1_another_ledger_path_adopts_instead_of_creating(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, identity: str
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(campaign(write, 12, identity=identity)))
    run_apply(plan, sim, tmp_path / "one.db")
    other = run_apply(plan, sim, tmp_path / "two.db")
    assert other.count(Result.created) == 0 and other.reconciled == 12 and other.exit_code == 0
    assert_exactly_once_and_ledger_agrees(plan, sim, tmp_path / "two.db")


def test_fresh_clone_status_results_and_plan_check_remote_rebuild_from_the_api(
    write: Write, make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 5)
    assert invoke(sim, "apply", path, "--yes").exit_code == 0  # type: ignore[attr-defined]
    shutil.rmtree(path.parent / ".devin-fleet")
    res = invoke(sim, "plan", path, "--check-remote", "-o", "json")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    assert {e["change"] for e in json.loads(res.stdout)["sessions"]} == {"="}  # type: ignore[attr-defined]
    assert not (path.parent / ".devin-fleet").exists()  # plan writes nothing
    res = invoke(sim, "status", path, "-o", "json")
    assert "run `devin-fleet apply` first" not in res.output  # type: ignore[attr-defined]
    assert "rebuilding it from the API" in res.stderr  # type: ignore[attr-defined]
    data = json.loads(res.stdout)  # type: ignore[attr-defined]
    assert all(s["session_id"] for s in data["sessions"]) and data["counts"]["not-launched"] == 0
    shutil.rmtree(path.parent / ".devin-fleet")
    res = invoke(sim, "results", path, "-o", "jsonl")
    rows = [json.loads(line) for line in res.stdout.splitlines()]  # type: ignore[attr-defined]
    assert len(rows) == 5 and all(r["session_id"] for r in rows)
    # Without credentials the old message stands, with a hint about rebuilding.
    shutil.rmtree(path.parent / ".devin-fleet")
    res = CliRunner().invoke(cli, ["status", str(path)])
    assert res.exit_code == 1 and "DEVIN_API_KEY" in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("identity", ["tags", "title"])
def test_strays_are_listed_and_cancellable_and_duplicates_are_healed(
    write: Write,
    make_sim: Callable[..., SimServer],
    sim_client: Callable[..., httpx.Client],
    identity: str,
) -> None:
    sim = make_sim("clean")
    path = campaign(write, 3, identity=identity)
    plan = build_plan(load_manifest(path))
    assert invoke(sim, "apply", path, "--yes").exit_code == 0  # type: ignore[attr-defined]
    http = sim_client(sim)
    url = f"/v3/organizations/{sim.org_id}/sessions"
    stray = http.post(url, json={"prompt": "old item", "tags": [plan.campaign_tag]}).json()
    dup = http.post(url, json=plan.sessions[1].request).json()  # a second live session for a key
    res = invoke(sim, "status", path)
    assert "stray" in res.stdout and stray["session_id"] in res.stdout  # type: ignore[attr-defined]
    assert "DUPLICATE" in res.stdout and plan.sessions[1].key in res.stdout  # type: ignore[attr-defined]
    res = invoke(sim, "apply", path, "--yes")
    assert "DUPLICATE" in res.output  # type: ignore[attr-defined]
    assert len(sim.sessions()) == 5  # apply never adds to a duplicate
    # Asking first: no terminal, no --yes -> refused, nothing ended.
    res = invoke(sim, "cancel", path, "--duplicates")
    assert res.exit_code == 1 and "--yes" in res.stderr  # type: ignore[attr-defined]
    res = invoke(sim, "cancel", path, "--duplicates", "--strays", "--yes")
    assert res.exit_code == 0, res.output  # type: ignore[attr-defined]
    ended = {s["session_id"] for s in sim.sessions() if s["status"] == "exit"}
    assert ended == {dup["session_id"], stray["session_id"]}
    with open_ledger(path, plan.campaign) as led:  # the earliest is the one kept
        kept = led.record(plan.sessions[1].key)
        assert kept is not None and kept.session_id != dup["session_id"]
    res = invoke(sim, "status", path)
    assert "DUPLICATE" not in res.stdout and "stray session" not in res.stdout  # type: ignore[attr-defined]
    # ended strays need nothing: no warning about them either (issue 21)
    assert "match no planned key" not in res.output  # type: ignore[attr-defined]


# ------------------------------------------------------------------ 2. a lost lock


def stop_outside_a_transaction(proc: subprocess.Popen[str], ledger: Path, campaign: str) -> None:
    """SIGSTOP `proc` at a moment it holds no write lock on `ledger`. (Stopped inside one of
    its millisecond transactions, it blocks every other writer until it is resumed: SQLite's
    rule, and `database is locked` for the other apply, not what the lease test is about.)"""
    from launcher.ledger.sqlite import SqliteLedger

    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        with SqliteLedger(ledger, campaign, create=False) as led:
            if led.write_lock_free():
                return
        proc.send_signal(signal.SIGCONT)
        time.sleep(0.01)
    raise AssertionError("the apply never paused outside a ledger transaction")


@pytest.mark.slow
def test_2_an_apply_paused_past_its_lease_stops_and_says_so(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """SIGSTOP an apply; while it is paused its lease is taken over, as a peer takes it once
    the TTL has passed (here a peer with a TTL of 0: no real wait), and a second apply
    finishes the campaign. SIGCONT the first: it must not send another create, and exits 9
    saying it lost the lock."""
    sim = make_sim(Profile.model_validate({"name": "slowish", "faults": {"latency_seconds": 0.05}}))
    path = campaign(write, 40)
    plan = build_plan(load_manifest(path))
    env = {**os.environ, **cli_env(sim)}
    ledger = tmp_path / "l.db"
    cmd = [sys.executable, "-m", "launcher", "apply", str(path), "--yes", "--ledger", str(ledger)]
    cmd += ["--request-timeout", "3"]  # the paused run's last create is not in transit for 30 s
    first = subprocess.Popen(
        [*cmd, "--rate", "4", "--concurrency", "2"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(sim.sessions()) >= 3 or first.poll() is not None, 60)
        assert first.poll() is None and len(sim.sessions()) < len(plan)
        stop_outside_a_transaction(first, ledger, plan.campaign)
        with open_ledger(path, plan.campaign, ledger) as peer:  # the takeover
            taken = peer.acquire_lock(ttl=0.0)  # a peer for which any lease is stale
            assert taken.generation >= 2
            peer.release_lock()
        second = subprocess.run(
            [*cmd, "--rate", "100"], env=env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 0, second.stderr
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == ExitCode.lock_lost, (out, err)
    assert "lost the campaign lock" in err
    assert len(sim.sessions()) == len(plan)
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}


# ------------------------------------------------------------------ 3. list lag


@pytest.mark.slow
@pytest.mark.parametrize("identity", ["tags", "title"])
def test_3_ambiguous_creates_are_looked_up_after_the_observed_list_lag(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, identity: str
) -> None:
    """A list lag longer than the lookup grace, and 20% of creates failing after creating: the
    old fixed grace (3 s against a 3.5 s lag) resent keys whose sessions were not listed yet
    (115 for 100). Now: exactly once. Scaled down, the same race: lag 1 s, grace 0.5 s."""
    lag = 1.0
    profile = Profile.model_validate(
        {"name": "laggy", "faults": {"error_after_create": 0.2, "list_lag_seconds": lag}}
    )
    sim = make_sim(profile, seed=3)
    plan = build_plan(load_manifest(campaign(write, 40, identity=identity)))
    summary = run_apply(
        plan, sim, tmp_path / "l.db", concurrency=8, breaker_threshold=50, lookup_grace=lag / 2
    )
    assert summary.exit_code == 0, summary.to_json()
    assert summary.count(Result.adopted) >= 1
    assert summary.observed_lag is not None and summary.observed_lag >= lag
    assert_exactly_once_and_ledger_agrees(plan, sim, tmp_path / "l.db")


# ------------------------------------------------------------------ 4. gave up is not failed


@pytest.mark.parametrize("identity", ["tags", "title"])
def test_4_a_key_left_unknown_is_looked_up_before_any_resend(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, identity: str
) -> None:
    """Every create fails after creating; after the attempt limit the key is unknown, and the
    next run (even with the fault gone) adopts instead of sending an Nth session."""
    sim = make_sim(Profile.model_validate({"name": "after", "faults": {"error_after_create": 1.0}}))
    plan = build_plan(load_manifest(campaign(write, 1, identity=identity)))
    ledger = tmp_path / "l.db"
    first = run_apply(plan, sim, ledger, max_attempts=2, lookup_grace=0.0, reconcile=False)
    # (reconcile off and no grace: the worst case, where a lookup may miss the session)
    assert len(sim.sessions()) >= 1
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        r = led.record(plan.sessions[0].key)
        assert r is not None and (r.state.launched or r.state == LaunchState.unknown), r
    if first.exit_code != 0:
        assert first.results[plan.sessions[0].key] == Result.unknown
    before = len(sim.sessions())
    run_apply(plan, sim, ledger)
    assert len(sim.sessions()) == before  # nothing resent
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        assert led.record(plan.sessions[0].key).state.launched  # type: ignore[union-attr]


# ------------------------------------------------------------------ 5. adopted fingerprint


def test_5_an_adopted_session_keeps_the_fingerprint_it_was_created_with(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """A create whose answer was lost (crash in flight), then the prompt is edited: the
    adopted session is the old prompt's, so `plan` must show `~`, not `=`."""
    sim = make_sim("clean")
    path = campaign(write, 2)
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    s = plan.sessions[0]
    crash_after_sending(plan, sim, ledger, s.key)  # the crash: intent, request, no answer
    path.write_text(path.read_text().replace("Fix {{ item }}", "Repair {{ item }}"))
    edited = build_plan(load_manifest(path))
    summary = run_apply(edited, sim, ledger)
    assert summary.results[s.key] == Result.adopted
    with open_ledger(path, plan.campaign, ledger) as led:
        diff = {k: c for c, k, _ in led.diff(edited)}
        assert led.record(s.key).fingerprint == s.fingerprint  # type: ignore[union-attr]
    assert diff[s.key] == Change.changed
    # A ledger rebuilt from the API knows it too, from the session's fingerprint tag.
    rebuilt = run_apply(edited, sim, tmp_path / "fresh.db")
    assert rebuilt.reconciled == 2
    with open_ledger(path, plan.campaign, tmp_path / "fresh.db") as led:
        diff = {k: c for c, k, _ in led.diff(edited)}
    assert diff[s.key] == Change.changed and diff[edited.sessions[1].key] == Change.same


# ------------------------------------------------------------------ also


@pytest.mark.parametrize("code", [403, 404, 405])
def test_preflight_never_blocks_on_a_list_it_cannot_read(write: Write, code: int) -> None:
    path = campaign(write, 1, extra="              secret_ids: [secret-abc]")
    plan = build_plan(load_manifest(path))

    async def on_list(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        if request.url.path.endswith("/secrets"):
            return httpx.Response(code, json={"detail": "Not Found"})
        return api.listing(request)

    api = ScriptedAPI(created)

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/secrets"):
            return await on_list(request, api)
        return await api.handle(request)

    async def go() -> list[str]:
        cfg = ApiConfig("http://127.0.0.1:9", "org-t", "cog_t")
        async with DevinClient(cfg, transport=httpx.MockTransport(handle)) as client:
            return await check_remote(plan, client)

    warnings = anyio.run(go)
    assert any(f"secret ids not verified: GET /secrets answered {code}" in w for w in warnings)
