"""Issue 18: one campaign, many machines, one PostgreSQL ledger. Each case as an adversary would
try it, against a real server (`pg_url`) and the simulator over real sockets: two clones at
once, a crowd taking the lease, skewed client clocks, a fresh clone, a killed connection, and
an apply paused past its lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest
from launcher.errors import ExitCode, LockedError
from launcher.ledger.location import open_ledger
from launcher.sim import Profile, SimServer
from tests.helpers import campaign, cli_env, run_apply, sessions_per_key

Write = Callable[[str, str], Path]
CLI = [sys.executable, "-m", "launcher"]


def clone(write: Write, n: int, where: str) -> Path:
    """A clone of the campaign's repository: its manifest in a folder of its own."""
    return campaign(write, n, name="shared").rename(_mkdir(write, where) / "shared.yaml")


def _mkdir(write: Write, where: str) -> Path:
    return write(f"{where}/.keep", "").parent


def apply_cmd(manifest: Path, url: str, *extra: str) -> list[str]:
    return [*CLI, "apply", str(manifest), "--yes", "--ledger", url, *extra]


def test_two_clones_applying_at_once_create_each_session_once(
    write: Write, make_sim: Callable[..., SimServer], pg_url: str
) -> None:
    """Before: two laptops with two SQLite ledgers, 379 sessions for 200 items. Now both
    point at one PostgreSQL ledger: one holds the lease, the other waits for it, then finds
    everything launched. 0 duplicates, 0 missing."""
    sim = make_sim(Profile.model_validate({"name": "slowish", "faults": {"latency_seconds": 0.02}}))
    a, b = clone(write, 12, "laptop-a"), clone(write, 12, "laptop-b")
    env = {**os.environ, **cli_env(sim)}
    runs = [
        subprocess.Popen(apply_cmd(m, pg_url, "--lock-timeout", "60"), env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for m in (a, b)
    ]  # fmt: skip
    results = [(p.wait(timeout=120), p.communicate()) for p in runs]
    assert [code for code, _ in results] == [0, 0], results
    plan = build_plan(load_manifest(a))
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}
    assert len(sim.sessions()) == len(plan)


_ACQUIRE = """
import sys
from pathlib import Path
from launcher.errors import LockedError
from launcher.ledger.location import open_ledger
led = open_ledger(Path("."), "crowd", sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # the starting gun: everyone at once
try:
    print(led.acquire_lock(ttl=60).generation, flush=True)
except LockedError:
    print("locked", flush=True)
sys.stdin.readline()
"""


def test_many_processes_taking_the_lease_at_once_exactly_one_wins(pg_url: str) -> None:
    # No schema yet: the crowd also races to create it (one migration, under its lock).
    procs = [
        subprocess.Popen([sys.executable, "-c", _ACQUIRE, pg_url], text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for _ in range(6)
    ]  # fmt: skip
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        answers = [p.stdout.readline().strip() for p in procs if p.stdout is not None]
    finally:
        for p in procs:
            p.communicate("done\n", timeout=30)
    winners = [a for a in answers if a != "locked"]
    assert len(winners) == 1 and winners[0].isdigit(), answers
    with open_ledger(Path("."), "crowd", pg_url) as led:  # the winner has ended: its pid is gone
        later = [led.acquire_lock().generation for _ in range(3)]
    assert int(winners[0]) < later[0] < later[1] < later[2]  # generations only grow


_SKEWED_HOLDER = """
import sys, time
real = time.time
time.time = lambda: real() - 600  # this machine's clock is 10 minutes slow
from pathlib import Path
from launcher.ledger.location import open_ledger
led = open_ledger(Path("."), "skew", sys.argv[1])
led.acquire_lock(ttl=30)
print("held", flush=True)
sys.stdin.read()
"""


def test_client_clock_skew_changes_nothing(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lease lives in the database's clock: a holder whose clock is 10 minutes slow is not
    stale to a machine whose clock is 10 minutes fast (a client-clock lease would be taken)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _SKEWED_HOLDER, pg_url], text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 600)
        with open_ledger(Path("."), "skew", pg_url) as led:
            with pytest.raises(LockedError):
                led.acquire_lock(ttl=30)
            held = led.lock_holder()
            assert held is not None and abs(held.heartbeat_at - (real() + 0)) < 60
    finally:
        holder.communicate("", timeout=30)


