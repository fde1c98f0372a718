"""Running the simulator (thread, foreground, inside an event loop), loading profiles, and the
state's scale: 10,000 sessions with indexed tag lists."""

from __future__ import annotations

import json
import socket
import threading
from typing import Any

import anyio
import httpx
import pytest

from launcher.api.models import CreateSessionRequest
from launcher.errors import ConfigError
from launcher.sim import (
    PROFILES,
    ManualClock,
    Profile,
    SimServer,
    load_profile,
    running_simulator,
    serve,
)
from launcher.sim.state import SessionFilter, SimState
from tests.helpers import wait_for


def test_runs_inside_a_running_event_loop_and_stops_quickly() -> None:
    async def main() -> tuple[int, int, list[dict[str, Any]]]:
        with running_simulator("clean", introspection=True) as sim:
            headers = {"Authorization": f"Bearer {sim.token}"}
            async with httpx.AsyncClient(base_url=sim.base_url, headers=headers) as c:
                url = f"/v3/organizations/{sim.org_id}/sessions"
                codes = [(await c.post(url, json={"prompt": f"p{i}"})).status_code for i in range(5)]
                listed = (await c.get(url)).json()["total"]
            return codes.count(200), listed, sim.sessions()

    ok, listed, sessions = anyio.run(main)
    assert ok == listed == len(sessions) == 5


def test_defaults_and_generated_credentials() -> None:
    with running_simulator() as a, running_simulator(token="cog_mine", org_id="org-mine") as b:
        assert a.base_url.startswith("http://127.0.0.1:") and a.base_url != b.base_url
        assert a.org_id.startswith("org-") and a.token.startswith("cog_")
        assert (b.token, b.org_id, a.profile.name) == ("cog_mine", "org-mine", "clean")
        r = httpx.get(f"{b.base_url}/v3/self", headers={"Authorization": "Bearer cog_mine"})
        assert r.json()["org_id"] == "org-mine"
        assert httpx.get(f"{a.base_url}/_sim/stats").status_code == 404  # off by default
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{a.base_url}/v3/self", timeout=1)  # stopped means closed


def test_stop_is_bounded_with_a_delayed_response_in_flight() -> None:
    # On a manual clock the delayed answer is held until the clock moves: it never does here,
    # so only the server's stop can end it.
    profile = Profile.model_validate({"faults": {"delay_after_create": 1, "delay_seconds": 60}})
    clock = ManualClock()
    with running_simulator(profile, clock=clock) as sim:
        headers = {"Authorization": f"Bearer {sim.token}"}
        errors: list[Exception] = []

        def patient() -> None:
            try:
                httpx.post(
                    f"{sim.base_url}/v3/organizations/{sim.org_id}/sessions",
                    json={"prompt": "p"},
                    headers=headers,
                    timeout=30,
                )
            except httpx.HTTPError as exc:  # pragma: no cover - either outcome is fine
                errors.append(exc)

        t = threading.Thread(target=patient)
        t.start()
        wait_for(lambda: clock.sleeping == 1)  # the answer is being held
        server_thread = sim._thread
    assert server_thread is not None and not server_thread.is_alive()  # stopped, not abandoned
    t.join(5)
    assert not t.is_alive()
    assert clock.sleeping == 0


def test_the_listening_socket_lets_asyncio_disable_nagle() -> None:
    # A listening socket created with proto 0 makes asyncio skip TCP_NODELAY on accepted
    # sockets: every response then waits ~40 ms (measured in bench/, not asserted on time here).
    from launcher.sim.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with (
            pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}") as info,
            running_simulator(port=port),
        ):
            pass  # pragma: no cover
        assert info.value.hint


def test_serve_calls_on_ready_and_returns_on_keyboard_interrupt() -> None:
    seen: list[int] = []

    def on_ready(sim: SimServer) -> None:
        r = httpx.get(f"{sim.base_url}/v3/self", headers={"Authorization": f"Bearer {sim.token}"})
        seen.append(r.status_code)
        raise KeyboardInterrupt  # what Ctrl-C does while serve() blocks

    serve("mixed", port=0, on_ready=on_ready)  # returns instead of raising
    assert seen == [200]


