"""Day two of a campaign (issue 21), the parts that talk to the API: `apply --wait`'s ending,
named canary waves and their gate, `message`'s progress and reasons, what `apply` asks and
says; through the real CLI against the simulator on a loopback port."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from launcher import build_plan, load_manifest
from launcher.cli import cli
from launcher.ledger.location import open_ledger
from launcher.run.rollout import assign_waves
from launcher.sim import Profile, SimServer
from launcher.views.progress import ProgressReporter
from tests.helpers import point_cli_at, run_pty

Write = Callable[[str, str], Path]


def profile(name: str, outcomes: dict[str, float], working: float) -> Profile:
    life = {"new_seconds": 0, "claimed_seconds": 0, "working_seconds_min": working}
    life["working_seconds_max"] = working * 3
    return Profile.model_validate({"name": name, "outcomes": outcomes, "lifecycle": life})


FOREVER = profile("forever", {"finished": 1}, 1e7)
FAILING = profile("failing", {"error": 1}, 5)


def manifest(write: Write, n: int, rollout: str = "") -> Path:
    items = ", ".join(
        f"{{repo: svc-{i:03d}, risk: {'low' if i % 4 == 0 else 'high'}}}" for i in range(n)
    )
    return write(
        "m.yaml",
        f"""
        version: 1
        campaign: d2
        defaults: {{max_acu_limit: 2}}
        {rollout}
        fleets:
          - name: f
            key: "{{{{ item.repo }}}}"
            for_each: {{items: [{items}]}}
            session:
              prompt: "Upgrade {{{{ item.repo }}}}"
              repos: ["acme/{{{{ item.repo }}}}"]
        """,
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimServer], None]:
    def _env(sim: SimServer) -> None:
        point_cli_at(sim, monkeypatch)

    return _env


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_apply_wait_ends_with_the_counts_and_what_needs_attention(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Item 2: not a row per session (12,593 lines for 300), but counts, a few rows, commands."""
    sim = make_sim("mixed", time_scale=2000, seed=1)
    env(sim)
    path, ledger = manifest(write, 40), tmp_path / "l.db"
    res = run("apply", path, "--yes", "--ledger", ledger, "--wait", "--interval", "0.05")
    assert res.exit_code in (3, 6), res.output
    lines = res.stdout.splitlines()
    assert len(lines) <= 20, res.stdout
    counts = next(ln for ln in lines if ln.startswith(("failed: ", "needs-human: ")))
    assert sum(1 for ln in lines if ln == counts) == 1  # said once
    n = sum(int(x) for x in re.findall(r"(?:failed|needs-human): (\d+)", counts))
    assert f"{n} session(s) need attention:" in lines
    shown = [ln for ln in lines if ln.startswith("svc-")]
    assert len(shown) == min(n, 10) and all("https://" in ln for ln in shown)
    if n > 10:
        assert f"... and {n - 10} more" in lines
    assert f"all of them: devin-fleet results {path} --outcome failed --outcome needs-human" in lines
    assert f"every session: devin-fleet results {path}" in lines


