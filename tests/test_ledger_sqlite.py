"""The SQLite backend itself: migrations keep old ledger files working, refusals are clear, a
damaged file is one located message, and a paused writer is named, never a bare "locked"."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest, open_ledger
from launcher.errors import ExitCode, LedgerError
from launcher.ledger.migrations import MIGRATIONS, SCHEMA_VERSION
from launcher.ledger.records import TRANSITIONS, EventKind, LaunchState, LedgerEvent
from launcher.ledger.sqlite import SqliteLedger
from launcher.ledger.sqlite_errors import sqlite_errors
from tests.helpers import Write, clean, fleet_manifest, run


def test_a_v1_ledger_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO meta VALUES ('campaign', 'led')")
    db.execute(
        "INSERT INTO sessions (key, fleet, fingerprint, item_tag, state, session_id, "
        "updated_at) VALUES ('a', 'f', 'fp', 't', 'created', 'devin-1', 0)"
    )
    db.commit()
    db.close()
    with SqliteLedger(path, "led") as led:
        assert led.schema_version() == SCHEMA_VERSION
        r = led.record("a")
        assert r is not None and r.session_id == "devin-1" and r.state == LaunchState.created
        assert r.outcome is None and r.cancelled_at is None  # v2 columns exist, empty


def test_a_newer_ledger_and_a_file_that_is_no_ledger_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    SqliteLedger(path, "one").close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="knows up to") as info:
        SqliteLedger(path, "one")
    assert info.value.hint == "upgrade devin-fleet"
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        SqliteLedger(tmp_path / "junk.db", "one")


def test_a_v2_ledger_splits_failed_into_refused_gave_up_and_unknown(tmp_path: Path) -> None:
    """v3: `failed` meant three things; the migration tells them apart by the recorded reason,
    so a key whose ambiguous attempts ran out is looked up (unknown), never resent blindly."""
    path = tmp_path / "v2.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.executescript(MIGRATIONS[1])
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO meta VALUES ('campaign', 'led')")
    rows = [
        ("a", "HTTP 422: bad repo"),
        ("b", "gave up after 6 attempts: HTTP 500"),
        ("c", "could not reach the API: ConnectError"),
        ("d", "rate limited 200 times"),
    ]
    for key, why in rows:
        db.execute(
            "INSERT INTO sessions (key, fleet, fingerprint, item_tag, state, last_error, "
            "updated_at) VALUES (?, 'f', 'fp', 't', 'failed', ?, 0)",
            (key, why),
        )
    db.execute("INSERT INTO lock VALUES ('led', 'x', 'h', 1, 0, 0)")
    db.commit()
    db.close()
    with SqliteLedger(path, "led") as led:
        got = {k: r.state for k, r in led.records().items()}
        assert got == {
            "a": LaunchState.refused,
            "b": LaunchState.unknown,
            "c": LaunchState.gave_up,
            "d": LaunchState.gave_up,
        }
        holder = led.lock_holder()
        assert holder is not None and holder.generation == 0
        lease = led.acquire_lock(now=1e12)  # the old row is stale: taken over, generation 1
        assert lease.generation == 1 and led.holds_lock()


def test_every_event_kind_has_one_transition_and_a_given_state_must_agree() -> None:
    assert set(TRANSITIONS) == set(EventKind)
    assert LedgerEvent("a", EventKind.refused).state == LaunchState.refused
    assert LedgerEvent("a", "ambiguous").kind is EventKind.ambiguous  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="moves a key to"):
        LedgerEvent("a", EventKind.absent, state=LaunchState.created)


@pytest.mark.parametrize(
    ("exc", "hint"),
    [
        ("database is locked", "another devin-fleet process is using it"),
        ("database disk image is malformed", "the file is damaged or not a devin-fleet ledger"),
        ("attempt to write a readonly database", "check that the file and its folder"),
        ("disk I/O error", "re-run with --debug"),
    ],
)
def test_every_sqlite_error_becomes_a_located_ledger_error(exc: str, hint: str) -> None:
    with pytest.raises(LedgerError) as info, sqlite_errors(Path("/x/l.db"), "read"):
        raise sqlite3.OperationalError(exc)
    assert info.value.message == f"cannot read ledger /x/l.db: {exc}"
    assert info.value.path == "/x/l.db" and (info.value.hint or "").startswith(hint)


# A process that holds the campaign lease and pauses itself inside a write transaction (as an
# apply stopped by SIGSTOP in the middle of a group commit would).
_PAUSED_WRITER = """
import os, signal, sqlite3, sys
from launcher.ledger.sqlite import SqliteLedger
led = SqliteLedger(sys.argv[1], "led")
led.acquire_lock()
raw = sqlite3.connect(sys.argv[1], isolation_level=None)
raw.execute("BEGIN IMMEDIATE")
print("paused", flush=True)
os.kill(os.getpid(), signal.SIGSTOP)
"""


def test_a_paused_writer_is_named_with_its_lease_instead_of_a_bare_locked(tmp_path: Path) -> None:
    """Issue 23 item 7: an apply paused inside a write transaction blocks every other writer
    (SQLite's rule). A run that wants to take over says which process, since when, that it
    is paused, and what to do; and opening the ledger to read is not blocked at all."""
    path = tmp_path / "l.db"
    SqliteLedger(path, "led").close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSED_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "paused"
        with SqliteLedger(path, "led", busy_timeout=0.2) as led:  # opening only reads
            assert not led.write_lock_free()
            with pytest.raises(LedgerError) as info:
                led.acquire_lock(now=1e12)  # its lease is long stale: a takeover is due
        message, hint = info.value.message, info.value.hint or ""
        assert "database is locked" in message and f":{proc.pid}" in message
        assert "paused (stopped)" in message and "lease since" in message
        assert f"kill -CONT {proc.pid}" in hint
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with SqliteLedger(path, "led") as led:  # the paused process is gone: the takeover works
        assert led.write_lock_free() and led.acquire_lock().generation == 2


def corrupt_sessions_table(ledger: Path) -> None:
    """Overwrite the sessions table's root page with garbage; the file still opens."""
    db = sqlite3.connect(ledger)
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    root = db.execute("SELECT rootpage FROM sqlite_master WHERE name='sessions'").fetchone()[0]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with ledger.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_a_corrupt_ledger_on_read_commands_is_one_located_message(write: Write, tmp_path: Path) -> None:
    path, ledger = fleet_manifest(write, 3), tmp_path / "l.db"
    plan = build_plan(load_manifest(path))
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        led.sync_plan(plan)
    corrupt_sessions_table(ledger)
    for args in (("status", "--offline"), ("plan",), ("results", "--offline")):
        res = run(args[0], path, *args[1:], "--ledger", ledger)
        out = clean(res)
        assert res.exit_code == ExitCode.error, (args, out)
        assert f"error: cannot read ledger {ledger}: database disk image is malformed" in out
        assert "hint: the file is damaged or not a devin-fleet ledger" in out


def test_a_full_disk_says_what_happened_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as info, sqlite_errors(tmp_path / "l.db", "write"):
        raise sqlite3.OperationalError("database or disk is full")
    assert "the disk is full" in info.value.message
    assert info.value.hint is not None and "free some space" in info.value.hint
    assert "nothing recorded so far was lost" in info.value.hint
