"""status, results, cancel and plan --check-remote through the real CLI (click's CliRunner),
against the simulator over loopback with a fast time scale."""

from __future__ import annotations

import csv
import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import Result

from launcher import build_plan, load_manifest, open_ledger
from launcher.sim import ManualClock, SimServer
from launcher.sim.profiles import LIMITED_TOKEN
from tests.helpers import apply_all, fleet_manifest, run

Write = Callable[[str, str], Path]

# The simulator's planned outcome -> the outcome status must report. invalid_output sessions
# wait for the user with a PR and an output that breaks the schema: the PR makes them
# `succeeded` (documented in follow.py); results flags their output as invalid.
EXPECTED = {
    "delivered": "succeeded",
    "finished": "succeeded",
    "invalid_output": "succeeded",
    "blocked": "succeeded",  # a PR and a valid report (of failure): no success rule here
    "needs_user": "needs-human",
    "error": "failed",
    "suspended": "failed",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimServer, str | None], None]:
    def _env(sim: SimServer, token: str | None = None) -> None:
        monkeypatch.setenv("DEVIN_API_KEY", token or sim.token)
        monkeypatch.setenv("DEVIN_ORG_ID", sim.org_id)
        monkeypatch.setenv("DEVIN_API_BASE_URL", sim.base_url)

    return _env


def requests(sim: SimServer) -> Counter[str]:
    return Counter(sim.stats()["requests"])


STEP = 60.0  # simulated seconds per refresh; sessions of the mixed profile run 105..255 s


@contextmanager
def clock_follows_refreshes(sim: SimServer, clock: ManualClock) -> Iterator[None]:
    """Advance the simulator's clock by STEP for each list request (each refresh of a watch):
    sessions progress per refresh, not per real second, so a slow machine sees the same run."""
    stop = threading.Event()
    seen = requests(sim)["GET /sessions"]

    def drive() -> None:
        nonlocal seen
        while not stop.is_set():
            n = requests(sim)["GET /sessions"]
            if n > seen:
                clock.advance(STEP * (n - seen))
                seen = n
            stop.wait(0.005)

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def settled_campaign(
    write: Write,
    make_sim: Callable[..., SimServer],
    tmp_path: Path,
    env: Callable[..., None],
    n: int = 24,
) -> tuple[SimServer, Path, Path, Result]:
    """A `mixed` campaign applied, then followed by `status --watch` to the end."""
    clock = ManualClock()
    sim = make_sim("mixed", seed=1, clock=clock)
    path = fleet_manifest(write, n)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    env(sim)
    with clock_follows_refreshes(sim, clock):
        res = run(
            "status",
            path,
            "--ledger",
            ledger,
            "--watch",
            "--interval",
            "0.2",
            "--timeout",
            "100",
            "-o",
            "json",
        )
    return sim, path, ledger, res


def test_status_watch_follows_a_mixed_campaign_to_the_end(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., None]
) -> None:
    clock = ManualClock()
    sim = make_sim("mixed", seed=1, clock=clock)
    path = fleet_manifest(write, 24)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    env(sim)
    before = requests(sim)
    with clock_follows_refreshes(sim, clock):
        res = run(
            "status",
            path,
            "--ledger",
            ledger,
            "--watch",
            "--interval",
            "0.2",
            "--timeout",
            "100",
            "-o",
            "json",
        )
    made = requests(sim) - before
    truth = {s["session_id"]: s for s in sim.sessions()}
    planned = Counter(s["planned_outcome"] for s in truth.values())
    assert set(planned) == set(EXPECTED), planned  # every outcome appears (profile + seed)

    data = json.loads(res.stdout)
    assert data["campaign"] == "fu" and len(data["sessions"]) == 24
    for s in data["sessions"]:
        assert set(s) >= {
            "key",
            "session_id",
            "url",
            "status",
            "status_detail",
            "outcome",
            "pull_requests",
            "acus_consumed",
            "structured_output",
        }
        sim_says = truth[s["session_id"]]
        assert s["outcome"] == EXPECTED[sim_says["planned_outcome"]], (s, sim_says)
        assert (s["status"], s["status_detail"]) == (sim_says["status"], sim_says["status_detail"])
    expected_counts = Counter(EXPECTED[o] for o in planned.elements())
    assert {k: v for k, v in data["counts"].items() if v} == dict(expected_counts)
    assert res.exit_code == 3  # some failed (error, suspended)
    # Progress went to stderr; every refresh was one list page, never a GET per session.
    assert "next refresh in" in res.stderr and "succeeded" in res.stderr
    refreshes = res.stderr.count("requests)")
    assert made == Counter({"GET /sessions": refreshes}), made
    # The first refresh sees every session on its way (the clock moves only after it), and
    # the last one sees them all ended: at least 5 steps of 60 s cover the longest run (255 s).
    assert refreshes >= 2
    # The ledger holds the final states.
    with open_ledger(path, "fu", ledger) as led:
        stored = {r.key: (r.status, r.outcome) for r in led.records().values()}
    assert stored == {s["key"]: (s["status"], s["outcome"]) for s in data["sessions"]}
    # A row per session, then the counts as a footer; offline needs no API.
    res = run("status", path, "--ledger", ledger, "--offline")
    assert res.exit_code == 3
    first = res.stdout.splitlines()[-1]
    assert f"succeeded: {expected_counts['succeeded']}" in first
    assert f"failed: {expected_counts['failed']}" in first
    assert all(s["key"] in res.stdout for s in data["sessions"])
    assert requests(sim) - before == made


