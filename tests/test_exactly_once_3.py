"""Issue 23, exactly-once third round (and issue 20's item 7): each adversarial reproduction,
deterministic. The simulator runs on a ManualClock over a real loopback port; the launcher's
clock is virtual and moves the simulator's with it, only while no request is in flight, so list
lag, `created_at` and every wait are exact and nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from click.testing import CliRunner

from launcher import ApiConfig, DevinClient, build_plan, load_manifest, open_ledger
from launcher.api.listlag import ASSUMED_LIST_LAG, LAG_PROBE_STEP, REMEMBERED_FOR, LagProbe
from launcher.cli import cli
from launcher.errors import ExitCode, redact
from launcher.ledger.store import EventKind, LedgerEvent
from launcher.run.apply import ApplyOptions, apply_plan
from launcher.run.cancel import cancel_ids, extras
from launcher.run.messages import prepare_messages, send_messages
from launcher.run.rollout import RolloutOptions, run_rollout
from launcher.run.status import refresh
from launcher.run.summary import ApplySummary, Result
from launcher.sim import ManualClock, Profile, SimServer
from launcher.sim.faults import CreateFault, FaultPlan
from launcher.spec.plan import Plan
from tests.clocks import LinkedClock, apply_virtual, virtual
from tests.helpers import (
    FakeClock,
    apply_all,
    campaign,
    crash_after_sending,
    fleet_manifest,
    sessions_per_key,
)

Write = Callable[[str, str], Path]


def lag_profile(lag: float, **faults: Any) -> Profile:
    return Profile.model_validate({"name": "lag", "faults": {"list_lag_seconds": lag, **faults}})


class Notes:
    """A reporter that keeps the run's notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []

    def start(self, total: int) -> None:
        pass

    def advance(self, key: str, result: Result) -> None:
        pass

    def note(self, message: str) -> None:
        self.notes.append(message)

    def finish(self) -> None:
        pass


def first_create_after(
    plan: Plan, sim: SimServer, ledger: Path, **kw: Any
) -> tuple[ApplySummary, float, list[str]]:
    """Apply on linked virtual time: the summary, the virtual seconds from the run's start to
    its first create request at the simulator, and the run's notes."""
    reporter, created = Notes(), len(sim.create_times())

    async def go(client: DevinClient, clock: LinkedClock) -> tuple[ApplySummary, float]:
        start = sim.clock.now()
        with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
            options = ApplyOptions(rate=200.0, **kw)
            summary = await apply_plan(
                plan, client, led, options, clock=clock, environ={}, reporter=reporter
            )
        return summary, sim.create_times()[created] - start

    summary, took = virtual(sim, go)
    return summary, took, reporter.notes


# ------------------------------------------------------------------ 1. the young listing


@pytest.mark.parametrize("stated", [2.0, None], ids=["list-lag-stated", "list-lag-assumed"])
def test_1_a_lost_ledger_rerun_at_once_adopts_what_the_listing_cannot_show_yet(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, stated: float | None
) -> None:
    """List lag 2 s; `apply --ledger a.db`, then at once `apply --ledger b.db`: the second
    run's first listing shows none of the first run's sessions. Before: every key created
    twice, exit 0. Now the absent keys are confirmed by a listing a lag bound later."""
    sim = make_sim(lag_profile(2.0), clock=ManualClock(), time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 8)))
    first = apply_virtual(plan, sim, tmp_path / "a.db", list_lag=stated)
    assert first.count(Result.created) == 8
    again = apply_virtual(plan, sim, tmp_path / "b.db", list_lag=stated)
    assert again.count(Result.created) == 0 and again.reconciled == 8, again.to_json()
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}


def test_1_the_running_ceiling_counts_what_a_young_listing_cannot_show(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """5 created (the run that made them died), then at once a run under `--max-running 5`
    with list lag 2 s: before, its first ceiling listing showed none of them and it launched
    5 more (10 running under a ceiling of 5)."""
    sim = make_sim(lag_profile(2.0), clock=ManualClock(), time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 10)))
    ledger = tmp_path / "l.db"
    assert apply_virtual(plan, sim, ledger, limit=5, list_lag=2.0).count(Result.created) == 5

    async def go(client: DevinClient, clock: LinkedClock) -> None:
        with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
            options = ApplyOptions(rate=200.0, list_lag=2.0, run_timeout=60.0)
            await run_rollout(
                plan, client, led, options, RolloutOptions(max_running=5), clock=clock, environ={}
            )

    virtual(sim, go)  # holds at the ceiling until the run timeout (the sessions never end)
    live = [s for s in sim.sessions() if s["settled_time"] is None and not s["terminated"]]
    assert len(live) == 5 and len(sim.sessions()) == 5