def test_a_fresh_clone_on_the_shared_ledger_creates_nothing_and_sees_everything(
    write: Write, make_sim: Callable[..., SimServer], pg_url: str
) -> None:
    sim = make_sim("clean")
    first = clone(write, 5, "ci-runner")
    plan = build_plan(load_manifest(first))
    assert run_apply(plan, sim, pg_url).exit_code == 0  # type: ignore[arg-type]  # a URL
    with open_ledger(first, plan.campaign, pg_url) as led:
        led.record_wave(1, "passed", "from the CI runner")
    fresh = clone(write, 5, "teammate")  # Monday: a teammate's new clone, no local state
    env = {**os.environ, **cli_env(sim)}
    again = subprocess.run(
        apply_cmd(fresh, pg_url), env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert len(sim.sessions()) == 5  # nothing created
    status = subprocess.run(
        [*CLI, "status", str(fresh), "--offline", "--ledger", pg_url, "-o", "json"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode in (ExitCode.ok, ExitCode.unfinished), status.stderr  # some run
    for s in plan.sessions:
        assert s.key in status.stdout
    with open_ledger(fresh, plan.campaign, pg_url) as led:
        assert all(r.state.launched for r in led.records().values())
        assert [w["detail"] for w in led.wave_log()] == ["from the CI runner"]


def test_a_connection_killed_mid_apply_duplicates_nothing_and_the_next_run_converges(
    write: Write, make_sim: Callable[..., SimServer], pg_url: str
) -> None:
    sim = make_sim(Profile.model_validate({"name": "slowish", "faults": {"latency_seconds": 0.05}}))
    manifest = clone(write, 16, "killed")
    plan = build_plan(load_manifest(manifest))
    url = f"{pg_url}&application_name=fleet-victim"
    env = {**os.environ, **cli_env(sim)}
    run = subprocess.Popen(apply_cmd(manifest, url, "--rate", "8", "--concurrency", "2"), env=env,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(sim.sessions()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        import psycopg  # the test extra installs it (the `postgres` extra for users)

        killed = 0
        with psycopg.connect(pg_url, autocommit=True) as admin:
            row = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'fleet-victim'"
            ).fetchone()
            killed = int(row[0]) if row else 0
        assert killed >= 1  # the apply's connection was cut mid-run
    finally:
        out, err = run.communicate(timeout=120)
    assert run.returncode in (0, 1, ExitCode.unfinished), (out, err)  # retried, or stopped safely
    assert "Traceback" not in err
    counts = sessions_per_key(plan, sim)
    assert all(n == 1 for n in counts.values()), counts
    again = subprocess.run(
        apply_cmd(manifest, pg_url), env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0, again.stderr
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}


@pytest.mark.slow
def test_an_apply_paused_past_its_lease_stops_before_its_next_create(
    write: Write, make_sim: Callable[..., SimServer], pg_url: str
) -> None:
    """SIGSTOP an apply (perhaps inside a ledger transaction: the server ends that after its
    idle timeout, so the takeover is not blocked); a second apply takes the campaign over and
    finishes; SIGCONT the first: it sends no create and exits with the lock-lost code."""
    sim = make_sim(Profile.model_validate({"name": "slowish", "faults": {"latency_seconds": 0.05}}))
    manifest = clone(write, 24, "paused")
    plan = build_plan(load_manifest(manifest))
    env = {**os.environ, **cli_env(sim), "DEVIN_FLEET_LOCK_TTL": "2"}
    # The paused run's last creates got no answer: the takeover looks them up a request
    # timeout later (they may still be in transit). 3 s stated, not the default 30.
    timeout = ("--request-timeout", "3")
    cmd = apply_cmd(manifest, pg_url, "--rate", "4", "--concurrency", "2", *timeout)
    first = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(sim.sessions()) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        before = len(sim.sessions())
        second = subprocess.run(
            apply_cmd(manifest, pg_url, "--rate", "100", "--lock-timeout", "30", *timeout),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert len(sim.sessions()) == len(plan) >= before
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == ExitCode.lock_lost, (out, err)
    assert "lost the campaign lock" in err
    assert sessions_per_key(plan, sim) == {s.key: 1 for s in plan.sessions}


def test_ledger_copy_moves_a_campaign_to_postgresql_and_back_whole(
    write: Write, pg_url: str, tmp_path: Path
) -> None:
    """`devin-fleet ledger copy`: SQLite -> PostgreSQL -> SQLite keeps every row (attempts,
    refusals, waves, messages); a destination that has the campaign already is refused; the
    password in a URL is never printed."""
    from click.testing import CliRunner

    from launcher.cli import cli
    from launcher.ledger.records import EventKind, LedgerEvent

    plan = build_plan(load_manifest(clone(write, 3, "laptop")))
    first, back = tmp_path / "a.db", tmp_path / "b.db"
    with open_ledger(plan.manifest.path, plan.campaign, first) as led:
        led.sync_plan(plan)
        led.write_events([LedgerEvent("repo-000", EventKind.created, session_id="devin-1")])
        led.write_events([LedgerEvent("repo-001", EventKind.refused, http_status=422, detail="no")])
        led.relaunch("repo-000", live=False, keep=False, request="repo-000")
        led.record_wave(1, "passed")
        led.message_intent("repo-000", "devin-1", "d", "hello")
        rows = led.export_rows()
    secret_url = pg_url.replace("postgres@", "postgres:hunter2@")
    runner = CliRunner()
    res = runner.invoke(cli, ["ledger", "copy", str(first), secret_url])
    assert res.exit_code == 0, res.output
    assert "verified" in res.output and "hunter2" not in res.output and "postgres:***@" in res.output
    again = runner.invoke(cli, ["ledger", "copy", str(first), secret_url])
    assert again.exit_code == ExitCode.error and "not empty" in again.output
    assert "hunter2" not in again.output
    res = runner.invoke(cli, ["ledger", "copy", pg_url, str(back), "--campaign", plan.campaign])
    assert res.exit_code == 0, res.output
    with open_ledger(plan.manifest.path, plan.campaign, back, create=False) as led:
        assert led.export_rows() == rows
    nameless = runner.invoke(cli, ["ledger", "copy", pg_url, str(tmp_path / "c.db")])
    assert nameless.exit_code == ExitCode.usage and "--campaign" in nameless.output
    assert not (tmp_path / "c.db").exists()


def test_a_cli_older_than_the_shared_schema_refuses_clearly(pg_url: str) -> None:
    import psycopg

    from launcher.errors import LedgerError
    from launcher.ledger.migrations import PG_SCHEMA_VERSION

    with open_ledger(Path("."), "old", pg_url):
        pass
    with psycopg.connect(pg_url, autocommit=True) as admin:  # a newer devin-fleet migrated it
        admin.execute("UPDATE fleet_schema SET version = version + 1")
    with pytest.raises(LedgerError, match=f"knows up to v{PG_SCHEMA_VERSION}") as info:
        open_ledger(Path("."), "old", pg_url)
    assert "upgrade devin-fleet" in (info.value.hint or "")