# --------------------------------------------------------------------------- profiles


def test_load_profile_builtins_and_unknown_names() -> None:
    for name in PROFILES:
        assert load_profile(name).name == name
    assert load_profile("clean") is not load_profile("clean")  # a fresh copy each time
    with pytest.raises(ConfigError, match="unknown simulator profile 'flakey'") as info:
        load_profile("flakey")
    assert info.value.hint and "did you mean 'flaky'" in info.value.hint


def test_load_profile_from_json_and_yaml(write: Any) -> None:
    j = write("p.json", json.dumps({"faults": {"error_before_create": 0.5}}))
    assert load_profile(str(j)).faults.error_before_create == 0.5
    assert load_profile(str(j)).name == "p"
    y = write(
        "slow.yaml",
        """
        name: slow-org
        platforms: [linux]
        outcomes: {needs_user: 1}
        lifecycle: {working_seconds_min: 1000, working_seconds_max: 2000}
        tokens:
          - token: cog_readonly
            permissions: [ReadAccountMeta]
        """,
    )
    p = load_profile(str(y))
    assert (p.name, p.platforms, p.tokens[0].token) == ("slow-org", ["linux"], "cog_readonly")
    assert p.outcomes.needs_user == 1 and p.outcomes.delivered == 0


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.yaml", "faults: {error_before_create: 2}\n", "faults.error_before_create"),
        ("typo.json", '{"fautls": {}}', "fautls: unknown field"),
        ("zero.yaml", "outcomes: {delivered: 0}\n", "at least one outcome weight"),
        ("list.yaml", "- a\n", "mapping at the top level"),
        ("broken.json", "{", "invalid JSON"),
        ("broken.yml", "a: [", "YAML syntax error"),
        ("sum.json", '{"faults": {"error_after_create": 0.6, "drop_after_create": 0.6}}', "> 1"),
    ],
)
def test_load_profile_errors_are_config_errors(write: Any, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_profile(str(write(name, text)))
    assert message in info.value.message
    with pytest.raises(ConfigError, match="file not found"):
        load_profile(str(write(name, text).with_name("missing.yaml")))


# --------------------------------------------------------------------------- scale


def test_ten_thousand_sessions_list_through_the_tag_index() -> None:
    clock = ManualClock()
    state = SimState(load_profile("clean"), org_id="org-x", seed=0, time_scale=1.0, clock=clock)
    for i in range(10_000):
        tags = ["campaign", f"k{i}"] + (["rare"] if i % 500 == 0 else [])
        state.create(CreateSessionRequest(prompt=f"p{i}", tags=tags), service_user_id="u")
        clock.advance(0.01)
    rare = SessionFilter(tags=("campaign", "rare"))
    assert state._candidates(rare) == list(range(0, 10_000, 500))  # the small index list
    page = state.list_sessions(rare, 200, None)
    assert page.total == 20 and len(page.items) == 20 and not page.has_next_page
    seen = 0
    after = None
    pages = 0
    while True:
        page = state.list_sessions(SessionFilter(tags=("campaign",)), 67, after)
        pages += 1
        seen += len(page.items)
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert (pages, seen) == (150, 10_000)
    one = state.list_sessions(SessionFilter(tags=("k4242",)), 100, None)
    assert [s["tags"][1] for s in one.items] == ["k4242"] and one.total == 1


# --------------------------------------------------------------------------- clock


def test_manual_clock_moves_only_when_advanced_and_sleep_waits_for_it() -> None:
    clock = ManualClock(100.0)
    assert clock.now() == clock.now() == 100.0
    assert clock.advance(2.5) == 102.5
    with pytest.raises(ValueError):
        clock.advance(-1)
    woke: list[float] = []

    async def main() -> None:
        async def sleeper() -> None:
            await clock.sleep(5)
            woke.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper)
            await anyio.wait_all_tasks_blocked()  # the sleeper is waiting on the clock
            assert clock.sleeping == 1
            clock.advance(5 - 2**-10)
            await anyio.sleep(0.02)
            assert woke == [] and clock.sleeping == 1  # not yet: 5 s have not passed
            clock.advance(2**-10)

    anyio.run(main)
    assert woke == [107.5] and clock.sleeping == 0