def _seed(faults: dict[str, Any], want: list[CreateFault]) -> int:
    """A simulator seed whose first creates meet `want`, in order (fault decisions are a
    pure function of the seed and the create number)."""
    f = lag_profile(0, **faults).faults
    return next(
        seed
        for seed in range(10_000)
        if [FaultPlan(f, seed, 0.0).create_fault(i) for i in range(len(want))] == want
    )


def test_issue_20_7_a_create_resent_at_the_end_of_a_run_is_not_duplicated_by_the_next(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The one duplicate left under a lost ledger (flaky mix, `rm -rf .devin-fleet`, apply):
    a create answered 500 before creating is looked up at the end of the run, found absent
    and resent; the run ends right after that last create, and the next apply, on a fresh
    ledger, lists the campaign within the list lag of it: the listing cannot show it yet."""
    faults = {"error_before_create": 0.5}
    seed = _seed(faults, [CreateFault.error_before, CreateFault.none])
    sim = make_sim(lag_profile(1.0, **faults), clock=ManualClock(), seed=seed, time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 1)))
    first = apply_virtual(plan, sim, tmp_path / "a.db", list_lag=1.0)
    assert first.count(Result.created) == 1 and len(sim.sessions()) == 1  # resent at the end
    again = apply_virtual(plan, sim, tmp_path / "b.db", list_lag=1.0)
    assert again.count(Result.created) == 0 and len(sim.sessions()) == 1, again.to_json()


# ------------------------------------------------------------------ 2. no lag measured


def test_2_creates_that_all_fail_after_creating_are_found_without_a_lag_figure(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """Every create answers 500 after creating, list lag 5 s: no create answered, so no lag
    was measured, and the lookups waited the 3 s grace: every key created twice, exit 0."""
    sim = make_sim(lag_profile(5.0, error_after_create=1.0), clock=ManualClock(), time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 4)))
    summary = apply_virtual(plan, sim, tmp_path / "l.db", breaker_threshold=100)
    assert summary.count(Result.adopted) == 4 and summary.exit_code == 0, summary.to_json()
    assert summary.observed_lag is None  # nothing measured: the assumed bound did the work
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}


def test_2_a_crashed_runs_pending_create_is_looked_up_past_the_lag_and_request_timeout(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """kill -9 right after a create reached the API (intent recorded, no answer), then an
    immediate re-run with list lag 5 s: the key was looked up after the grace only, and
    created again."""
    sim = make_sim(lag_profile(5.0), clock=ManualClock(), time_scale=0.001)
    path = campaign(write, 1)  # no other create in the run to measure the lag from
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    s = plan.sessions[0]
    crash_after_sending(plan, sim, ledger, s.key)
    summary = apply_virtual(plan, sim, ledger)  # no lag stated: nothing measured yet
    assert summary.results[s.key] == Result.adopted, summary.to_json()
    assert sessions_per_key(plan, sim) == {p.key: 1 for p in plan.sessions}


def test_2_the_assumed_bound_is_used_only_without_a_figure() -> None:
    from launcher.api.listlag import LAG_PROBE_STEP, LagProbe

    probe = LagProbe(None, FakeClock(), anyio.Event())  # type: ignore[arg-type]
    assert probe.bound(None) == ASSUMED_LIST_LAG and probe.bound(1.5) == 1.5
    probe.samples.append(3.0)
    assert probe.bound(None) == 6.0 + LAG_PROBE_STEP and probe.bound(9.0) == 9.0


# ------------------------------------------------------------------ 3. a stale message batch


def test_3_a_message_batch_built_before_the_prompt_is_rechecked_under_the_lease(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """Run A builds its batch and waits at its prompt; run B sends the same text to every
    session; then A goes on: before, 6 of 6 sessions got the text twice."""

    sim = make_sim("clean", time_scale=1)
    plan = build_plan(load_manifest(fleet_manifest(write, 6)))
    ledger = tmp_path / "l.db"
    apply_all(plan, sim, ledger, list_lag=0.0)
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    text = "Please rebase on main."

    async def batch() -> Any:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                view = await refresh(plan, client, led)
                return prepare_messages(plan, view.sessions, text, led)

    async def send(b: Any) -> Any:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                return await send_messages(client, led, b, rate=500.0)

    stale = anyio.run(batch)  # A, at its prompt
    assert len(stale.todo) == 6
    assert anyio.run(send, anyio.run(batch)).sent == 6  # B completes
    report = anyio.run(send, stale)  # A answers `y`
    assert report.sent == 0 and report.found == 6
    assert sim.stats()["requests"].get("POST /sessions/{id}/messages") == 6
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        first = next(iter(led.messages().values()))
        led.message_intent(first.key, first.session_id, first.digest, first.text)
        assert led.messages()[(first.session_id, first.digest)].state == "sent"  # never downgraded


# ------------------------------------------------------------------ 4. the keeper of duplicates


def test_4_two_ledgers_healing_duplicates_keep_the_same_session(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """Ledger A holds the earlier session of a key, ledger B the later one; both run
    `cancel --duplicates`: before, each kept its own, and the key lost both."""
    clock = ManualClock()
    sim = make_sim("clean", clock=clock, time_scale=0.001)
    path = campaign(write, 2)
    plan = build_plan(load_manifest(path))
    s = plan.sessions[0]
    http = httpx.Client(base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.token}"})
    url = f"/v3/organizations/{sim.org_id}/sessions"
    ids = []
    for _ in range(2):
        ids.append(http.post(url, json=s.request).json()["session_id"])
        clock.advance(5)
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)

    async def heal(ledger: Path, holds: str) -> None:
        async with DevinClient(cfg) as client:
            with open_ledger(path, plan.campaign, ledger) as led:
                led.sync_plan(plan)
                led.write_events([LedgerEvent(s.key, EventKind.adopted, session_id=holds)])
                view = await refresh(plan, client, led)
                await cancel_ids(client, led, extras(view, strays=False, duplicates=True))
                assert led.record(s.key).session_id == ids[0]  # type: ignore[union-attr]

    anyio.run(heal, tmp_path / "a.db", ids[0])
    anyio.run(heal, tmp_path / "b.db", ids[1])
    http.close()
    ended = {x["session_id"]: x["terminated"] for x in sim.sessions()}
    assert ended == {ids[0]: False, ids[1]: True}


# ------------------------------------------------------------------ 5. secrets


SECRET = 'sé"cr\\et-Ω-value-0123456789'  # quotes, a backslash, non-ASCII: every escape differs


def _forms_absent(text: str) -> None:
    import json

    for form in (SECRET, json.dumps(SECRET)[1:-1], json.dumps(SECRET, ensure_ascii=False)[1:-1]):
        assert form not in text
    assert repr(SECRET)[1:-1] not in text and SECRET[:8] not in text


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"detail": {"code": "bad", "echo": SECRET}}},  # re-encoded by json.dumps
        {"json": {"detail": "x" * 190 + SECRET}},  # cut at 500 before: a prefix leaked
        {"content": ("y" * 190 + __import__("json").dumps({"v": SECRET})).encode()},  # not JSON
    ],
    ids=["json-escaped", "long-detail", "raw-text"],
)
def test_5_an_error_body_echoing_a_secret_is_redacted_in_every_form_before_it_is_cut(
    body: dict[str, Any],
) -> None:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(400, **body)

    async def go() -> str:
        cfg = ApiConfig("http://127.0.0.1:9", "org-t", "cog_t0ken")
        async with DevinClient(cfg, transport=httpx.MockTransport(handler)) as client:
            client.secrets.add(SECRET)
            return (await client.create_session({"prompt": "p"})).message

    message = anyio.run(go)
    assert "***" in message
    _forms_absent(message)


def test_5_redact_covers_repr_and_bytes_forms() -> None:
    text = f"Illegal header value {(' Bearer ' + SECRET).encode()!r} / {SECRET!r}"
    out = redact(text, [SECRET])
    _forms_absent(out)


def _cli(env: dict[str, str], *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), env=env)


def test_5_a_token_with_a_trailing_newline_works_and_whitespace_inside_is_refused_unechoed(
    write: Write, make_sim: Callable[..., SimServer]
) -> None:
    sim = make_sim("clean")
    path = str(campaign(write, 1))
    env = {"DEVIN_ORG_ID": sim.org_id, "DEVIN_API_BASE_URL": sim.base_url}
    res = _cli({**env, "DEVIN_API_KEY": sim.token + "\n"}, "plan", path, "--check-remote")
    assert res.exit_code == 0, res.output
    for bad in (sim.token[:10] + " " + sim.token[10:], sim.token + "é"):
        res = _cli({**env, "DEVIN_API_KEY": bad}, "plan", path, "--check-remote")
        assert res.exit_code == 1 and "DEVIN_API_KEY holds" in res.output, res.output
        assert sim.token[4:] not in res.output and "Traceback" not in res.output


def test_5_credentials_in_the_base_url_are_refused_and_never_shown(write: Write) -> None:
    path = str(campaign(write, 1))
    env = {"DEVIN_API_KEY": "cog_abc", "DEVIN_ORG_ID": "org-x"}
    url = "https://alice:hunter2-pass@api.example.com"
    res = _cli({**env, "DEVIN_API_BASE_URL": url}, "status", path)
    assert res.exit_code == 1 and "user name or password" in res.output, res.output
    assert "hunter2" not in res.output and "Traceback" not in res.output


# ------------------------------------------------------------------ 6. tracebacks


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "inf"],
        ["--rate", "nan"],
        ["--request-timeout", "0"],
        ["--timeout", "-5"],
        ["--lookup-grace", "inf"],
        ["--concurrency", "0"],
    ],
)
def test_6_bad_apply_options_are_usage_errors(write: Write, args: list[str]) -> None:
    path = str(campaign(write, 1))
    env = {
        "DEVIN_API_KEY": "cog_abc",
        "DEVIN_ORG_ID": "org-x",
        "DEVIN_API_BASE_URL": "http://127.0.0.1:9",
    }
    res = _cli(env, "apply", path, "--yes", *args)
    assert res.exit_code == ExitCode.usage, res.output
    assert args[0] in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    ("url", "words"),
    [("http://127.0.0.1:99999", "not a valid URL"), ("http://[::1", "not a valid URL")],
)
def test_6_a_malformed_base_url_is_a_clear_error(write: Write, url: str, words: str) -> None:
    path = str(campaign(write, 1))
    env = {"DEVIN_API_KEY": "cog_abc", "DEVIN_ORG_ID": "org-x", "DEVIN_API_BASE_URL": url}
    res = _cli(env, "status", path)
    assert res.exit_code == 1 and words in res.output, res.output
    assert (
        "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    )


def test_6_a_message_file_that_is_not_utf8_is_a_usage_error(write: Write, tmp_path: Path) -> None:
    path = str(campaign(write, 1))
    bad = tmp_path / "msg.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    res = _cli({}, "message", path, "--file", str(bad), "--yes")
    assert res.exit_code == ExitCode.usage and "not UTF-8" in res.output, res.output
    assert isinstance(res.exception, SystemExit)


def test_6_library_options_refuse_what_the_cli_refuses() -> None:
    from launcher.errors import ConfigError

    for bad in ({"rate": float("inf")}, {"run_timeout": -5.0}, {"list_lag": -1.0}):
        with pytest.raises(ConfigError):
            ApplyOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        ApiConfig("http://127.0.0.1:9", "org", "cog_x", read_timeout=0)


# ------------------------------------------------------------------ 7. the org's lag, remembered


def test_7_the_lag_one_run_measures_shortens_the_next_runs_young_listing_wait(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """Nothing stated (a real org), list lag 0.5 s: the first apply's new keys wait the
    assumed bound; it measures the lag and the ledger keeps it; the next apply of the grown
    campaign waits twice that plus a step, not the assumed bound. Nothing is made twice."""
    sim = make_sim(lag_profile(0.5), clock=ManualClock(), time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 6)))
    first, took, notes = first_create_after(plan, sim, tmp_path / "a.db")
    assert first.count(Result.created) == 6
    assert ASSUMED_LIST_LAG <= took < ASSUMED_LIST_LAG + 1, notes
    assert any("assumed: nothing measured on this org yet" in n for n in notes), notes
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "a.db") as led:
        kept = led.org_list_lag(sim.base_url, sim.org_id)
    assert kept is not None and 0.5 <= kept[0] <= 0.5 + LAG_PROBE_STEP + 0.01, kept

    grown = build_plan(load_manifest(campaign(write, 9)))
    again, took, notes = first_create_after(grown, sim, tmp_path / "a.db")
    assert again.count(Result.created) == 3 and again.already == 6
    bound = 2 * kept[0] + LAG_PROBE_STEP
    assert bound <= took < bound + 1 < ASSUMED_LIST_LAG, (took, notes)
    assert any(f"twice the {kept[0]:.1f}s measured on this org" in n for n in notes), notes
    assert sessions_per_key(grown, sim) == {s.key: 1 for s in grown.sessions}


def test_7_a_remembered_lag_still_confirms_what_a_lost_ledger_rerun_cannot_see(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    """The shorter wait is still a young-listing wait: a run whose ledger is lost right after
    it created reruns at once on a new ledger in the same folder, which starts from the
    org's figure the folder kept (`org-facts.json`), and adopts every key."""
    sim = make_sim(lag_profile(0.5), clock=ManualClock(), time_scale=0.001)
    plan = build_plan(load_manifest(campaign(write, 6)))
    first, _, _ = first_create_after(plan, sim, tmp_path / "a.db")
    assert first.count(Result.created) == 6
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "b.db") as led:
        kept = led.org_list_lag(sim.base_url, sim.org_id)
    assert kept is not None
    (tmp_path / "a.db").unlink()
    grown = build_plan(load_manifest(campaign(write, 9)))
    again, took, notes = first_create_after(grown, sim, tmp_path / "b.db")
    assert again.reconciled == 6 and again.count(Result.created) == 3, again.to_json()
    assert took >= 2 * kept[0] + LAG_PROBE_STEP
    assert any("measured on this org" in n for n in notes), notes
    assert sessions_per_key(grown, sim) == {s.key: 1 for s in grown.sessions}


