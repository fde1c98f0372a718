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
from launcher.apply import ApplySummary, Result
from launcher.errors import CircuitOpenError, ExitCode
from launcher.ledger import EventKind, LaunchState, open_ledger
from launcher.plan import Plan
from tests.fake_api import FakeClock, ScriptedAPI

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
    options.setdefault("verify_token", False)
    options.setdefault("rate", 100.0)
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