def test_results_validate_outputs_and_shape_jsonl_csv_and_group_by(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., None]
) -> None:
    sim, path, ledger, res = settled_campaign(write, make_sim, tmp_path, env)
    assert res.exit_code == 3, res.output
    truth = {s["session_id"]: s["planned_outcome"] for s in sim.sessions()}

    res = run("results", path, "--ledger", ledger, "-o", "jsonl")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(records) == 24
    for r in records:
        assert set(r) >= {
            "key",
            "item",
            "session_id",
            "url",
            "outcome",
            "pull_requests",
            "acus_consumed",
            "structured_output",
            "output_valid",
        }
        assert r["item"]["repo"] == r["key"] and r["item"]["team"] in "ab"
        planned = truth[r["session_id"]]
        if planned in ("delivered", "blocked"):
            assert r["output_valid"] is True and r["output_errors"] == []
            assert r["pull_requests"][0].startswith("https://github.com/acme/")
        elif planned == "finished":  # reported its output before ending its turn; no PR
            assert r["output_valid"] is True and r["pull_requests"] == []
        elif planned == "invalid_output":  # delivered with a PR, but the output breaks the schema
            assert r["output_valid"] is False and r["structured_output"] is not None
            assert r["output_errors"] and r["outcome"] == "succeeded" and r["pull_requests"]
        else:  # needs_user/error/suspended: no output, flagged as missing (not dropped)
            assert r["output_valid"] is False and r["structured_output"] is None
            assert r["output_errors"] == ["missing: no structured output"]
    succeeded = sum(1 for r in records if r["outcome"] == "succeeded")
    prs = sum(len(r["pull_requests"]) for r in records)
    acus = round(sum(r["acus_consumed"] for r in records), 2)
    assert (
        f"24 sessions, {succeeded} succeeded, {prs} PRs opened, {acus:g} ACUs consumed of a "
        "500 ACU budget" in res.stderr
    )

    res = run("results", path, "--ledger", ledger, "-o", "csv")
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert len(rows) == 24
    assert {
        "key",
        "item.repo",
        "item.team",
        "session_id",
        "outcome",
        "output_valid",
        "output.verdict",
        "output.files_changed",
    } <= set(rows[0])
    by_key = {r["key"]: r for r in records}
    for row in rows:
        assert row["output_valid"] == str(by_key[row["key"]]["output_valid"]).lower()
        assert row["pr_url"] == " ".join(by_key[row["key"]]["pull_requests"])

    res = run("results", path, "--ledger", ledger, "--group-by", "verdict", "-o", "jsonl")
    groups = {g["output.verdict"]: g["sessions"] for g in map(json.loads, res.stdout.splitlines())}
    want = Counter((r["structured_output"] or {}).get("verdict", "(missing)") for r in records)
    assert groups == dict(want) and sum(groups.values()) == 24
    assert "(missing)" in groups

    res = run("results", path, "--ledger", ledger, "--columns", "key,output_valid")
    assert res.exit_code == 0 and " false" in res.stdout and "24 sessions" in res.stdout


