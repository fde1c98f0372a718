"""follow.py as a library: outcome rules for every status/detail pair, refresh through list
pages with a GET fallback (against the simulator over loopback), and watch's retries, timeout
and adaptive interval (scripted with httpx.MockTransport)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from launcher import ApiConfig, DevinClient, build_plan, load_manifest
from launcher.api.models import SessionStatus, StatusDetail
from launcher.errors import AuthError
from launcher.ledger.attempts import relaunch
from launcher.ledger.location import open_ledger
from launcher.ledger.store import LaunchState, LedgerEvent
from launcher.run.status import (
    SUSPEND_FAILURES,
    CampaignView,
    Outcome,
    campaign_view,
    classify,
    output_check,
    refresh,
    watch,
)
from launcher.sim import ManualClock, SimServer
from launcher.spec.plan import Plan
from tests.helpers import SCHEMA, FakeClock, ScriptedLists, apply_all, fleet_manifest, session_json

Write = Callable[[str, str], Path]


def do_refresh(plan: Plan, cfg: ApiConfig, ledger: Path, **kw: Any) -> CampaignView:
    async def go() -> CampaignView:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                return await refresh(plan, client, led, **kw)

    return anyio.run(go)


def by_id_requests(sim: SimServer) -> int:
    return int(sim.stats()["requests"].get("GET /sessions/{id}", 0))


# =========================================================================== classify

ALL_STATUSES: list[str | None] = [*SessionStatus, "hibernating", "", None]
ALL_DETAILS: list[str | None] = [*StatusDetail, "cosmic_rays", None]

# (status, detail) -> (outcome when nothing was delivered, outcome when delivered); every pair
# not listed must be `running`, whatever was delivered.
RULES: dict[tuple[str, str | None], tuple[Outcome, Outcome]] = {
    ("running", "finished"): (Outcome.succeeded, Outcome.succeeded),
    ("running", "waiting_for_user"): (Outcome.needs_human, Outcome.succeeded),
    ("running", "waiting_for_approval"): (Outcome.needs_human, Outcome.needs_human),
    **{("error", d): (Outcome.failed, Outcome.failed) for d in ALL_DETAILS},
    **{("exit", d): (Outcome.cancelled, Outcome.succeeded) for d in ALL_DETAILS},
    **{
        ("suspended", d): (Outcome.failed, Outcome.failed)
        if d in SUSPEND_FAILURES
        else (Outcome.needs_human, Outcome.succeeded)
        for d in ALL_DETAILS
    },
}


@pytest.mark.parametrize("status", ALL_STATUSES)
@pytest.mark.parametrize("detail", ALL_DETAILS)
def test_classify_every_status_and_detail_pair(status: str | None, detail: str | None) -> None:
    expected = RULES.get((status, detail), (Outcome.running, Outcome.running))  # type: ignore[arg-type]
    assert classify(status, detail, delivered=False) == expected[0]
    assert classify(status, detail, delivered=True) == expected[1]
    # A session cancelled by devin-fleet is cancelled, whatever the API says now.
    assert classify(status, detail, delivered=True, cancelled=True) == Outcome.cancelled


def test_a_suspension_fails_unless_a_message_can_resume_it() -> None:
    """By behaviour, over every detail the API model knows (not a copy of SUSPEND_FAILURES):
    of the contract's reasons for `suspended`, only idling (`inactivity`) and `user_request`
    wait for a human, since a message resumes them; every limit, credit, quota, payment or error
    reason is a failure, even with a pull request delivered. A reason the API adds later is not
    taken for a failure."""
    resumable = {StatusDetail.inactivity, StatusDetail.user_request}
    not_suspensions = {"working", "waiting_for_user", "waiting_for_approval", "finished"}
    reasons = [d for d in StatusDetail if d not in not_suspensions]
    assert resumable < set(reasons) and len(reasons) >= 12
    for reason in reasons:
        if reason in resumable:
            assert classify("suspended", reason, delivered=False) == Outcome.needs_human, reason
            assert classify("suspended", reason, delivered=True) == Outcome.succeeded, reason
        else:
            assert classify("suspended", reason, delivered=False) == Outcome.failed, reason
            assert classify("suspended", reason, delivered=True) == Outcome.failed, reason
    assert classify("suspended", "cosmic_rays", delivered=False) == Outcome.needs_human


def test_output_check_flags_invalid_and_missing_outputs() -> None:
    assert output_check(None, {"anything": 1}) == (None, [])
    assert output_check(SCHEMA, {"verdict": "fixed", "files_changed": 2}) == (True, [])
    valid, errors = output_check(SCHEMA, {"verdict": "maybe"})
    assert valid is False
    assert any("files_changed" in e for e in errors) and any("verdict" in e for e in errors)
    assert output_check(SCHEMA, None) == (False, ["missing: no structured output"])


# =========================================================================== refresh (simulator)


def test_refresh_reads_list_pages_and_stores_states_and_outcomes(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    clock = ManualClock()
    sim = make_sim("clean", clock=clock)
    plan = build_plan(load_manifest(fleet_manifest(write, 25)))
    ledger = tmp_path / "l.db"
    apply_all(plan, sim, ledger)
    clock.advance(100_000)  # every session has ended, and none moves while the test compares
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    lists_before = sim.stats()["requests"].get("GET /sessions", 0)
    view = do_refresh(plan, cfg, ledger, page_size=10)
    lists = sim.stats()["requests"]["GET /sessions"] - lists_before
    assert lists == 3 and view.requests == 3  # 25 sessions, 10 a page; no GET per session
    assert by_id_requests(sim) == 0
    truth = {s["session_id"]: s for s in sim.sessions()}
    assert {v.key for v in view.sessions} == {s.key for s in plan.sessions}
    for v in view.sessions:
        assert v.session_id is not None
        assert v.status == truth[v.session_id]["status"]
        assert v.status_detail == truth[v.session_id]["status_detail"]
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        records = led.records()
    for v in view.sessions:
        r = records[v.key]
        assert (r.status, r.outcome, r.refreshed_at is not None) == (v.status, v.outcome.value, True)


def test_refresh_falls_back_to_get_only_for_sessions_the_list_misses(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, sim_client: Callable[..., Any]
) -> None:
    sim = make_sim("clean", time_scale=100_000)
    plan = build_plan(load_manifest(fleet_manifest(write, 6)))
    ledger = tmp_path / "l.db"
    apply_all(plan, sim, ledger, limit=3)
    http = sim_client(sim)
    # r-003: created without the campaign tag (so the list misses it), recorded by the ledger.
    # r-004: recorded with a bare hex id (as some API bodies carry): the list still matches it.
    # r-005: recorded with an id the API does not know.
    untagged = {k: v for k, v in plan.sessions[3].request.items() if k != "tags"}
    resp = http.post(f"/v3/organizations/{sim.org_id}/sessions", json=untagged)
    assert resp.status_code == 200
    missed = resp.json()["session_id"]
    resp = http.post(f"/v3/organizations/{sim.org_id}/sessions", json=plan.sessions[4].request)
    bare = resp.json()["session_id"].removeprefix("devin-")
    stray = http.post(
        f"/v3/organizations/{sim.org_id}/sessions",
        json={"prompt": "not ours", "tags": [plan.campaign_tag]},
    ).json()
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        led.write_events(
            [
                LedgerEvent("r-003", "created", session_id=missed, state=LaunchState.created, url="u3"),
                LedgerEvent("r-004", "created", session_id=bare, state=LaunchState.created, url="u4"),
                LedgerEvent(
                    "r-005",
                    "created",
                    session_id="devin-" + "0" * 32,
                    state=LaunchState.created,
                    url="u5",
                ),
            ]
        )
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    view = do_refresh(plan, cfg, ledger)
    assert by_id_requests(sim) == 2  # r-003 and r-005 only
    assert view.requests == 3  # one list page + two GETs
    got = {v.key: v for v in view.sessions}
    assert got["r-003"].status is not None and got["r-003"].session_id == missed
    assert got["r-004"].status is not None and got["r-004"].session_id == bare
    assert got["r-005"].outcome == Outcome.failed and "404" in (got["r-005"].note or "")
    assert view.untracked == [stray["session_id"]]
    assert any("match no planned key" in w for w in view.warnings)
    assert [x.session_id for x in view.strays] == [stray["session_id"]]
    assert any("404" in w for w in view.warnings)
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        assert led.record("r-004").status == got["r-004"].status  # type: ignore[union-attr]


def test_refresh_with_a_bad_token_raises_auth_error(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(fleet_manifest(write, 2)))
    apply_all(plan, sim, tmp_path / "l.db")
    with pytest.raises(AuthError) as info:
        do_refresh(plan, ApiConfig(sim.base_url, sim.org_id, "cog_wrong"), tmp_path / "l.db")
    assert info.value.status == 401


def test_campaign_view_offline_shows_unlaunched_and_refused_sessions(
    write: Write, tmp_path: Path
) -> None:
    plan = build_plan(load_manifest(fleet_manifest(write, 3)))
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
        led.sync_plan(plan)
        led.write_events(
            [
                LedgerEvent("r-000", "rejected", detail="HTTP 422: bad repo", state=LaunchState.refused),
                LedgerEvent("r-001", "intent", 1),
            ]
        )
        view = campaign_view(plan, led)
    got = {v.key: v for v in view.sessions}
    assert got["r-000"].outcome == Outcome.failed and "bad repo" in (got["r-000"].note or "")
    assert got["r-001"].outcome == Outcome.not_launched and "unknown" in (got["r-001"].note or "")
    assert got["r-002"].outcome == Outcome.not_launched
    assert view.exit_code == 3 and view.settled
    assert view.totals()["invalid_outputs"] == 0  # nothing launched: nothing to flag


# =========================================================================== watch (scripted)


def scripted_watch(
    write: Write, tmp_path: Path, api: ScriptedLists, **kw: Any
) -> tuple[CampaignView, list[float], list[str]]:
    plan = build_plan(load_manifest(fleet_manifest(write, 1, schema=False)))
    ledger = tmp_path / "l.db"
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        led.sync_plan(plan)
        led.write_events(
            [LedgerEvent("r-000", "created", session_id="devin-1", state=LaunchState.created, url="u")]
        )
    waits: list[float] = []
    errors: list[str] = []
    cfg = ApiConfig("https://api.example.test", "org-x", "cog_x")

    async def go() -> CampaignView:
        async with DevinClient(cfg, transport=httpx.MockTransport(api)) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                return await watch(
                    plan,
                    client,
                    led,
                    on_refresh=lambda _, w: waits.append(w),
                    on_error=lambda e: errors.append(e.message),
                    **kw,
                )

    clock = kw.get("clock")
    if isinstance(clock, FakeClock):
        return anyio.run(clock.run, go), waits, errors
    return anyio.run(go), waits, errors


def test_watch_retries_a_failed_refresh_and_stops_when_every_outcome_is_final(
    write: Write, tmp_path: Path
) -> None:
    api = ScriptedLists(
        [
            500,
            [session_json("devin-1", "running", "working")],
            [session_json("devin-1", "running", "finished")],
        ]
    )
    view, waits, errors = scripted_watch(write, tmp_path, api, interval=0.01, wait_timeout=10)
    assert len(errors) == 1 and "500" in errors[0]
    assert [s.outcome for s in view.sessions] == [Outcome.succeeded]
    assert not view.timed_out and view.exit_code == 0
    assert api.calls == ["GET /v3/organizations/org-x/sessions"] * 3
    assert waits[-1] == 0.0  # settled: no next refresh


def test_watch_survives_unknown_statuses_and_times_out_with_a_growing_interval(
    write: Write, tmp_path: Path
) -> None:
    """On a fake clock (no real waiting, no dependence on the machine's load): the interval
    grows by half while nothing changes, up to max_interval, and the timeout ends the watch."""
    api = ScriptedLists([[session_json("devin-1", "hibernating", "cosmic_rays")]])
    clock = FakeClock(start=0.0)
    view, waits, errors = scripted_watch(
        write, tmp_path, api, interval=5, max_interval=20, wait_timeout=60, clock=clock
    )
    assert view.timed_out and view.exit_code == 8 and not errors  # its own code: not final yet
    assert [(s.status, s.outcome) for s in view.sessions] == [("hibernating", Outcome.running)]
    assert waits == [5, 7.5, 11.25, 16.875, 20, 20]  # 5 + 7.5 + 11.25 + 16.875 + 20 >= 60
    assert clock.t == 60  # the last wait is cut to the timeout


def test_watch_gives_up_after_repeated_failures_and_at_once_on_401(write: Write, tmp_path: Path) -> None:
    from launcher.errors import APIError

    with pytest.raises(APIError) as info:
        scripted_watch(write, tmp_path, ScriptedLists([503]), interval=0.01, max_failures=3)
    assert info.value.status == 503
    api = ScriptedLists([401])
    with pytest.raises(AuthError):
        scripted_watch(write, tmp_path, api, interval=0.01)
    assert len(api.calls) == 1


def test_a_401_on_the_get_fallback_is_raised_as_auth_error_not_a_group(
    write: Write, tmp_path: Path
) -> None:
    api = ScriptedLists([[], 401])  # the list misses the session; its GET is refused
    with pytest.raises(AuthError) as info:
        scripted_watch(write, tmp_path, api, interval=0.01)
    assert info.value.status == 401
    assert api.calls == [
        "GET /v3/organizations/org-x/sessions",
        "GET /v3/organizations/org-x/sessions/devin-1",
    ]


def test_a_cancellation_does_not_stick_to_the_session_that_replaced_it(
    write: Write, tmp_path: Path
) -> None:
    plan = build_plan(load_manifest(fleet_manifest(write, 2)))
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
        led.sync_plan(plan)
        led.write_events(
            [
                LedgerEvent(
                    s.key, "created", session_id=f"devin-{i}", state=LaunchState.created, url="u"
                )
                for i, s in enumerate(plan.sessions)
            ]
        )
        led.mark_cancelled(["r-000", "r-001"])
        assert {v.outcome for v in campaign_view(plan, led).sessions} == {Outcome.cancelled}
        # relaunched: a new attempt (and session) for r-000
        relaunch(led, "r-000", live=False, keep=False, request="r-000")
        led.write_events(
            [LedgerEvent("r-000", "created", session_id="devin-9", state=LaunchState.created, url="u")]
        )
        got = {v.key: v.outcome for v in campaign_view(plan, led).sessions}
    assert got == {"r-000": Outcome.running, "r-001": Outcome.cancelled}
