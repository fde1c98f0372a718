"""Session lifecycle in simulated time: every end state, ACUs, outputs, resume; and the
instance generator behind structured outputs."""

from __future__ import annotations

from typing import Any

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.api.models import output_errors
from launcher.sim import ManualClock, Profile, SimServer
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


# A binary fraction: exactly representable next to the clock's 1.8e9 seconds, so "just before
# a boundary" is exact.
EPS = 2**-10


class At:
    """Reads a session at given simulated seconds after its creation (time_scale 1)."""

    def __init__(self, c: httpx.Client, sim: SimServer, clock: ManualClock, sid: str) -> None:
        self.c, self.url, self.clock = c, f"{api(sim)}/sessions/{sid}", clock
        self.t0 = clock.now()

    def __call__(self, t: float) -> dict[str, Any]:
        self.clock.advance(self.t0 + t - self.clock.now())
        body: dict[str, Any] = self.c.get(self.url).json()
        return body


def state(s: dict[str, Any]) -> tuple[str, str | None, float]:
    return s["status"], s["status_detail"], s["acus_consumed"]


def test_every_outcome_reaches_its_end_state(make_sim: Any, sim_client: Any) -> None:
    weights = {o: 1.0 for o in ("finished", "delivered", "needs_user", "error", "suspended")}
    clock = ManualClock()
    sim = make_sim(profile({**weights, "invalid_output": 1.0, "blocked": 1.0}), seed=7, clock=clock)
    c = sim_client(sim)
    for i in range(42):
        r = c.post(f"{api(sim)}/sessions", json={"prompt": f"t{i}", "structured_output_schema": SCHEMA})
        assert r.status_code == 200
    clock.advance(5 + 10 + 120)  # new + claimed + the longest working time of the profile
    states = list(reversed(c.get(f"{api(sim)}/sessions", params={"first": 200}).json()["items"]))
    planned = [s["planned_outcome"] for s in sim.sessions()]
    assert set(planned) == set(weights) | {"invalid_output", "blocked"}
    for outcome, s in zip(planned, states, strict=True):
        out, prs = s["structured_output"], s["pull_requests"]
        assert 0.6 <= s["acus_consumed"] <= 1.2  # 60..120 s of work at 36 ACUs an hour
        if outcome == "finished":  # with a schema, the output is reported before the turn ends
            assert (s["status"], s["status_detail"], prs) == ("running", "finished", [])
            assert output_errors(SCHEMA, out) == []
        elif outcome in ("delivered", "invalid_output", "blocked"):
            assert (s["status"], s["status_detail"]) == ("running", "waiting_for_user")
            assert prs == [{"pr_url": prs[0]["pr_url"], "pr_state": "open"}]
            assert prs[0]["pr_url"].startswith("https://github.com/")
            problems = output_errors(SCHEMA, out)
            assert (problems == []) == (outcome != "invalid_output"), (outcome, out, problems)
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
    clock = ManualClock()
    sim = make_sim(
        profile({"finished": 1}, working_seconds_min=200, working_seconds_max=200), clock=clock
    )
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    at = At(c, sim, clock, sid)
    # new 5 s, claimed 10 s, working 200 s at 36 ACUs an hour (0.01 a second), then finished
    assert state(at(0)) == ("new", None, 0)
    assert state(at(5 - EPS)) == ("new", None, 0)
    assert state(at(5)) == ("claimed", None, 0)
    assert state(at(15 - EPS)) == ("claimed", None, 0)
    assert state(at(15)) == ("running", "working", 0)
    assert state(at(65)) == ("running", "working", 0.5)
    assert state(at(115)) == ("running", "working", 1.0)
    assert state(at(215 - 1)) == ("running", "working", 1.99)
    assert state(at(215)) == ("running", "finished", 2.0)
    final = at(10_000)
    assert state(final) == ("running", "finished", 2.0)  # it stops at the end of the work
    start = int(at.t0)
    assert (final["created_at"], final["updated_at"]) == (start, start + 215)


def test_updated_at_moves_with_each_phase(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"error": 1}, working_seconds_min=60, working_seconds_max=60), clock=clock)
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    at = At(c, sim, clock, sid)
    start = int(at.t0)
    seen = [(s["status"], s["updated_at"] - start) for s in (at(t) for t in (1, 6, 16, 75, 80))]
    assert seen == [("new", 0), ("claimed", 5), ("running", 15), ("error", 75), ("error", 75)]


def test_time_scale_multiplies_clock_seconds(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"finished": 1}), time_scale=10, clock=clock)
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    at = At(c, sim, clock, sid)
    assert at(0.5 - EPS)["status"] == "new"  # 5 simulated seconds of `new` = 0.5 clock seconds
    assert at(0.5)["status"] == "claimed"
    assert at(1.5)["status_detail"] == "working"