def test_results_flag_sessions_never_refreshed(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    path = fleet_manifest(write, 3)
    apply_all(build_plan(load_manifest(path)), sim, tmp_path / "l.db", limit=2)
    listed = sim.stats()["requests"].get("GET /sessions", 0)  # apply's reconcile listing
    res = run("results", path, "--ledger", tmp_path / "l.db", "-o", "jsonl", "--offline")
    assert res.exit_code == 0 and "never refreshed" in res.stderr
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["outcome"] for r in records] == ["running", "running", "not-launched"]
    assert sim.stats()["requests"].get("GET /sessions", 0) == listed  # no API with --offline


def test_cancel_terminates_exactly_the_chosen_sessions_and_reruns_are_no_ops(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., None]
) -> None:
    sim = make_sim("clean", clock=ManualClock())  # time stands still: every session is live
    path = fleet_manifest(write, 6)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    env(sim)
    chosen = ["r-000", "r-001", "r-002"]
    args: list[str | Path] = ["cancel", path, "--ledger", ledger, "--only", "r-00[0-2]"]

    res = run(*args)  # no terminal, no --yes: refused, nothing terminated
    assert res.exit_code == 1 and "--yes" in res.output
    assert "3 live session(s) to terminate" in res.stdout and all(k in res.stdout for k in chosen)
    assert requests(sim)["DELETE /sessions/{id}"] == 0

    res = run(*args, "--yes")
    assert res.exit_code == 0, res.output
    assert "cancelled 3 of 3" in res.stdout
    assert requests(sim)["DELETE /sessions/{id}"] == 3
    with open_ledger(path, "fu", ledger) as led:
        records = led.records()
        events = [e for e in led.events() if e["kind"] == "cancelled"]
    ids = {records[k].session_id: k for k in records}
    terminated = sorted(ids[s["session_id"]] for s in sim.sessions() if s["terminated"])
    assert terminated == chosen
    assert sorted(k for k, r in records.items() if r.cancelled_at is not None) == chosen
    assert sorted(e["key"] for e in events) == chosen

    res = run(*args, "--yes")  # a re-run finds nothing to do
    assert res.exit_code == 0 and "nothing to cancel" in res.stdout
    assert requests(sim)["DELETE /sessions/{id}"] == 3

    res = run("status", path, "--ledger", ledger, "-o", "json")
    outcomes = {s["key"]: s["outcome"] for s in json.loads(res.stdout)["sessions"]}
    assert outcomes == {
        **{k: "cancelled" for k in chosen},
        **{k: "running" for k in ("r-003", "r-004", "r-005")},
    }
    assert res.exit_code == 4

    res = run("cancel", path, "--ledger", ledger, "--archive", "--yes")  # the rest, archived
    assert res.exit_code == 0 and "cancelled 3 of 3" in res.stdout
    state = {ids[s["session_id"]]: s for s in sim.sessions()}
    assert all(state[k]["terminated"] for k in state)
    assert sorted(k for k in state if state[k]["is_archived"]) == ["r-003", "r-004", "r-005"]
    res = run("status", path, "--ledger", ledger, "-o", "json")
    assert res.exit_code == 0  # all cancelled
    assert set(json.loads(res.stdout)["counts"].items()) >= {("cancelled", 6)}


def test_status_needs_a_ledger_and_a_working_token(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., None]
) -> None:
    sim = make_sim("clean")
    path = fleet_manifest(write, 2)
    res = run("status", path, "--ledger", tmp_path / "none.db")  # no credentials, no ledger
    assert res.exit_code == 1 and "--ledger" in res.stderr and "Traceback" not in res.output
    assert "DEVIN_API_KEY" in res.stderr  # the hint: credentials rebuild it from the API
    env(sim)
    res = run("status", path, "--ledger", tmp_path / "none.db")  # a fresh clone: rebuilt
    assert res.exit_code == 4 and "rebuilding it from the API" in res.stderr
    apply_all(build_plan(load_manifest(path)), sim, tmp_path / "l.db")
    env(sim, "cog_wrong")
    res = run("status", path, "--ledger", tmp_path / "l.db")
    assert res.exit_code == 5 and "401" in res.stderr and "Traceback" not in res.output


# =========================================================================== plan --check-remote


def refs_manifest(write: Write, *, playbook: str, secret: str) -> Path:
    return write(
        "refs.yaml",
        f"""
        version: 1
        campaign: refs
        defaults:
          knowledge_ids: [note-sim-style, note-sim-ci]
          secret_ids:
            - secret-sim-github-token
            - {secret}
        fleets:
          - name: f
            for_each:
              items: [a, b]
            session:
              prompt: "Do {{{{ item }}}}"
              playbook_id: {playbook}
              child_playbook_id: playbook-sim-upgrade-deps
        """,
    )


