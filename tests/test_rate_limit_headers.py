"""Rate-limit headers: parsing all three families (unit and httpx.MockTransport), the
simulator sending them over loopback, and apply using them; and apply's --rate/--concurrency
bounds as the simulator saw them."""

from __future__ import annotations

import email.utils
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from launcher import ApiConfig, ApplyOptions, DevinClient, apply_plan, build_plan, load_manifest
from launcher.api.client import CreateOutcome, RateLimitInfo, parse_rate_limit, parse_retry_after
from launcher.ledger.location import open_ledger
from launcher.run.summary import ApplySummary
from launcher.sim import ManualClock, Profile, SimServer
from launcher.spec.plan import Plan
from tests.clocks import apply_virtual
from tests.helpers import FakeClock, ScriptedAPI

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        (
            {"RateLimit-Policy": '"creates";q=20;w=1', "RateLimit": '"creates";r=3;t=1'},
            RateLimitInfo(20.0, 3, 1.0),
        ),
        (
            {
                "RateLimit-Policy": '"burst";q=100;w=10, "day";q=1000;w=86400',
                "RateLimit": '"burst";r=7;t=4',
            },
            RateLimitInfo(1000 / 86400, 7, 4.0),
        ),
        (
            {
                "RateLimit-Limit": "50",
                "RateLimit-Remaining": "9",
                "RateLimit-Reset": "2",
                "RateLimit-Policy": "50;w=1",
            },
            RateLimitInfo(50.0, 9, 2.0),
        ),
        ({"RateLimit-Limit": "120, 120;w=60", "RateLimit-Remaining": "0"}, RateLimitInfo(2.0, 0, None)),
        (
            {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "1",
                "X-RateLimit-Reset": str(int(NOW) + 3),
            },
            RateLimitInfo(5.0, 1, 3.0),
        ),
        ({"x-ratelimit-limit": "10", "x-ratelimit-reset": "4"}, RateLimitInfo(10.0, None, 4.0)),
        ({"RateLimit-Limit": "soon", "RateLimit-Remaining": "-3"}, RateLimitInfo(None, 0, None)),
    ],
)
def test_parse_rate_limit_reads_every_family(
    headers: dict[str, str], expected: RateLimitInfo | None
) -> None:
    assert parse_rate_limit(httpx.Headers(headers), now=NOW) == expected


def create_with(headers: dict[str, str], status: int) -> Any:
    def handler(_: httpx.Request) -> httpx.Response:
        body = (
            {
                "session_id": "devin-1",
                "url": "https://x/1",
                "status": "new",
                "tags": [],
                "org_id": "org-1",
                "created_at": 1,
                "updated_at": 1,
                "acus_consumed": 0,
                "pull_requests": [],
            }
            if status == 200
            else {"detail": "slow down"}
        )
        return httpx.Response(status, json=body, headers=headers)

    async def go() -> Any:
        cfg = ApiConfig("http://127.0.0.1:1", "org-1", "cog_x")
        async with DevinClient(cfg, transport=httpx.MockTransport(handler)) as c:
            return await c.create_session({"prompt": "p"})

    return anyio.run(go)


def test_created_and_rate_limited_answers_carry_the_headers() -> None:
    ok = create_with({"RateLimit-Policy": '"c";q=30;w=1', "RateLimit": '"c";r=4;t=1'}, 200)
    assert ok.outcome == CreateOutcome.created and ok.rate_limit == RateLimitInfo(30.0, 4, 1.0)
    later = email.utils.formatdate(time.time() + 5, usegmt=True)
    limited = create_with(
        {"X-RateLimit-Limit": "30", "X-RateLimit-Remaining": "0", "Retry-After": later}, 429
    )
    assert limited.outcome == CreateOutcome.rate_limited
    assert limited.rate_limit is not None and limited.rate_limit.remaining == 0
    assert limited.retry_after is not None and 0 <= limited.retry_after <= 5.0 + 1
    assert create_with({}, 200).rate_limit is None


def limited(rate: float, burst: int, **extra: Any) -> Profile:
    return Profile.model_validate(
        {"name": "limited", "faults": {"rate_limit": {"rate": rate, "burst": burst, **extra}}}
    )


