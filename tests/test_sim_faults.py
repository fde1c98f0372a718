"""Injected faults over real loopback TCP: rate limit, latency, 500s, dropped and delayed
responses, list lag; and that one seed reproduces the same faults."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.sim import PROFILES, ManualClock, Profile, SimServer, load_profile
from launcher.sim.faults import CreateFault, FaultPlan, TokenBucket
from launcher.sim.profiles import Faults, RateLimit
from tests.helpers import wait_for

AMBIGUOUS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout)


def faulty(**faults: Any) -> Profile:
    return Profile.model_validate({"name": "faulty", "faults": faults})


def sessions_url(sim: SimServer) -> str:
    return f"/v3/organizations/{sim.org_id}/sessions"


# A binary fraction: exactly representable next to the clock's 1.8e9 seconds.
EPS = 2**-10


class InFlight:
    """One request sent from a thread, so a test can look at it while the server holds it."""

    def __init__(self, send: Callable[[], httpx.Response]) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

        def run() -> None:
            try:
                self.response = send()
            except Exception as exc:  # reported to the test through `error`
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    @property
    def answered(self) -> bool:
        return not self.thread.is_alive()

    def result(self) -> httpx.Response:
        self.thread.join(10)
        assert not self.thread.is_alive() and self.error is None, self.error
        assert self.response is not None
        return self.response


def test_rate_limit_429_exactly_when_the_bucket_is_empty(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(faulty(rate_limit={"rate": 4, "burst": 3}), clock=clock)
    c = sim_client(sim)

    def create() -> httpx.Response:
        r: httpx.Response = c.post(sessions_url(sim), json={"prompt": "p"})
        return r

    answers = [create() for _ in range(6)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429, 429, 429]  # the burst
    for r in answers[3:]:
        assert r.headers["retry-after"] == "1"  # integer seconds, rounded up, never 0
        assert "rate limit" in r.json()["detail"].lower()
    assert len(sim.sessions()) == 3
    assert all(c.get(sessions_url(sim)).status_code == 200 for _ in range(10))  # creates only
    clock.advance(0.25 - EPS)  # one token comes back every 1/rate = 0.25 s: not yet
    assert create().status_code == 429
    clock.advance(EPS)
    assert [create().status_code for _ in range(2)] == [200, 429]
    for _ in range(5):  # sustained: exactly one create per 1/rate
        clock.advance(0.25)
        assert [create().status_code for _ in range(3)] == [200, 429, 429]
    clock.advance(3 / 4)  # three tokens' worth of quiet refills the burst, no more
    assert [create().status_code for _ in range(4)] == [200, 200, 200, 429]
    clock.advance(100)  # a long quiet still refills only up to the burst
    assert [create().status_code for _ in range(4)] == [200, 200, 200, 429]
    assert len(sim.sessions()) == 3 + 1 + 5 + 3 + 3
    assert sim.stats()["faults"] == {"rate_limited": 3 + 1 + 1 + 10 + 1 + 1}


def test_rate_limit_without_retry_after(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(faulty(rate_limit={"rate": 1, "burst": 1, "retry_after": False}), clock=clock)
    c = sim_client(sim)
    assert c.post(sessions_url(sim), json={"prompt": "p"}).status_code == 200
    clock.advance(1 - EPS)
    r = c.post(sessions_url(sim), json={"prompt": "p"})
    assert r.status_code == 429 and "retry-after" not in r.headers
    clock.advance(EPS)
    assert c.post(sessions_url(sim), json={"prompt": "p"}).status_code == 200


def test_the_create_log_shows_each_create_as_the_bucket_saw_it(make_sim: Any, sim_client: Any) -> None:
    """`/_sim/creates`: every create in arrival order, taken or refused, with its title (read
    from a refused body too, which the bucket answers unread) and when it was received and
    reached the bucket (the machine's monotonic clock, for matching with a client's sends)."""
    clock = ManualClock()
    sim = make_sim(faulty(rate_limit={"rate": 1, "burst": 1}), clock=clock)
    c = sim_client(sim)
    assert c.post(sessions_url(sim), json={"prompt": "p", "title": "one"}).status_code == 200
    assert c.post(sessions_url(sim), json={"prompt": "p", "title": "two"}).status_code == 429
    log = c.get("/_sim/creates").json()
    assert log["count"] == 2
    assert [(r["title"], r["accepted"]) for r in log["creates"]] == [("one", True), ("two", False)]
    first, second = log["creates"]
    assert first["received"] <= first["at"] <= second["received"] <= second["at"]


def test_latency_holds_every_endpoint_until_it_has_passed(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(faulty(latency_seconds=0.15, latency_jitter_seconds=0.1), clock=clock)
    c = sim_client(sim)
    for method, path in (
        ("GET", "/v3/self"),
        ("GET", sessions_url(sim)),
        ("POST", sessions_url(sim)),
        ("GET", f"/v3/organizations/{sim.org_id}/secrets"),
    ):
        body = {"prompt": "p"} if method == "POST" else None
        sent = InFlight(lambda m=method, p=path, b=body: c.request(m, p, json=b))
        wait_for(lambda: clock.sleeping == 1)  # the server holds the request
        clock.advance(0.15 - EPS)  # below the smallest latency
        assert not sent.answered and clock.sleeping == 1
        clock.advance(0.1 + EPS)  # past the largest (latency + jitter)
        assert sent.result().status_code == 200
    assert sim.stats()["faults"] == {"latency": 4}


def test_error_before_create_creates_nothing(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(faulty(error_before_create=1.0))
    c = sim_client(sim)
    r = c.post(sessions_url(sim), json={"prompt": "p", "tags": ["k1"]})
    assert r.status_code == 500 and r.json() == {"detail": "Internal Server Error"}
    assert sim.sessions() == []
    assert c.get(sessions_url(sim), params={"tags": "k1"}).json()["total"] == 0
    # validation still comes first: a bad body is a 422, not a fault
    assert c.post(sessions_url(sim), json={"prompt": ""}).status_code == 422
    assert sim.stats()["faults"] == {"error_before_create": 1}


def test_error_after_create_leaves_the_session(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(faulty(error_after_create=1.0))
    c = sim_client(sim)
    r = c.post(sessions_url(sim), json={"prompt": "p", "tags": ["k2"]})
    assert r.status_code == 500
    [s] = sim.sessions()
    assert s["tags"] == ["k2"] and s["create_fault"] == "error_after_create"
    listed = c.get(sessions_url(sim), params={"tags": "k2"}).json()["items"]
    assert [x["session_id"] for x in listed] == [s["session_id"]]


def test_drop_after_create_resets_the_connection(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(faulty(drop_after_create=1.0))
    c = sim_client(sim)
    for i in range(3):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.post(sessions_url(sim), json={"prompt": "p", "tags": [f"d{i}"]})
    assert [s["tags"] for s in sim.sessions()] == [["d0"], ["d1"], ["d2"]]
    assert {s["create_fault"] for s in sim.sessions()} == {"drop_after_create"}
    assert c.get(sessions_url(sim)).json()["total"] == 3  # the server itself is fine
    stats = sim.stats()
    assert stats["faults"] == {"drop_after_create": 3}
    assert "500" not in stats["responses"]  # nothing was answered for the dropped creates


def test_delay_after_create_outlasts_a_client_timeout(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()  # never advanced: the 30 s delay cannot end during this test
    sim = make_sim(faulty(delay_after_create=1.0, delay_seconds=30), clock=clock)
    impatient = sim_client(sim, timeout=httpx.Timeout(5.0, read=0.3))
    with pytest.raises(httpx.ReadTimeout):
        impatient.post(sessions_url(sim), json={"prompt": "p", "tags": ["slow"]})
    [s] = sim.sessions()
    assert s["tags"] == ["slow"] and s["create_fault"] == "delay_after_create"


def test_delayed_create_still_answers_a_patient_client(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(faulty(delay_after_create=1.0, delay_seconds=0.4), clock=clock)
    c = sim_client(sim)
    sent = InFlight(lambda: c.post(sessions_url(sim), json={"prompt": "p"}))
    wait_for(lambda: clock.sleeping == 1)
    assert len(sim.sessions()) == 1  # created, and the answer is held
    clock.advance(0.4 - EPS)
    assert not sent.answered and clock.sleeping == 1
    clock.advance(EPS)
    r = sent.result()
    assert r.status_code == 200 and "status_detail" not in r.json()


def test_list_shows_new_sessions_only_after_the_lag(make_sim: Any, sim_client: Any) -> None:
    clock = ManualClock()
    sim = make_sim(faulty(list_lag_seconds=0.6), clock=clock)
    c = sim_client(sim)
    sid = c.post(sessions_url(sim), json={"prompt": "p", "tags": ["lag"]}).json()["session_id"]
    queries = ({}, {"tags": "lag"}, {"session_ids": sid})
    for step in (0, 0.6 - EPS):
        clock.advance(step)
        for params in queries:
            page = c.get(sessions_url(sim), params=params).json()
            assert page["items"] == [] and page["total"] == 0, (step, params)
    assert c.get(f"{sessions_url(sim)}/{sid}").status_code == 200  # get sees it at once
    clock.advance(EPS)
    for params in queries:
        page = c.get(sessions_url(sim), params=params).json()
        assert [s["session_id"] for s in page["items"]] == [sid] and page["total"] == 1, params


def _run(sim: SimServer, c: httpx.Client, n: int) -> list[str]:
    outcomes = []
    for i in range(n):
        try:
            outcomes.append(str(c.post(sessions_url(sim), json={"prompt": f"p{i}"}).status_code))
        except AMBIGUOUS as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def test_the_seed_makes_faults_reproducible(make_sim: Any, sim_client: Any) -> None:
    profile = faulty(error_before_create=0.25, error_after_create=0.2, drop_after_create=0.2)
    runs = []
    for seed in (11, 11, 12):
        sim = make_sim(profile, seed=seed)
        outcomes = _run(sim, sim_client(sim), 24)
        ids = [(s["session_id"], s["create_fault"]) for s in sim.sessions()]
        runs.append((outcomes, ids))
    assert runs[0] == runs[1]
    assert runs[0][0] != runs[2][0]
    kinds = Counter(runs[0][0])
    assert kinds["200"] and kinds["500"] and kinds["ReadError"] + kinds["RemoteProtocolError"]


@pytest.mark.slow
def test_a_retrying_client_finishes_against_flaky(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim("flaky", seed=3)
    c = sim_client(sim, timeout=httpx.Timeout(5.0, read=0.5))
    attempts = Counter[str]()
    for i in range(30):
        for _ in range(10):
            attempts[f"k{i}"] += 1
            try:
                r = c.post(sessions_url(sim), json={"prompt": "p", "tags": [f"k{i}"]})
            except AMBIGUOUS:
                continue
            if r.status_code == 200:
                break
            assert r.status_code in (429, 500)
        else:
            pytest.fail(f"item k{i} never succeeded")
    sessions = sim.sessions()
    faults = sim.stats()["faults"]
    after = sum(faults.get(k.value, 0) for k in CreateFault if k.value.endswith("after_create"))
    assert after >= 1 and faults.get("error_before_create", 0) >= 1
    assert len(sessions) == 30 + after  # every ambiguous failure left a duplicate behind
    per_tag = Counter(s["tags"][0] for s in sessions)
    assert set(per_tag) == {f"k{i}" for i in range(30)}


# --------------------------------------------------------------------------- profiles, pure


def test_builtin_profiles_and_their_fault_settings() -> None:
    assert {"clean", "ratelimited", "flaky", "hostile"} <= set(PROFILES)
    assert load_profile("clean").faults == Faults()
    limit = load_profile("ratelimited").faults.rate_limit
    assert limit is not None and (limit.rate, limit.burst, limit.retry_after) == (20, 20, True)
    hostile = load_profile("hostile").faults
    probabilities = [
        hostile.error_before_create,
        hostile.error_after_create,
        hostile.drop_after_create,
        hostile.delay_after_create,
    ]
    assert all(0.05 <= p <= 0.15 for p in probabilities)
    assert hostile.rate_limit and hostile.latency_seconds and hostile.list_lag_seconds
    flaky = load_profile("flaky").faults
    assert all(0 < p <= 0.15 for p in (flaky.error_before_create, flaky.drop_after_create))


def test_fault_plan_is_a_function_of_seed_and_number() -> None:
    f = Faults(error_before_create=0.3, error_after_create=0.3, drop_after_create=0.3)
    a, b = FaultPlan(f, 5, 0.0), FaultPlan(f, 5, 0.0)
    seq = [a.create_fault(n) for n in range(200)]
    assert seq == [b.create_fault(n) for n in range(200)]
    share = Counter(seq)
    assert 0.2 < share[CreateFault.error_before] / 200 < 0.4
    assert share[CreateFault.delay_after] == 0 and share[CreateFault.none] > 0


@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 0.5), min_size=1, max_size=200),
)
def test_token_bucket_never_admits_more_than_rate_times_time_plus_burst(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(RateLimit(rate=rate, burst=burst), now=0.0)
    now, admitted = 0.0, 0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        assert wait >= 0
        if wait == 0:
            admitted += 1
        else:
            assert wait <= 1 / rate + 1e-9
        assert admitted <= rate * now + burst + 1e-9