def test_apply_proves_the_token_and_ids_before_any_create(
    write: Write, make_sim: Callable[..., SimServer], env: Callable[..., None]
) -> None:
    """apply runs the remote check beside the campaign listing: both must end before a create."""
    sim = make_sim("clean")
    path = refs_manifest(write, playbook="playbook-sim-nope", secret="secret-sim-npm-token")
    env(sim, "cog_wrong")
    res = run("apply", path, "--yes", "--ledger", path.parent / "x.db")
    assert res.exit_code == 5 and "401" in res.stderr and "Traceback" not in res.output
    assert "POST /sessions" not in requests(sim)

    env(sim)
    res = run("apply", path, "--yes", "--ledger", path.parent / "x.db")
    assert res.exit_code == 1, res.output
    assert f"{where(path, 'playbook-sim-nope')}: fleets[0].session.playbook_id" in res.stderr
    assert "POST /sessions" not in requests(sim)  # nothing was created

    path = refs_manifest(write, playbook="playbook-sim-fix-tests", secret="secret-sim-npm-token")
    res = run("apply", path, "--yes", "--ledger", path.parent / "x.db")
    assert res.exit_code == 0, res.output
    seen = requests(sim)
    assert seen["POST /sessions"] == 2 and seen["GET /v3/self"] == 3 and seen["GET /sessions"] >= 2


def where(path: Path, text: str) -> str:
    """file:line:col of the first occurrence of `text` in the file."""
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return f"{path}:{n}:{line.index(text) + 1}"
    raise AssertionError(text)


def test_check_remote_locates_missing_ids_and_passes_when_they_exist(
    write: Write, make_sim: Callable[..., SimServer], env: Callable[..., None]
) -> None:
    sim = make_sim("clean")
    env(sim)
    path = refs_manifest(write, playbook="playbook-sim-nope", secret="secret-sim-missing")
    res = run("plan", path, "--check-remote", "--ledger", path.parent / "x.db")
    assert res.exit_code == 1, res.output
    assert (
        f"{where(path, 'playbook-sim-nope')}: fleets[0].session.playbook_id: playbook "
        "'playbook-sim-nope' does not exist" in res.stderr
    )
    assert (
        f"{where(path, 'secret-sim-missing')}: defaults.secret_ids[1]: secret "
        "'secret-sim-missing' does not exist" in res.stderr
    )
    assert "2 referenced id(s) not found" in res.stderr
    assert "sessions" not in "".join(requests(sim))  # nothing about sessions was sent

    path = refs_manifest(write, playbook="playbook-sim-fix-tests", secret="secret-sim-npm-token")
    res = run("plan", path, "--check-remote", "--ledger", path.parent / "x.db")
    assert res.exit_code == 0, res.output
    assert "remote check passed" in res.stderr and "warning" not in res.stderr
    assert "note: allowed session tags not checked" in res.stderr
    seen = requests(sim)
    assert seen["GET /v3/self"] == 2 and seen["GET /playbooks"] == 2  # one list for both fields
    assert seen["GET /secrets"] == 2 and seen["GET /knowledge/notes"] == 2


def test_check_remote_401_aborts_and_403_on_lists_only_warns(
    write: Write, make_sim: Callable[..., SimServer], env: Callable[..., None]
) -> None:
    sim = make_sim("clean")
    path = refs_manifest(write, playbook="playbook-sim-nope", secret="secret-sim-missing")
    env(sim, "cog_wrong")
    res = run("plan", path, "--check-remote", "--ledger", path.parent / "x.db")
    assert res.exit_code == 5 and "401" in res.stderr and "Traceback" not in res.output
    assert requests(sim) == Counter({"GET /v3/self": 1})  # stopped before any other read

    env(sim, LIMITED_TOKEN)  # ManageOrgSessions + ReadAccountMeta only
    res = run("plan", path, "--check-remote", "--ledger", path.parent / "x.db")
    assert res.exit_code == 0, res.output
    for endpoint in ("/secrets", "/playbooks", "/knowledge/notes"):
        assert f"ids not verified: GET {endpoint} answered 403" in res.stderr
    assert "remote check passed" in res.stderr and "3 warning(s)" in res.stderr
    assert res.stdout.count("+") >= 2  # the plan itself is still shown
