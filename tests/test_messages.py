"""`devin-fleet message`: each selected session gets a message exactly once, across re-runs,
a crash between the intent and the POST's answer, and real processes killed with SIGKILL."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from launcher import build_plan, load_manifest, open_ledger
from launcher.api.client import ApiConfig, DevinClient
from launcher.errors import ExitCode
from launcher.run.messages import MessageBatch, MessageReport, Outgoing, digest, send_messages
from launcher.sim import Profile, SimServer
from tests.helpers import apply_all, fleet_manifest, point_cli_at, run, wait_for
from tests.holders import live_holder

Write = Callable[[str, str], Path]
TEXT = "Please rebase on main and re-run the tests."
SLOW = Profile.model_validate(
    {"name": "slow", "faults": {"latency_seconds": 0.05, "latency_jitter_seconds": 0.1}}
)


def user_messages(sim: SimServer, http: Any) -> dict[str, Counter[str]]:
    """Per session id: how many times each user message text arrived (read from the API, all
    sessions at once: a slow profile's latency is paid once, not once per session)."""

    def read(sid: str) -> Counter[str]:
        body = http.get(f"/v3/organizations/{sim.org_id}/sessions/{sid}/messages").json()
        return Counter(m["message"] for m in body["items"] if m["source"] == "user")

    ids = [s["session_id"] for s in sim.sessions()]
    with ThreadPoolExecutor(max_workers=16) as pool:
        return dict(zip(ids, pool.map(read, ids), strict=True))


@pytest.fixture
def launched(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[SimServer, Path, Path]:
    sim = make_sim("clean", time_scale=1)  # sessions keep working for minutes: all messageable
    path = fleet_manifest(write, 6)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    point_cli_at(sim, monkeypatch)
    return sim, path, ledger


def test_messages_go_once_to_the_selected_sessions_and_a_rerun_sends_nothing(
    launched: tuple[SimServer, Path, Path], sim_client: Callable[..., Any]
) -> None:
    sim, path, ledger = launched
    http = sim_client(sim)
    args: list[str | Path] = ["message", path, "--ledger", ledger, "--only", "r-00[0-2]", "--rate", "50"]
    res = run(*args, "--text", "Hi {{ session.key }} ({{ item.team }})")
    assert res.exit_code == 1 and "--yes" in res.output  # asks first; no terminal: refused
    assert "3 session(s) to message" in res.stdout and "Hi r-000 (a)" in res.stdout
    assert sum(sum(c.values()) for c in user_messages(sim, http).values()) == 6  # the prompts only

    res = run(*args, "--text", "Hi {{ session.key }} ({{ item.team }})", "--yes")
    assert res.exit_code == 0, res.output
    assert "sent 3 message(s)" in res.stdout
    with open_ledger(path, "fu", ledger) as led:
        ids = {k: r.session_id for k, r in led.records().items()}
        stored = led.messages()
    got = user_messages(sim, http)
    for key, sid in ids.items():
        want = 1 if key in ("r-000", "r-001", "r-002") else 0
        assert got[sid][f"Hi {key} ({'ab'[int(key[2:]) % 2]})"] == want
    assert {r.state for r in stored.values()} == {"sent"} and len(stored) == 3

    res = run(*args, "--text", "Hi {{ session.key }} ({{ item.team }})", "--yes")
    assert res.exit_code == 0 and "3 session(s) already have this message" in res.stdout
    assert "nothing to send" in res.stdout
    assert user_messages(sim, http) == got
    assert sim.stats()["requests"].get("POST /sessions/{id}/messages") == 3


def test_a_crash_between_intent_and_answer_is_looked_up_not_resent(
    launched: tuple[SimServer, Path, Path], sim_client: Callable[..., Any]
) -> None:
    """The adversary: one intent whose POST reached the API (the process died before recording
    the answer), one whose POST never left. The re-run must send only the second."""
    sim, path, ledger = launched
    http = sim_client(sim)
    with open_ledger(path, "fu", ledger) as led:
        ids = {k: r.session_id or "" for k, r in led.records().items()}
        led.message_intent("r-000", ids["r-000"], digest(TEXT), TEXT)
        led.message_intent("r-001", ids["r-001"], digest(TEXT), TEXT)
    sent = http.post(
        f"/v3/organizations/{sim.org_id}/sessions/{ids['r-000']}/messages", json={"message": TEXT}
    )
    assert sent.status_code == 200
    res = run("message", path, "--ledger", ledger, "--only", "r-00[01]", "--text", TEXT, "--yes")
    assert res.exit_code == 0, res.output
    assert "sent 1 message(s), 1 found already delivered" in res.stdout
    got = user_messages(sim, http)
    assert got[ids["r-000"]][TEXT] == 1 and got[ids["r-001"]][TEXT] == 1
    assert sim.stats()["requests"].get("GET /sessions/{id}/messages", 0) >= 2  # both looked up
    with open_ledger(path, "fu", ledger) as led:
        assert {r.key: r.state for r in led.messages().values()} == {"r-000": "sent", "r-001": "sent"}


def test_a_bad_message_template_is_a_usage_error(launched: tuple[SimServer, Path, Path]) -> None:
    _, path, ledger = launched
    res = run("message", path, "--ledger", ledger, "--text", "{{ nope.x }}", "--yes")
    assert res.exit_code == 64 and "undefined variable" in res.output and "Traceback" not in res.output
    res = run("message", path, "--ledger", ledger, "--yes")
    assert res.exit_code == 64 and "--text or --file" in res.output


def start_message(path: Path, sim: SimServer, ledger: Path) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }
    cmd = ["message", str(path), "--ledger", str(ledger), "--text", TEXT, "--yes", "--rate", "20"]
    return subprocess.Popen(
        [sys.executable, "-m", "launcher", *cmd],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sigkill_mid_send_then_rerun_delivers_each_message_exactly_once(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, sim_client: Callable[..., Any]
) -> None:
    sim = make_sim(SLOW, time_scale=1)  # latency: kills land before, during and after POSTs
    path = fleet_manifest(write, 30)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    http = sim_client(sim)

    def arrived() -> int:
        return int(sim.stats()["requests"].get("POST /sessions/{id}/messages", 0))

    rng = random.Random(20261130)
    kills = 0
    for _ in range(4):
        proc = start_message(path, sim, ledger)
        before = arrived()
        wait_for(lambda p=proc, b=before: arrived() > b or p.poll() is not None, 30)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate(timeout=30)
        assert max(c[TEXT] for c in user_messages(sim, http).values()) <= 1
    assert kills >= 2
    final = start_message(path, sim, ledger)
    out, errs = final.communicate(timeout=120)
    assert final.returncode == 0, errs
    got = user_messages(sim, http)
    assert len(got) == 30 and all(c[TEXT] == 1 for c in got.values()), got
    again = start_message(path, sim, ledger)
    out, errs = again.communicate(timeout=120)
    assert again.returncode == 0 and "nothing to send" in out, errs
    assert user_messages(sim, http) == got


# =========================================================================== scripted cases


class FakeAPI:
    """A scripted messages endpoint: POSTs answer 500 (after storing the message, or not)."""

    def __init__(self, *, stores: bool, status: int = 500) -> None:
        self.stores, self.status = stores, status
        self.stored: list[str] = []
        self.posts = 0
        self.gets = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
            if self.stores:
                self.stored.append(json.loads(request.content)["message"])
            return httpx.Response(self.status, json={"detail": "boom"})
        self.gets += 1
        items = [
            {"message_id": str(i), "source": "user", "message": m} for i, m in enumerate(self.stored)
        ]
        return httpx.Response(200, json={"items": items, "end_cursor": None, "has_next_page": False})


class NoWait:
    """A clock whose sleeps pass at once (virtual time moves by what is slept)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds
        await anyio.lowlevel.checkpoint()


@pytest.mark.parametrize("stores", [True, False])
def test_an_ambiguous_send_is_read_back_and_never_blindly_resent(tmp_path: Path, stores: bool) -> None:
    api = FakeAPI(stores=stores)
    with open_ledger(tmp_path / "l.db", "c", tmp_path / "l.db") as led:
        batch = MessageBatch([Outgoing("k", "devin-1", TEXT, digest(TEXT))], [])

        async def go() -> MessageReport:
            cfg = ApiConfig("https://api.example.test", "org-1", "tok")
            async with DevinClient(cfg, transport=httpx.MockTransport(api)) as client:
                return await send_messages(client, led, batch, rate=100, clock=NoWait())

        report = anyio.run(go)
        state = led.messages()[("devin-1", digest(TEXT))].state
    assert api.posts == 1 and api.gets == 1  # one POST, then a look, never a second POST
    if stores:
        assert (report.sent, report.found, report.errors) == (0, 1, {}) and state == "sent"
    else:
        assert report.found == 0 and "next run looks it up" in report.errors["k"]
        assert state == "pending"  # the next run reads back before sending


def test_a_refused_message_is_recorded_and_retried_on_the_next_run(tmp_path: Path) -> None:
    api = FakeAPI(stores=False, status=400)
    with open_ledger(tmp_path / "l.db", "c", tmp_path / "l.db") as led:
        batch = MessageBatch([Outgoing("k", "devin-1", TEXT, digest(TEXT))], [])

        async def go() -> MessageReport:
            cfg = ApiConfig("https://api.example.test", "org-1", "tok")
            async with DevinClient(cfg, transport=httpx.MockTransport(api)) as client:
                return await send_messages(client, led, batch, rate=100, clock=NoWait())

        report = anyio.run(go)
        assert led.messages()[("devin-1", digest(TEXT))].state == "rejected"
    assert api.posts == 1 and api.gets == 0 and report.errors["k"] == "boom"


def test_message_from_a_file_template_reads_item_output_and_session(
    launched: tuple[SimServer, Path, Path], sim_client: Callable[..., Any], write: Write
) -> None:
    sim, path, ledger = launched
    tmpl = write(
        "msg.md.j2",
        "{{ session.key }} of team {{ item.team }}: {{ output.verdict | default('no output yet') }}\n",
    )
    res = run("message", path, "--ledger", ledger, "--only", "r-003", "--file", tmpl, "--yes")
    assert res.exit_code == 0, res.output
    with open_ledger(path, "fu", ledger) as led:
        sid = led.records()["r-003"].session_id or ""
    assert user_messages(sim, sim_client(sim))[sid]["r-003 of team b: no output yet"] == 1


def test_a_second_sender_is_kept_out_by_the_campaign_lock(
    launched: tuple[SimServer, Path, Path],
) -> None:
    sim, path, ledger = launched

    args = ("message", path, "--ledger", ledger, "--text", TEXT, "--yes")
    with live_holder(str(ledger), "fu") as owner:  # another live process on this host holds it
        res = run(*args, "--lock-timeout", "0")
        assert res.exit_code == ExitCode.locked and f"is locked by {owner}" in res.stderr
        assert "Traceback" not in res.output
        started = time.monotonic()
        waited = run(*args, "--lock-timeout", "1s")  # tried again for a second, then told
        assert time.monotonic() - started >= 1.0
        assert waited.exit_code == ExitCode.locked and f"is locked by {owner}" in waited.stderr
    assert sim.stats()["requests"].get("POST /sessions/{id}/messages", 0) == 0
    bad = run(*args, "--lock-timeout", "soon")
    assert bad.exit_code == ExitCode.usage and "--lock-timeout" in bad.output
    sent = run(*args, "--lock-timeout", "0", "--rate", "50")  # released: taken at once
    assert sent.exit_code == 0, sent.output


def test_a_sender_whose_lock_was_taken_over_stops_before_its_next_send(tmp_path: Path) -> None:
    """The adversary: while this sender is paused, another run takes the campaign lock over
    (its generation moves on). The next send must not go out: fencing, as for creates. (One
    message in flight: with more, sends already past the fence race the takeover, as
    creates in flight do.)"""
    from launcher.errors import LockLostError

    posts: list[str] = []
    path = tmp_path / "l.db"

    def api(request: httpx.Request) -> httpx.Response:
        posts.append(json.loads(request.content)["message"])
        with open_ledger(path, "c", path) as other:  # after the first send, another run takes the lock
            other.acquire_lock()  # (this process again: a takeover, generation + 1)
        return httpx.Response(200, json={"message_id": "m", "source": "user", "message": "x"})

    with open_ledger(path, "c", path) as led:
        todo = [Outgoing(f"k{i}", f"devin-{i}", TEXT, digest(TEXT)) for i in range(3)]
        batch = MessageBatch(todo, [])

        async def go() -> MessageReport:
            cfg = ApiConfig("https://api.example.test", "org-1", "tok")
            async with DevinClient(cfg, transport=httpx.MockTransport(api)) as client:
                return await send_messages(client, led, batch, rate=100, clock=NoWait(), concurrency=1)

        with pytest.raises(LockLostError, match="lost the campaign lock"):
            anyio.run(go)
    assert len(posts) == 1  # the sends after the takeover never left