def test_named_canary_waves_are_planned_launched_first_and_gated(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Item 4 (and item 7's messages): the manifest names the canary; `plan` shows the waves;
    `apply` launches exactly the canary, and its gate stops the rest."""
    waves = "[{keys: ['svc-00[01]']}, {when: \"item.risk == 'low'\"}, rest]"
    path = manifest(write, 12, f"rollout: {{waves: {waves}, gate: {{wait_timeout: 30m}}}}")
    plan = json.loads(run("plan", path, "-o", "json").stdout)
    wave = {s["key"]: s["wave"] for s in plan["sessions"]}
    low = {f"svc-{i:03d}" for i in range(12) if i % 4 == 0}
    assert {k for k, w in wave.items() if w == 1} == {"svc-000", "svc-001"}
    assert {k for k, w in wave.items() if w == 2} == low - {"svc-000"}
    assert {k for k, w in wave.items() if w == 3} == set(wave) - low - {"svc-001"}
    text = run("plan", path).stdout
    assert "rollout: 3 waves (wave 1: 2 session(s), wave 2: 2 session(s), wave 3: 8" in text

    sim = make_sim(FAILING, time_scale=100)
    env(sim)
    res = run("apply", path, "--yes", "--ledger", tmp_path / "l.db", "--interval", "0.05")
    assert res.exit_code == 7, res.output
    assert sorted(s["repos"][0] for s in sim.sessions()) == ["acme/svc-000", "acme/svc-001"]
    assert f"see `devin-fleet results {path}`" in res.stdout.lower()
    assert "MANIFEST" not in res.output
    assert res.output.count("wave 1: 0 of 2 succeeded") == 1  # said once, not twice


@pytest.mark.parametrize(
    ("waves", "message"),
    [
        ("[{keys: [nope-*]}, rest]", "wave 1 names no session of the plan"),
        ("[2, {keys: [svc-001]}]", "named waves (keys, when) come before the sized ones"),
        ("[{keys: [a], when: x}]", "a named wave takes `keys` or `when` (one of them)"),
        ("[{when: 'item.risk =='}]", "wave expression syntax error"),
    ],
)
def test_named_waves_that_cannot_work_are_refused_at_plan_time(
    write: Write, waves: str, message: str
) -> None:
    path = manifest(write, 4, f"rollout: {{waves: {waves}}}")
    res = run("plan", path)
    assert res.exit_code != 0 and message in res.output, res.output
    assert re.search(rf"{re.escape(str(path))}:\d+:\d+: rollout\.waves", res.output), res.output
    assert "Traceback" not in res.output


def test_only_never_walks_past_a_gate_that_is_not_open(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Item 4: `apply --only` of a key of wave 2 used to launch it, skipping wave 1's gate."""
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path = manifest(write, 6, "rollout: {waves: [1, rest]}")
    later = assign_waves(build_plan(load_manifest(path)))[1].keys[0]
    res = run("apply", path, "--yes", "--ledger", tmp_path / "l.db", "--only", later)
    assert res.exit_code == 4, res.output
    assert "--only selects no session of wave 1, whose gate is not open yet" in res.stdout
    assert sim.sessions() == []


def test_message_shows_progress_a_summary_and_why_nothing_is_sent(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, env: Callable[..., Any]
) -> None:
    """Item 6."""
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path, ledger = manifest(write, 3), tmp_path / "l.db"
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    none = run("message", path, "--ledger", ledger, "--outcome", "failed", "--text", "hi", "--yes")
    assert none.exit_code == 0
    assert "nothing to send: no session of the 3 matches --outcome failed" in none.stdout
    args = ("message", path, "--ledger", ledger, "--text", "Go on, {{ item.repo }}", "--yes")
    sent = run(*args, "--rate", "100")
    assert sent.exit_code == 0, sent.output
    assert "message: 3 to do" in sent.stderr and "message: 3/3 sent=3" in sent.stderr
    assert "sent 3 message(s), 0 found already delivered" in sent.stdout
    again = run(*args)
    assert "nothing to send: 3 already have this message" in again.stdout


def test_apply_asks_with_the_rate_and_says_the_waves_keep_it_running(
    write: Write, make_sim: Callable[..., SimServer], env: Callable[..., Any], tmp_path: Path
) -> None:
    """Items 7 and 9: the question says the rate (20/s against an API, 100/s on --sim) and that
    a rollout keeps apply running to follow each wave to its gate."""
    sim = make_sim(FOREVER, time_scale=100)
    env(sim)
    path = manifest(write, 4, "rollout: {waves: [1, rest], gate: {wait_timeout: 30m}}")
    screen = run_pty("apply", path, "--ledger", tmp_path / "l.db", stdin="n\n")
    flat = " ".join(screen.split())
    assert "at most 20 creates/s and 8 at a time" in flat, screen
    assert "in 2 waves: apply stays running to follow each wave to its gate (up to 30m a wave)" in flat
    assert sim.sessions() == []  # answered no
    screen = run_pty("apply", path, "--sim", stdin="n\n")
    assert "at most 100 creates/s" in " ".join(screen.split()), screen


def test_plan_only_selects_and_shows_the_prompts_of_the_selection(write: Write) -> None:
    path = manifest(write, 6)
    res = run("plan", path, "--only", "svc-00[12]", "--show-prompts")
    assert res.exit_code == 0, res.output
    assert "Upgrade svc-001" in res.stdout and "Upgrade svc-002" in res.stdout
    assert "svc-003" not in res.stdout and "2 sessions" in res.stdout
    data = json.loads(run("plan", path, "--only", "svc-00[12]", "-o", "json").stdout)
    assert [s["key"] for s in data["sessions"]] == ["svc-001", "svc-002"]
    bad = run("plan", path, "--only", "nope")
    assert bad.exit_code == 64 and "keys look like svc-000" in bad.output


def test_status_without_a_token_does_not_offer_a_flag_it_lacks(write: Write, tmp_path: Path) -> None:
    path = manifest(write, 2)
    with open_ledger(path, "d2", tmp_path / "l.db"):
        pass
    res = run("status", path, "--ledger", tmp_path / "l.db")
    assert res.exit_code != 0 and "DEVIN_API_KEY is not set" in res.output
    assert "--sim" not in res.output and "devin-fleet sim" in res.output
    res = run("apply", path, "--ledger", tmp_path / "l.db", "--yes")
    assert "apply MANIFEST --sim" in res.output


def test_following_shows_no_rate_and_launching_none_in_its_first_second() -> None:
    """Item 9: sessions turn final a refresh at a time (20 at once after 4 ms: `4372.6/s`)."""
    stream = io.StringIO()
    follow = ProgressReporter("following", stream=stream, every=0, force_terminal=False, rate=False)
    follow.start(20)
    for i in range(20):
        follow.advance(f"k{i}", "succeeded")
    launch = ProgressReporter("apply", stream=stream, every=0, force_terminal=False)
    launch.start(2)
    launch.advance("a", "created")
    assert "/s" not in stream.getvalue()
    assert "following: 20/20 succeeded=20" in stream.getvalue()