def test_structured_output_fills_like_a_notepad_before_the_end(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"delivered": 1}), clock=clock)
    c = sim_client(sim)
    body = {"prompt": "p", "structured_output_schema": SCHEMA}
    sid = c.post(f"{api(sim)}/sessions", json=body).json()["session_id"]
    at = At(c, sim, clock, sid)
    views = [at(t) for t in range(0, 5 + 10 + 120 + 1)]  # one a simulated second to the end
    shown = [s["structured_output"] is not None for s in views]
    first = shown.index(True)
    assert not any(shown[:first]) and all(shown[first:])  # once there, it stays
    early = views[first]
    assert early["status_detail"] == "working" and early["pull_requests"] == []
    work = next(t for t, s in enumerate(views) if s["status_detail"] == "waiting_for_user") - 15
    assert first == 15 + (work + 1) // 2  # from half-way through the work (whole seconds)
    final = views[-1]
    assert final["structured_output"] == early["structured_output"]
    assert final["pull_requests"] and final["status_detail"] == "waiting_for_user"


def test_acu_cap_suspends_with_usage_limit(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"delivered": 1}, acus_per_hour=3600), clock=clock)
    c = sim_client(sim)
    body = {"prompt": "p", "max_acu_limit": 3}
    at = At(c, sim, clock, c.post(f"{api(sim)}/sessions", json=body).json()["session_id"])
    assert state(at(15 + 2)) == ("running", "working", 2.0)  # one ACU a second after claimed
    assert state(at(15 + 3 - EPS))[:2] == ("running", "working")
    s = at(15 + 3)
    assert state(s) == ("suspended", "usage_limit_exceeded", 3.0)
    assert s["pull_requests"] == []
    assert state(at(1000)) == ("suspended", "usage_limit_exceeded", 3.0)


def test_message_resumes_a_suspended_session(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"suspended": 1}), clock=clock)
    c = sim_client(sim)
    created = c.post(
        f"{api(sim)}/sessions", json={"prompt": "p", "structured_output_schema": SCHEMA}
    ).json()
    url = f"{api(sim)}/sessions/{created['session_id']}"
    clock.advance(5 + 10 + 120)
    suspended = c.get(url).json()
    assert suspended["status"] == "suspended"
    assert c.post(f"{url}/messages", json={"message": "please continue"}).status_code == 200
    assert c.get(url).json()["status"] == "resuming"
    clock.advance(10 - EPS)  # resuming lasts 10 s
    assert c.get(url).json()["status"] == "resuming"
    clock.advance(EPS)
    assert c.get(url).json()["status_detail"] == "working"
    clock.advance(60)  # a resumed run works half as long: at most 60 s
    s = c.get(url).json()
    assert s["status_detail"] == "waiting_for_user"
    assert s["acus_consumed"] > suspended["acus_consumed"]
    assert output_errors(SCHEMA, s["structured_output"]) == []
    sources = [m["source"] for m in c.get(f"{url}/messages").json()["items"]]
    assert sources == ["user", "devin", "user", "devin"]


def test_terminate_freezes_the_session(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(profile({"delivered": 1}), clock=clock)
    c = sim_client(sim)
    sid = c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"]
    clock.advance(20)  # working
    ended = c.delete(f"{api(sim)}/sessions/{sid}").json()
    assert ended["status"] == "exit" and ended["status_detail"] is None
    assert ended["acus_consumed"] == 0.05  # 5 s of work at 36 ACUs an hour
    clock.advance(10_000)  # the whole planned run would be over by now
    s = c.get(f"{api(sim)}/sessions/{sid}").json()
    assert s["status"] == "exit" and s["pull_requests"] == [] and s["acus_consumed"] == 0.05
    assert s["updated_at"] == ended["updated_at"]


def test_default_time_scale_takes_simulated_minutes(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim("clean", clock=clock)
    assert sim.time_scale == 1.0
    life = sim.profile.lifecycle
    assert 60 <= life.new_seconds + life.claimed_seconds + life.working_seconds_min <= 600
    c = sim_client(sim)
    at = At(c, sim, clock, c.post(f"{api(sim)}/sessions", json={"prompt": "p"}).json()["session_id"])
    assert at(life.new_seconds - EPS)["status"] == "new"
    assert at(life.new_seconds)["status"] == "claimed"
    end = life.new_seconds + life.claimed_seconds + life.working_seconds_min
    assert at(end - EPS)["status_detail"] == "working"  # even the shortest run takes minutes


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


def test_outputs_report_success_or_blocked_as_their_fate_says() -> None:
    """Delivered sessions report success (first enum value, true flags, no optional list
    entries); blocked ones a valid report of failure (last enum value, false flags, an entry)."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "status": {"enum": ["upgraded", "already_current", "blocked"]},
            "tests_passed": {"type": "boolean"},
            "blockers": {"type": "array", "items": {"type": "string"}},
            "steps": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        },
        "required": ["status", "tests_passed", "blockers", "steps"],
    }
    good, ok = valid_instance(schema, "s1", "success")
    assert ok and (good["status"], good["tests_passed"], good["blockers"]) == ("upgraded", True, [])
    assert len(good["steps"]) == 2
    bad, ok = valid_instance(schema, "s1", "blocked")
    assert ok and (bad["status"], bad["tests_passed"]) == ("blocked", False)
    assert len(bad["blockers"]) >= 1 and output_errors(schema, bad) == []
