"""The executor's branches in milliseconds: a scripted API (httpx.MockTransport) and a fake
clock whose sleeps advance virtual time. Each test reaches a branch that otherwise needs a long
seeded fault run: a refusal, the breaker, unreachable API, 429 storms, failed lookups, a drain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from launcher import ApiConfig, ApplyOptions, DevinClient, apply_plan, build_plan, load_manifest
from launcher.errors import AuthError, CircuitOpenError, ExitCode
from launcher.ledger.location import open_ledger
from launcher.ledger.store import EventKind, LaunchState
from launcher.run.summary import ApplySummary, Result
from launcher.spec.plan import Plan
from tests.helpers import FakeClock, ScriptedAPI, created

Write = Callable[[str, str], Path]


def small(write: Write, n: int, extra: str = "") -> Plan:
    items = ", ".join(f"r{i}" for i in range(n))
    path = write(
        "m.yaml",
        f"""
        version: 1
        campaign: unit
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session:
              prompt: "Fix {{{{ item }}}}"
{extra}
        """,
    )
    return build_plan(load_manifest(path))


def run(
    plan: Plan,
    api: ScriptedAPI,
    tmp_path: Path,
    clock: FakeClock | None = None,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> ApplySummary:
    clock = clock or FakeClock()
    options.setdefault("preflight", False)
    options.setdefault("rate", 100.0)
    options.setdefault("list_lag", 0.0)  # a scripted API lists what it created at once
    timeout = options.pop("request_timeout", 5.0)
    cfg = ApiConfig("http://127.0.0.1:9", "org-test", "cog_test", read_timeout=timeout)

    async def go() -> ApplySummary:
        async with DevinClient(cfg, transport=api.transport()) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                return await apply_plan(
                    plan, client, led, ApplyOptions(**options), clock=clock, environ=environ or {}
                )

    return anyio.run(clock.run, go)


def kinds(plan: Plan, tmp_path: Path, key: str) -> list[str]:
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
        return [e["kind"] for e in led.events(key)]


def state(plan: Plan, tmp_path: Path, key: str) -> LaunchState:
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
        r = led.record(key)
        assert r is not None
        return r.state


def answer(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    async def handler(_request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        return httpx.Response(code, json=body or {"detail": f"scripted {code}"}, headers=headers)

    return handler


def test_a_4xx_is_recorded_as_refused_and_exits_3(write: Write, tmp_path: Path) -> None:
    plan = small(write, 2)
    api = ScriptedAPI(answer(422, {"detail": [{"loc": ["body", "repos"], "msg": "bad repo"}]}))
    summary = run(plan, api, tmp_path)
    assert summary.exit_code == ExitCode.failed == 3
    assert set(summary.results.values()) == {Result.failed}
    assert "bad repo" in summary.errors["r0"]
    assert state(plan, tmp_path, "r0") == LaunchState.refused
    assert kinds(plan, tmp_path, "r0") == [EventKind.intent, EventKind.refused]
    assert api.creates == 2  # a refusal is not retried


def test_the_breaker_opens_on_consecutive_5xx_and_exits_5(write: Write, tmp_path: Path) -> None:
    plan = small(write, 10)
    api = ScriptedAPI(answer(500))
    summary = run(plan, api, tmp_path, concurrency=1, breaker_threshold=3)
    assert summary.exit_code == ExitCode.aborted == 5
    assert isinstance(summary.aborted, CircuitOpenError)
    assert api.creates == 3  # stopped at the threshold, not 10
    # The ambiguous keys were never resent blindly: unknown, looked up by the next run.
    unknown = [k for k, r in summary.results.items() if r == Result.unknown]
    assert len(unknown) == 3
    assert all(state(plan, tmp_path, k).uncertain for k in unknown)
    assert summary.count(Result.not_started) == 7


def test_not_sent_is_retried_up_to_the_attempt_limit_then_gives_up(write: Write, tmp_path: Path) -> None:
    plan = small(write, 1)

    async def refuse_connection(request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    api = ScriptedAPI(refuse_connection)
    clock = FakeClock()
    summary = run(plan, api, tmp_path, clock=clock, max_attempts=4)
    assert api.creates == 4
    assert summary.results == {"r0": Result.gave_up}
    assert summary.exit_code == ExitCode.unfinished  # nothing created: re-run to resume
    assert state(plan, tmp_path, "r0") == LaunchState.gave_up
    assert kinds(plan, tmp_path, "r0").count(EventKind.not_sent) == 4
    assert clock.t > 1000.0  # the backoffs waited, on the fake clock


def test_429_is_retried_up_to_its_limit_then_gives_up(write: Write, tmp_path: Path) -> None:
    plan = small(write, 1)
    api = ScriptedAPI(answer(429, headers={"Retry-After": "7"}))
    clock = FakeClock()
    summary = run(plan, api, tmp_path, clock=clock, max_rate_limited=5)
    assert api.creates == 5
    assert summary.results == {"r0": Result.gave_up}
    assert state(plan, tmp_path, "r0") == LaunchState.gave_up
    assert clock.t >= 1000.0 + 4 * 7  # Retry-After honoured between them, in virtual time


def test_a_failed_lookup_leaves_the_key_unknown(write: Write, tmp_path: Path) -> None:
    plan = small(write, 1)

    async def broken_list(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        if api.lists == 1:  # the start-of-apply reconcile works
            return api.listing(request)
        return httpx.Response(503, json={"detail": "list unavailable"})

    api = ScriptedAPI(answer(502), on_list=broken_list)
    summary = run(plan, api, tmp_path)
    assert summary.results == {"r0": Result.unknown}
    assert "lookup failed" in summary.errors["r0"]
    assert summary.exit_code == ExitCode.unfinished
    assert state(plan, tmp_path, "r0") == LaunchState.unknown
    assert api.creates == 1  # never resent without a lookup


def test_timeout_drains_in_flight_creates_then_cancels_them(write: Write, tmp_path: Path) -> None:
    plan = small(write, 5)

    async def hang(_request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        await anyio.Event().wait()
        raise AssertionError("unreachable")

    api = ScriptedAPI(hang)
    clock = FakeClock()
    summary = run(plan, api, tmp_path, clock=clock, concurrency=2, run_timeout=5, drain_timeout=2)
    assert summary.count(Result.unknown) == 2  # in flight when the drain ended
    assert summary.count(Result.not_started) == 3
    assert all(
        "cancelled in flight" in summary.errors[k]
        for k, r in summary.results.items()
        if r == Result.unknown
    )
    assert summary.exit_code == ExitCode.unfinished
    assert clock.t == pytest.approx(1007.0)  # the timeout, then the drain: virtual seconds


def test_ambiguous_attempts_exhausted_stay_unknown_and_are_looked_up_first(
    write: Write, tmp_path: Path
) -> None:
    """Issue 9, case 4: after the attempt limit of ambiguous creates the key is unknown (not
    failed), and the next run looks it up before sending anything."""
    plan = small(write, 1)

    async def always_500(_request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        return httpx.Response(500, json={"detail": "boom"})

    api = ScriptedAPI(always_500)
    summary = run(plan, api, tmp_path, max_attempts=3)
    assert api.creates == 3
    assert summary.results == {"r0": Result.unknown}
    assert state(plan, tmp_path, "r0") == LaunchState.unknown
    # The sessions appear (a late list): the next run adopts instead of sending a 4th.
    api.new_session({"tags": list(plan.sessions[0].request["tags"])})
    again = run(plan, api, tmp_path)
    assert again.results == {"r0": Result.adopted} and api.creates == 3


def test_secret_values_never_reach_the_ledger_or_the_summary(write: Write, tmp_path: Path) -> None:
    plan = small(
        write,
        1,
        extra="""\
              session_secrets:
                - {key: TOKEN, value: {env: MY_SECRET}}
