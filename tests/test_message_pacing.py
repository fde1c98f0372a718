"""`message` is paced as apply paces creates: a 429 parks its message for its own Retry-After
without holding a slot, the pacer learns the server's limit, and `--rate` is never exceeded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner

from launcher import build_plan, load_manifest, open_ledger
from launcher.api.client import ApiConfig, DevinClient
from launcher.cli import cli
from launcher.run.messages import MessageBatch, MessageReport, Outgoing, digest, send_messages
from launcher.sim import Profile, SimServer
from tests.helpers import FakeClock, apply_all, fleet_manifest, point_cli_at

TEXT = "Please rebase on main and re-run the tests."


def test_a_rate_limited_message_waits_out_its_retry_after_without_holding_a_slot(
    tmp_path: Path,
) -> None:
    """One slot, three messages; the first is answered 429 with Retry-After 5: the other two
    go meanwhile, and the first is sent again 5 s (virtual) later."""
    clock = FakeClock()
    posts: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        session = request.url.path.split("/")[-2]
        posts.append((session, clock.now()))
        if session == "devin-a" and len(posts) == 1:
            return httpx.Response(429, headers={"Retry-After": "5"}, json={"detail": "slow down"})
        return httpx.Response(200, json={})

    todo = [Outgoing(f"k-{s}", f"devin-{s}", TEXT, digest(TEXT)) for s in "abc"]
    with open_ledger(tmp_path / "l.db", "c", tmp_path / "l.db") as led:

        async def go() -> MessageReport:
            cfg = ApiConfig("https://api.example.test", "org-1", "tok")
            async with DevinClient(cfg, transport=httpx.MockTransport(handler)) as client:
                batch = MessageBatch(todo, [])
                return await send_messages(client, led, batch, rate=10, concurrency=1, clock=clock)

        report = anyio.run(clock.run, go)
    assert [s for s, _ in posts] == ["devin-a", "devin-b", "devin-c", "devin-a"]
    assert posts[3][1] - posts[0][1] >= 5.0  # its own Retry-After, honoured
    assert posts[2][1] - posts[0][1] < 5.0  # the others did not wait for it
    assert report.sent == 3 and not report.errors


@pytest.fixture
def limited(
    write: Callable[[str, str], Path],
    make_sim: Callable[..., SimServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[SimServer, Path, Path]:
    """A simulator whose message endpoint takes 20/s with a burst of 2 (creates unlimited),
    and a campaign of 16 sessions launched on it."""
    profile = Profile.model_validate(
        {"name": "messages-limited", "faults": {"message_rate_limit": {"rate": 20, "burst": 2}}}
    )
    sim = make_sim(profile, time_scale=1)  # sessions keep working: all messageable
    path = fleet_manifest(write, 16)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    point_cli_at(sim, monkeypatch)
    return sim, path, ledger


def test_message_learns_the_servers_limit_sends_each_once_and_never_exceeds_rate(
    limited: tuple[SimServer, Path, Path], sim_client: Callable[..., Any]
) -> None:
    sim, path, ledger = limited
    res = CliRunner().invoke(
        cli, ["message", str(path), "--text", TEXT, "--rate", "40", "--ledger", str(ledger), "--yes"]
    )
    assert res.exit_code == 0, res.output
    assert "sent 16 message(s)" in res.output
    http = sim_client(sim)
    stats = http.get("/_sim/stats").json()
    assert stats["faults"].get("messages_rate_limited", 0) >= 1  # the server's limit was met
    assert stats["messages_max_per_second"] <= 40  # --rate holds at the server
    for s in sim.sessions():
        body = http.get(f"/v3/organizations/{sim.org_id}/sessions/{s['session_id']}/messages").json()
        texts = [m["message"] for m in body["items"] if m["source"] == "user"]
        assert texts.count(TEXT) == 1, (s["session_id"], texts)  # 429s sent nothing twice
