"""The ledger: migrations keep old ledgers working, refusals are clear, replace starts clean."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest
from launcher.errors import LedgerError
from launcher.ledger.attempts import relaunch
from launcher.ledger.store import (
    MIGRATIONS,
    SCHEMA_VERSION,
    TRANSITIONS,
    EventKind,
    LaunchState,
    Ledger,
    LedgerEvent,
)

Write = Callable[[str, str], Path]


def small_plan(write: Write, prompt: str = "Fix {{ item }}"):  # type: ignore[no-untyped-def]
    path = write(
        "m.yaml",
        f"""
        version: 1
        campaign: led
        fleets:
          - name: f
            for_each: {{items: [a, b]}}
            session: {{prompt: "{prompt}"}}
        """,
    )
    return build_plan(load_manifest(path))


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
    with Ledger(path, "led") as led:
        assert led.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        r = led.record("a")
        assert r is not None and r.session_id == "devin-1" and r.state == LaunchState.created
        assert r.outcome is None and r.cancelled_at is None  # v2 columns exist, empty


def test_a_newer_ledger_and_another_campaigns_ledger_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    Ledger(path, "one").close()
    with pytest.raises(LedgerError, match="belongs to campaign 'one'"):
        Ledger(path, "two")
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(LedgerError, match="knows up to") as info:
        Ledger(path, "one")
    assert info.value.hint == "upgrade devin-fleet"
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger(tmp_path / "missing.db", "one", create=False)
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger(tmp_path / "junk.db", "one")


def test_a_relaunch_starts_the_new_attempt_clean(write: Write, tmp_path: Path) -> None:
    plan = small_plan(write)
    with Ledger(tmp_path / "l.db", "led") as led:
        led.sync_plan(plan)
        led.write_events(
            [
                LedgerEvent("a", "intent", 1),
                LedgerEvent("a", "created", session_id="devin-1", state=LaunchState.created, url="u"),
            ]
        )
        led.update_status(
            [
                {
                    "session_id": "devin-1",
                    "status": "running",
                    "status_detail": "finished",
                    "outcome": "succeeded",
                    "acus_consumed": 2.5,
                    "pull_requests": [{"pr_url": "p"}],
                    "structured_output": {"ok": True},
                }
            ]
        )
        led.mark_cancelled(["a"])
        assert relaunch(led, "a", live=False, keep=False, request="a") == 2
        r = led.record("a")
        assert r is not None and r.state == LaunchState.planned and r.session_id is None
        assert (r.outcome, r.acus_consumed, r.pull_requests, r.structured_output, r.cancelled_at) == (
            None,
            None,
            None,
            None,
            None,
        )
        assert led.known_session_ids("a") == {"devin-1"}  # history is kept
        assert [e["kind"] for e in led.events("a")] == ["intent", "created", "cancelled", "replace"]


def test_never_attempted_keys_that_left_the_plan_are_forgotten(write: Write, tmp_path: Path) -> None:
    plan = small_plan(write)
    with Ledger(tmp_path / "l.db", "led") as led:
        led.sync_plan(plan)
        led.write_events(
            [
                LedgerEvent("a", "intent", 1),
                LedgerEvent("a", "created", session_id="devin-1", state=LaunchState.created),
            ]
        )
        path = write(
            "m.yaml",
            """
            version: 1
            campaign: led
            fleets:
              - name: f
                for_each: {items: [c]}
                session: {prompt: "x"}
            """,
        )
        led.sync_plan(build_plan(load_manifest(path)))
        assert set(led.records()) == {"a", "c"}  # b was never attempted; a was launched


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
    with Ledger(path, "led") as led:
        got = {k: r.state for k, r in led.records().items()}
        assert got == {
            "a": LaunchState.refused,
            "b": LaunchState.unknown,
            "c": LaunchState.gave_up,
            "d": LaunchState.gave_up,
        }
        assert led.db.execute("SELECT generation FROM lock").fetchone()[0] == 0
        lease = led.acquire_lock(now=1e12)  # the old row is stale: taken over, generation 1
        assert lease.generation == 1 and led.holds_lock()


def test_every_event_kind_has_one_transition_and_a_given_state_must_agree() -> None:
    assert set(TRANSITIONS) == set(EventKind)
    assert LedgerEvent("a", EventKind.refused).state == LaunchState.refused
    assert LedgerEvent("a", "ambiguous").kind is EventKind.ambiguous  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="moves a key to"):
        LedgerEvent("a", EventKind.absent, state=LaunchState.created)


def test_a_launched_key_moves_only_on_relaunch(write: Write, tmp_path: Path) -> None:
    plan = small_plan(write)
    with Ledger(tmp_path / "l.db", "led") as led:
        led.sync_plan(plan)
        led.write_events([LedgerEvent("a", EventKind.created, session_id="devin-1")])
        led.write_events([LedgerEvent("a", EventKind.absent), LedgerEvent("a", EventKind.intent)])
        r = led.record("a")
        assert r is not None and r.state == LaunchState.created and r.session_id == "devin-1"
        assert [e["kind"] for e in led.events("a")] == ["created", "absent", "intent"]


def test_fencing_a_takeover_bumps_the_generation_and_the_old_holder_knows(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with Ledger(path, "led") as first, Ledger(path, "led") as second:
        one = first.acquire_lock(now=1000.0, ttl=2.0)
        assert first.heartbeat() and first.holds_lock()
        # Same host and pid here: the second takes over as if the first were silent past the TTL.
        first.db.execute("UPDATE lock SET heartbeat_at=0")
        two = second.acquire_lock(ttl=2.0)
        assert two.generation == one.generation + 1
        assert not first.holds_lock() and not first.heartbeat()
        first.release_lock()  # the old holder's release must not free the new holder's lock
        assert second.holds_lock()
