"""Session lifecycle in simulated time: every end state, ACUs, outputs, resume; and the
instance generator behind structured outputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.models import output_errors
from launcher.sim import Profile, SimServer
from launcher.sim.instances import invalid_instance, valid_instance

SCHEMA: dict[str, Any] = {
    "type": "object",
    "definitions": {
        "pr": {"type": "string", "format": "uri", "minLength": 10},
        "level": {"enum": ["low", "medium", "high"]},
    },
    "properties": {
        "pr_url": {"$ref": "#/definitions/pr"},
        "risk": {"$ref": "#/definitions/level"},
        "files_changed": {"type": "integer", "minimum": 1, "maximum": 50},
        "coverage": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "summary": {"type": "string", "minLength": 20, "maxLength": 200},
        "ok": {"type": "boolean"},
        "notes": {"type": ["string", "null"]},
        "kind": {"const": "fix"},
        "steps": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "nothing": {"type": "null"},
    },
    "required": ["pr_url", "risk", "files_changed", "summary", "steps"],
    "additionalProperties": False,
}

FAST: dict[str, Any] = {
    "new_seconds": 5,
    "claimed_seconds": 10,
    "working_seconds_min": 60,
    "working_seconds_max": 120,
    "resuming_seconds": 10,
    "acus_per_hour": 36,
}


def profile(outcomes: dict[str, float], **lifecycle: Any) -> Profile:
    return Profile.model_validate(
        {"name": "test", "outcomes": outcomes, "lifecycle": {**FAST, **lifecycle}}
    )


def api(sim: SimServer) -> str:
    return f"/v3/organizations/{sim.org_id}"


def wait_until(check: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` real seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def final_states(c: httpx.Client, sim: SimServer, n: int) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        items = c.get(f"{api(sim)}/sessions", params={"first": 200}).json()["items"]
        ended = [s for s in items if s["status"] != "new" and s["status_detail"] != "working"]
        return items if len(ended) == n and all(s["status"] != "claimed" for s in items) else None

    return list(reversed(wait_until(done)))


def test_every_outcome_reaches_its_end_state(make_sim: Any, sim_client: Any) -> None:
    weights = {o: 1.0 for o in ("finished", "delivered", "needs_user", "error", "suspended")}
    sim = make_sim(profile({**weights, "invalid_output": 1.0}), time_scale=400, seed=7)
    c = sim_client(sim)
    for i in range(36):
        r = c.post(f"{api(sim)}/sessions", json={"prompt": f"t{i}", "structured_output_schema": SCHEMA})
        assert r.status_code == 200
    states = final_states(c, sim, 36)
    planned = [s["planned_outcome"] for s in sim.sessions()]
    assert set(planned) == set(weights) | {"invalid_output"}
    for outcome, s in zip(planned, states, strict=True):
        out, prs = s["structured_output"], s["pull_requests"]
        assert 0 < s["acus_consumed"] <= 10
        if outcome == "finished":
            assert (s["status"], s["status_detail"], prs, out) == ("running", "finished", [], None)
        elif outcome in ("delivered", "invalid_output"):
            assert (s["status"], s["status_detail"]) == ("running", "waiting_for_user")
            assert prs == [{"pr_url": prs[0]["pr_url"], "pr_state": "open"}]
            assert prs[0]["pr_url"].startswith("https://github.com/")
            problems = output_errors(SCHEMA, out)
            assert (problems == []) == (outcome == "delivered"), (outcome, out, problems)
        elif outcome == "needs_user":
            assert (s["status"], s["status_detail"], prs, out) == (
                "running",
                "waiting_for_user",
                [],
                None,
            )
        elif outcome == "error":
            assert (s["status"], prs, out) == ("error", [], None)
        else:
            assert s["status"] == "suspended"
            assert s["status_detail"] in [d.value for d in sim.profile.lifecycle.suspend_details]


def test_phases_pass_in_order_and_acus_grow(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(
        profile({"finished": 1}, working_seconds_min=200, working_seconds_max=200),
        time_scale=300,
    )
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    seen: list[tuple[str, str | None]] = []
    acus: list[float] = []

    def finished() -> bool:
        s = c.get(f"{api(sim)}/sessions/{sid}").json()
        state = (s["status"], s["status_detail"])
        if not seen or seen[-1] != state:
            seen.append(state)
        acus.append(s["acus_consumed"])
        return state == ("running", "finished")

    wait_until(finished, interval=0.02)
    assert seen[0] == ("new", None) and seen[-1] == ("running", "finished")
    assert seen[1:-1] in ([("claimed", None), ("running", "working")], [("running", "working")])
    assert acus == sorted(acus) and acus[-1] > acus[0]
    assert abs(acus[-1] - 200 * 36 / 3600) < 0.01  # working time x rate, then it stops
    s = c.get(f"{api(sim)}/sessions/{sid}").json()
    assert s["updated_at"] >= s["created_at"]


def test_structured_output_fills_like_a_notepad_before_the_end(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile({"delivered": 1}), time_scale=300)
    c = sim_client(sim)
    body = {"prompt": "p", "structured_output_schema": SCHEMA}
    url = f"{api(sim)}/sessions/{c.post(f'{api(sim)}/sessions', json=body).json()['session_id']}"
    early = wait_until(
        lambda: (s := c.get(url).json())["structured_output"] is not None and s, interval=0.01
    )
    assert early["status_detail"] == "working" and early["pull_requests"] == []
    final = wait_until(lambda: (s := c.get(url).json())["status_detail"] != "working" and s)
    assert final["structured_output"] == early["structured_output"]
    assert final["pull_requests"] and final["status_detail"] == "waiting_for_user"


def test_acu_cap_suspends_with_usage_limit(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile({"delivered": 1}, acus_per_hour=3600), time_scale=400)
    c = sim_client(sim)
    body = {"prompt": "p", "max_acu_limit": 3}
    sid = c.post(f"{api(sim)}/sessions", json=body).json()["session_id"]
    s = wait_until(
        lambda: (r := c.get(f"{api(sim)}/sessions/{sid}").json())["status"] == "suspended" and r
    )
    assert s["status_detail"] == "usage_limit_exceeded"
    assert s["acus_consumed"] == 3.0 and s["pull_requests"] == []


def test_message_resumes_a_suspended_session(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile({"suspended": 1}), time_scale=400)
    c = sim_client(sim)
    created = c.post(
        f"{api(sim)}/sessions", json={"prompt": "p", "structured_output_schema": SCHEMA}
    ).json()
    url = f"{api(sim)}/sessions/{created['session_id']}"
    wait_until(lambda: c.get(url).json()["status"] == "suspended")
    before = c.get(url).json()["acus_consumed"]
    assert c.post(f"{url}/messages", json={"message": "please continue"}).status_code == 200
    assert c.get(url).json()["status"] in ("resuming", "running")
    s = wait_until(lambda: (r := c.get(url).json())["status_detail"] == "waiting_for_user" and r)
    assert s["acus_consumed"] > before
    assert output_errors(SCHEMA, s["structured_output"]) == []
    sources = [m["source"] for m in c.get(f"{url}/messages").json()["items"]]
    assert sources == ["user", "devin", "user", "devin"]


def test_terminate_freezes_the_session(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(profile({"delivered": 1}), time_scale=400)
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    ended = c.delete(f"{api(sim)}/sessions/{sid}").json()
    assert ended["status"] == "exit" and ended["status_detail"] is None
    time.sleep(0.5)  # the whole planned run would be over by now
    s = c.get(f"{api(sim)}/sessions/{sid}").json()
    assert s["status"] == "exit" and s["pull_requests"] == [] and s["acus_consumed"] == 0


def test_default_time_scale_takes_simulated_minutes(sim_server: SimServer, sim_client: Any) -> None:
    c = sim_client(sim_server)
    sid = c.post(f"{api(sim_server)}/sessions", json={"prompt": "p"}).json()["session_id"]
    time.sleep(0.3)
    assert c.get(f"{api(sim_server)}/sessions/{sid}").json()["status"] == "new"
    life = sim_server.profile.lifecycle
    assert 60 <= life.new_seconds + life.claimed_seconds + life.working_seconds_min <= 600


# --------------------------------------------------------------------------- instances


def test_valid_and_invalid_instances_for_a_rich_schema() -> None:
    for seed in ("a", "b", "c"):
        value, ok = valid_instance(SCHEMA, seed)
        assert ok and output_errors(SCHEMA, value) == []
        broken = invalid_instance(SCHEMA, value)
        assert broken is not None and output_errors(SCHEMA, broken)
    assert valid_instance(SCHEMA, "a") == valid_instance(SCHEMA, "a")  # seeded
    assert invalid_instance({}, {"x": 1}) is None  # `{}` accepts everything


_leaf = st.one_of(
    st.just({"type": "string"}),
    st.builds(lambda lo: {"type": "string", "minLength": lo}, st.integers(0, 40)),
    st.builds(
        lambda lo, span: {"type": "integer", "minimum": lo, "maximum": lo + span},
        st.integers(-100, 100),
        st.integers(0, 50),
    ),
    st.builds(lambda lo: {"type": "number", "exclusiveMinimum": lo}, st.integers(-5, 5)),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.builds(lambda xs: {"enum": xs}, st.lists(st.integers() | st.text(max_size=5), min_size=1)),
    st.builds(lambda v: {"const": v}, st.integers() | st.text(max_size=5)),
)
_schemas = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(
            lambda items, lo: {"type": "array", "items": items, "minItems": lo},
            inner,
            st.integers(0, 3),
        ),
        st.dictionaries(st.text("abcdef", min_size=1, max_size=4), inner, max_size=4).flatmap(
            lambda props: st.lists(st.sampled_from(sorted(props) or [""]), unique=True).map(
                lambda req: {
                    "type": "object",
                    "properties": props,
                    "required": [r for r in req if r in props],
                }
            )
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(_schemas)
def test_generated_instances_validate(schema: dict[str, Any]) -> None:
    root = {"type": "object", "properties": {"result": schema}, "required": ["result"]}
    value, ok = valid_instance(root, "seed")
    assert ok, (root, value, output_errors(root, value))
    broken = invalid_instance(root, value)
    assert broken is not None and output_errors(root, broken)