def test_7_a_folder_without_a_readable_figure_starts_from_the_assumed_lag(tmp_path: Path) -> None:
    """Another folder, another org, or a damaged `org-facts.json`: no figure (never an error)."""
    here, there = tmp_path / "here", tmp_path / "there"
    with open_ledger(Path("m.yaml"), "c", here / "c.db") as led:
        led.remember_list_lag("http://api.test", "org-a", 0.5, 1_000.0)
    with open_ledger(Path("m.yaml"), "d", here / "d.db") as led:
        assert led.org_list_lag("http://api.test/", "org-a") == (0.5, 1_000.0)
        assert led.org_list_lag("http://api.test", "org-b") is None
    with open_ledger(Path("m.yaml"), "d", there / "d.db") as led:
        assert led.org_list_lag("http://api.test", "org-a") is None
    (here / "org-facts.json").write_text("{not json")
    with open_ledger(Path("m.yaml"), "e", here / "e.db") as led:
        assert led.org_list_lag("http://api.test", "org-a") is None
        led.remember_list_lag("http://api.test", "org-a", 0.25, 2_000.0)  # rewritten whole
    with open_ledger(Path("m.yaml"), "f", here / "f.db") as led:
        assert led.org_list_lag("http://api.test", "org-a") == (0.25, 2_000.0)
    with open_ledger(Path("m.yaml"), "c", here / "c.db") as led:  # its own is older: the newest
        assert led.org_list_lag("http://api.test", "org-a") == (0.25, 2_000.0)


def test_7_what_the_bound_rests_on() -> None:
    """Stated beats remembered; a figure of this run beats both (at least the stated); a
    remembered figure older than REMEMBERED_FOR, or from the future, is not used."""
    probe = LagProbe(None, FakeClock(), anyio.Event())  # type: ignore[arg-type]
    assert probe.bound(None) == ASSUMED_LIST_LAG
    probe.remember((0.4, 1_000.0), now=1_000.0 + REMEMBERED_FOR + 1)
    probe.remember((0.4, 1_000.0), now=999.0)
    assert probe.remembered is None and probe.bound(None) == ASSUMED_LIST_LAG
    probe.remember((0.4, 1_000.0), now=1_000.0 + 7200)
    assert probe.bound(None) == 2 * 0.4 + LAG_PROBE_STEP and probe.bound(3.0) == 3.0
    assert probe.basis(None) == "twice the 0.4s measured on this org 2 h ago"
    probe.samples.append(1.5)
    assert probe.bound(None) == 2 * 1.5 + LAG_PROBE_STEP == probe.bound(1.0)
    assert probe.bound(9.0) == 9.0