""",
    )
    secret = "s3cr3t-value-xyz"

    async def echo(request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        body = json.loads(request.content)
        value = body["session_secrets"][0]["value"]
        return httpx.Response(422, json={"detail": f"secret {value} is not allowed here"})

    api = ScriptedAPI(echo)
    summary = run(plan, api, tmp_path, environ={"MY_SECRET": secret})
    assert summary.results == {"r0": Result.failed}
    assert secret not in json.dumps(summary.to_json()) and "***" in summary.errors["r0"]
    assert secret.encode() not in (tmp_path / "l.db").read_bytes()
    for extra in tmp_path.glob("l.db-*"):
        assert secret.encode() not in extra.read_bytes()


def test_a_create_landing_late_within_the_request_timeout_is_found_not_resent(
    write: Write, tmp_path: Path
) -> None:
    """Issue 9, case 3 (the late-arrival race): the first create's answer never comes, and the
    request lands on the server 10 s after the client gave up (well within the 30 s request
    timeout), shown by the list 1 s later. The old fixed 3 s grace resent it: two sessions."""
    plan = small(write, 1)
    clock = FakeClock()
    landing: list[tuple[float, dict[str, Any]]] = []

    async def held_in_transit(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        body = json.loads(request.content)
        if api.creates == 1:
            await clock.sleep(30.0)  # the client's read timeout
            landing.append((clock.now() + 10.0 + 1.0, body))  # lands +10 s, listed +1 s later
            raise httpx.ReadTimeout("timed out", request=request)
        return httpx.Response(200, json=api.new_session(body))

    async def listing(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        while landing and landing[0][0] <= clock.now():
            api.new_session(landing.pop(0)[1])
        return api.listing(request)

    api = ScriptedAPI(held_in_transit, on_list=listing)
    summary = run(plan, api, tmp_path, clock=clock, request_timeout=30.0)
    assert summary.results == {"r0": Result.adopted}
    assert api.creates == 1 and len(api.sessions) == 1


def test_an_apply_whose_lock_was_taken_over_stops_sending_and_exits_7(
    write: Write, tmp_path: Path
) -> None:
    """Issue 9, case 2 on a fake clock: the lock row changes hands after the first create (as
    when another apply took a stale lease over): not one more create is sent."""
    plan = small(write, 5)

    async def take_over_then_create(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        if api.creates == 1:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as other:
                other.acquire_lock(now=1e12)  # same host and pid here: a takeover
        return httpx.Response(200, json=api.new_session(json.loads(request.content)))

    api = ScriptedAPI(take_over_then_create)
    summary = run(plan, api, tmp_path, concurrency=1)
    assert api.creates == 1
    assert summary.exit_code == ExitCode.lock_lost == 9
    assert "lost the campaign lock" in (summary.aborted.message if summary.aborted else "")
    assert summary.results["r0"] == Result.created  # the fact it learned is still recorded
    assert state(plan, tmp_path, "r0") == LaunchState.created


def test_the_preflight_and_the_campaign_listing_are_in_flight_together(
    write: Write, tmp_path: Path
) -> None:
    """One round trip before the first create, not two: /v3/self is answered only once the
    listing has been asked for (sequential requests would wait here until the bound)."""
    plan = small(write, 3)
    listed = anyio.Event()
    order: list[str] = []

    async def on_list(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        if any(t.startswith("fleet-key:") for t in request.url.params.get_list("tags")):
            return api.listing(request)  # the list lag probe, after a create: not the start's
        listed.set()
        order.append("list")
        return api.listing(request)

    async def on_self(_request: httpx.Request, _api: ScriptedAPI) -> httpx.Response:
        with anyio.move_on_after(10):  # real seconds, reached only when the two are sequential
            await listed.wait()
        order.append("self")
        return httpx.Response(200, json={"service_user_id": "su-1"})

    async def create(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        order.append("create")
        return await created(request, api)

    api = ScriptedAPI(create, on_list=on_list, on_self=on_self)
    summary = run(plan, api, tmp_path, preflight=True)
    assert summary.exit_code == ExitCode.ok
    assert order[:2] == ["list", "self"] and order[2:] == ["create"] * 3


def test_a_failed_preflight_wins_over_the_listing_and_nothing_is_created(
    write: Write, tmp_path: Path
) -> None:
    plan = small(write, 2)
    api = ScriptedAPI(created, on_list=answer(401), on_self=answer(401))
    with pytest.raises(BaseExceptionGroup) as info:  # through the fake clock's task group
        run(plan, api, tmp_path, preflight=True)
    assert info.group_contains(AuthError, match="GET /self: HTTP 401") and api.creates == 0
    # A token that may not read /v3/self (403) is only a warning; a listing it may not read
    # stops the run before any create (nothing is sent blind).
    api = ScriptedAPI(created, on_list=answer(403), on_self=answer(403))
    summary = run(plan, api, tmp_path, preflight=True)
    assert summary.exit_code == ExitCode.aborted and api.creates == 0
    assert isinstance(summary.aborted, AuthError) and summary.aborted.status == 403


def test_a_429_parks_its_key_and_its_worker_launches_the_next(write: Write, tmp_path: Path) -> None:
    """With one worker, a 429 with a 3 s Retry-After does not idle the run for 3 s: the key
    waits on its own and the worker goes on; it is sent again once its Retry-After is over."""
    plan = small(write, 4)
    clock = FakeClock()
    sent: list[tuple[str, float]] = []

    async def first_is_limited(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        sent.append((json.loads(request.content)["prompt"].removeprefix("Fix "), clock.now()))
        if len(sent) == 1:
            return httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": "3"})
        return await created(request, api)

    api = ScriptedAPI(first_is_limited)
    summary = run(plan, api, tmp_path, clock, concurrency=1, rate=100.0)
    assert summary.exit_code == ExitCode.ok and summary.count(Result.created) == 4
    keys = [k for k, _ in sent]
    assert keys[0] == "r0" and keys[1:4] == ["r1", "r2", "r3"] and keys[4] == "r0"
    assert sent[3][1] - sent[0][1] < 0.1  # the others did not wait on r0's Retry-After
    assert sent[4][1] - sent[0][1] >= 3.0  # and r0 waited all of it
    assert api.creates == 5


def test_parked_keys_never_push_the_creates_in_flight_past_the_concurrency(
    write: Write, tmp_path: Path
) -> None:
    plan = small(write, 12)
    clock = FakeClock()
    now_in_flight = [0, 0]  # current, most

    async def slow_and_often_limited(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        now_in_flight[0] += 1
        now_in_flight[1] = max(now_in_flight[1], now_in_flight[0])
        try:
            await clock.sleep(0.5)
            if api.creates % 3 == 0:
                return httpx.Response(429, json={"detail": "slow"}, headers={"Retry-After": "1"})
            return await created(request, api)
        finally:
            now_in_flight[0] -= 1

    api = ScriptedAPI(slow_and_often_limited)
    summary = run(plan, api, tmp_path, clock, concurrency=3, rate=100.0)
    assert summary.count(Result.created) == 12
    assert summary.rate_limited > 0
    assert now_in_flight[1] == 3


def test_keys_stopped_while_waiting_for_the_rate_were_not_sent_and_need_no_lookup(
    write: Write, tmp_path: Path
) -> None:
    """The intent is durable before the pacer admits a create (so the request leaves the
    moment it is admitted). A key whose intent is written but that the run stopped while it
    waited for the rate says so: not sent, so the next run creates it without a lookup."""
    plan = small(write, 4)
    api = ScriptedAPI(answer(401))  # the first create halts the run
    summary = run(plan, api, tmp_path, concurrency=4, rate=1.0)
    assert isinstance(summary.aborted, AuthError)
    assert api.creates == 1  # the others were waiting for the rate: 1/s
    assert kinds(plan, tmp_path, "r0") == [EventKind.intent, EventKind.auth]
    for key in ("r1", "r2", "r3"):
        assert summary.results[key] == Result.not_started
        assert kinds(plan, tmp_path, key) == [EventKind.intent, EventKind.not_sent]
        assert state(plan, tmp_path, key) == LaunchState.planned  # not "?": no lookup first