@pytest.mark.parametrize("family", ["ratelimit", "ietf", "x-ratelimit"])
def test_the_simulator_sends_each_family_and_the_client_reads_its_rate(
    family: str, make_sim: Any, sim_client: Any
) -> None:
    sim = make_sim(limited(4, 2, headers=family))
    c = sim_client(sim)
    url = f"/v3/organizations/{sim.org_id}/sessions"
    answers = [c.post(url, json={"prompt": f"p{i}"}) for i in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    infos = [parse_rate_limit(r.headers) for r in answers]
    assert all(i is not None and i.rate == 4.0 for i in infos)
    assert [i.remaining for i in infos if i] == [1, 0, 0]


def test_the_simulator_writes_retry_after_as_an_http_date(make_sim: Any, sim_client: Any) -> None:
    sim = make_sim(limited(1, 1, retry_after_format="http-date"))
    c = sim_client(sim)
    url = f"/v3/organizations/{sim.org_id}/sessions"
    assert c.post(url, json={"prompt": "a"}).status_code == 200
    r = c.post(url, json={"prompt": "b"})
    assert r.status_code == 429 and r.headers["retry-after"].endswith(" GMT")
    wait = parse_retry_after(r.headers["retry-after"])
    assert wait is not None and 0 <= wait <= 2.0


def campaign(tmp_path: Path, n: int) -> Plan:
    items = ", ".join(f"r{i:03d}" for i in range(n))
    path = tmp_path / "c.yaml"
    path.write_text(f"""version: 1
campaign: paced
fleets:
  - name: f
    for_each: {{items: [{items}]}}
    session: {{prompt: "Fix {{{{ item }}}}"}}
""")
    return build_plan(load_manifest(path))


def run(plan: Plan, sim: SimServer, tmp_path: Path, **options: Any) -> ApplySummary:
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    options.setdefault("list_lag", sim.profile.faults.list_lag_seconds)

    async def go() -> ApplySummary:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as ledger:
                return await apply_plan(plan, client, ledger, ApplyOptions(**options), environ={})

    return anyio.run(go)


def duplicates(sim: SimServer) -> int:
    keys = Counter(t for s in sim.sessions() for t in s["tags"] if t.startswith("fleet-key:"))
    return sum(c - 1 for c in keys.values() if c > 1)


def test_apply_keeps_rate_and_concurrency_as_the_server_counts_them(
    make_sim: Any, tmp_path: Path
) -> None:
    """On linked virtual time (a ManualClock simulator over loopback, moved only while no
    request is in flight): the server stamps each create at the instant it was admitted, so
    what it counts is what the pacer let out, not what a loaded machine's scheduler bunched up
    on the way (real time once saw 9 in a second at --rate 8: arrivals, not sends)."""
    sim = make_sim("clean", clock=ManualClock())
    summary = apply_virtual(campaign(tmp_path, 24), sim, tmp_path / "l.db", rate=8.0, concurrency=3)
    assert summary.exit_code == 0 and len(sim.sessions()) == 24
    stats = sim.stats()
    assert stats["creates_max_per_second"] <= 8
    assert stats["creates_max_in_flight"] <= 3
    assert duplicates(sim) == 0


class AnnouncingBucket:
    """A server with a token bucket (`limit`/s, `burst`) on the virtual clock, answering after
    `latency` with IETF rate-limit headers; it notes when each create it refused was sent."""

    def __init__(self, clock: FakeClock, limit: float, burst: int, latency: float) -> None:
        self.clock, self.limit, self.burst, self.latency = clock, limit, burst, latency
        self.tokens, self.stamp = float(burst), clock.now()
        self.start = clock.now()
        self.limited_sent_at: list[float] = []  # when each create answered 429 was sent

    async def create(self, request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
        sent = self.clock.now()
        await self.clock.sleep(self.latency / 2)  # on its way to the server
        now = self.clock.now()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.limit)
        self.stamp = now
        ok = self.tokens >= 1.0 - 1e-9  # a server's clock is not finer than a nanosecond
        if ok:
            self.tokens -= 1.0
        headers = {
            "RateLimit-Policy": f'"creates";q={self.limit:g};w=1',
            "RateLimit": f'"creates";r={max(0, int(self.tokens))};t=1',
        }
        await self.clock.sleep(self.latency / 2)  # the answer on its way back
        if ok:
            body = api.new_session(json.loads(request.content))
            return httpx.Response(200, json=body, headers=headers)
        self.limited_sent_at.append(sent - self.start)
        return httpx.Response(429, json={"detail": "slow down"}, headers={**headers, "Retry-After": "1"})


def test_apply_uses_announced_rate_instead_of_probing(tmp_path: Path) -> None:
    """Told the limit (15/s) by headers, apply holds it: only the first round of creates (sent
    before an answer, or on a `remaining` that creates still in flight were using up) can meet
    the limit, at most --concurrency of them; none once that round is over; and the rate ends
    at the announced one, not a probe above it or a cut below it. On a virtual clock whose
    ledger calls run in the loop's thread: the same run, in the same order, on any machine."""
    clock = FakeClock(inline_threads=True)
    server = AnnouncingBucket(clock, limit=15.0, burst=3, latency=0.05)
    api = ScriptedAPI(server.create)
    plan = campaign(tmp_path, 16)
    cfg = ApiConfig("http://127.0.0.1:9", "org-test", "cog_test")

    async def go() -> ApplySummary:
        async with DevinClient(cfg, transport=api.transport()) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as ledger:
                # a scripted API lists what it created at once: no list lag to wait out
                options = ApplyOptions(rate=200.0, concurrency=4, preflight=False, list_lag=0.0)
                return await apply_plan(plan, client, ledger, options, clock=clock, environ={})

    summary = anyio.run(clock.run, go)
    assert summary.exit_code == 0 and len(api.sessions) == 16 == api.creates - summary.rate_limited
    assert summary.rate_limited == len(server.limited_sent_at) <= 4, server.limited_sent_at
    assert all(at < 2 * server.latency for at in server.limited_sent_at), (
        server.limited_sent_at
    )  # the first round only
    assert 0.9 * 15 <= summary.final_rate <= 15


def test_parked_429s_keep_rate_and_concurrency_as_the_server_counts_them(
    make_sim: Any, tmp_path: Path
) -> None:
    """Against a limit below --rate, 429s park their keys while others launch: still at most
    --concurrency creates in flight and --rate in a second, as the server counts them (on
    linked virtual time, as above: the server's limit and count run on the launcher's time)."""
    sim = make_sim(limited(8, 2, retry_after=True), clock=ManualClock())
    summary = apply_virtual(campaign(tmp_path, 30), sim, tmp_path / "l.db", rate=20.0, concurrency=3)
    assert summary.exit_code == 0 and summary.rate_limited > 0
    stats = sim.stats()
    assert stats["creates_max_per_second"] <= 20
    assert stats["creates_max_in_flight"] <= 3
    assert duplicates(sim) == 0 and len(sim.sessions()) == 30
