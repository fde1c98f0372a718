"""Every behaviour of the ledger store, run against every backend (`BACKENDS`): what apply,
status, relaunch, message and rollout rely on, through the store's methods only."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest
from launcher.errors import LedgerError, LockedError, LockLostError
from launcher.ledger.location import ledger_exists, open_ledger
from launcher.ledger.records import AttemptRecord, Change, EventKind, LaunchState, LedgerEvent
from launcher.ledger.store import LedgerStore
from launcher.spec.plan import Plan
from tests.holders import dead_holder, live_holder

Write = Callable[[str, str], Path]
Open = Callable[..., LedgerStore]
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where this backend keeps a fresh campaign ledger (PostgreSQL: `pg_url`, a schema of
    its own on the test server; skipped without one, except under CI)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "l.db")


@pytest.fixture
def open_store(location: str) -> Iterator[Open]:
    """open_store(campaign="led", create=True) -> a store at this backend's location."""
    with ExitStack() as stack:

        def _open(campaign: str = "led", *, create: bool = True) -> LedgerStore:
            return stack.enter_context(open_ledger(Path("."), campaign, location, create=create))

        yield _open


def plan_of(write: Write, items: str = "[a, b]", prompt: str = "Fix {{ item }}") -> Plan:
    path = write(
        "m.yaml",
        f"""
        version: 1
        campaign: led
        fleets:
          - name: f
            for_each: {{items: {items}}}
            session: {{prompt: "{prompt}"}}
        """,
    )
    return build_plan(load_manifest(path))


def launched(led: LedgerStore, key: str, sid: str) -> None:
    led.write_events(
        [
            LedgerEvent(key, EventKind.intent, 1, fingerprint="fp-1"),
            LedgerEvent(key, EventKind.created, session_id=sid, url=f"https://x/{sid}"),
        ]
    )


def test_a_new_campaign_has_no_ledger_until_it_is_created(location: str, open_store: Open) -> None:
    assert not ledger_exists(Path("."), "led", location)
    with pytest.raises(LedgerError, match="no ledger"):
        open_store(create=False)
    open_store()
    assert ledger_exists(Path("."), "led", location)
    assert open_store(create=False).records() == {}
    if location.startswith("postgresql://"):  # one database, many campaigns
        assert not ledger_exists(Path("."), "other", location)
    else:  # a file is one campaign's
        with pytest.raises(LedgerError, match="belongs to campaign 'led'"):
            open_store("other")


def test_sync_plan_keeps_rows_requests_and_forgets_never_attempted_keys(
    write: Write, open_store: Open
) -> None:
    led = open_store()
    plan = plan_of(write)
    led.sync_plan(plan)
    assert {k: r.state for k, r in led.records().items()} == {"a": "planned", "b": "planned"}
    assert [c for c, _, _ in led.diff(plan)] == [Change.create, Change.create]
    a = plan.by_key()["a"]
    assert led.launched_request(a.fingerprint) == a.stored
    assert led.launched_request("nope") is None
    launched(led, "a", "devin-1")
    led.sync_plan(plan_of(write, "[c]"))
    assert set(led.records()) == {"a", "c"}  # b was never attempted; a was launched
    assert [(c, k) for c, k, _ in led.diff(plan_of(write, "[c]"))] == [
        (Change.create, "c"),
        (Change.gone, "a"),
    ]


def test_events_move_states_by_the_one_table_and_a_launched_key_stays(
    write: Write, open_store: Open
) -> None:
    led = open_store()
    led.sync_plan(plan_of(write))
    led.write_events([LedgerEvent("a", EventKind.intent, 1, fingerprint="fp-a")])
    r = led.record("a")
    assert r is not None and r.state == LaunchState.pending and r.attempts == 1
    led.write_events([LedgerEvent("a", EventKind.ambiguous, 1, 500, detail="HTTP 500")])
    led.write_events([LedgerEvent("a", EventKind.lookup_failed, detail="list failed")])
    r = led.record("a")
    assert r is not None and r.state == LaunchState.unknown and r.last_error == "list failed"
    adopted = LedgerEvent("a", EventKind.adopted, session_id="devin-1", url="u", launch_attempt=1)
    led.write_events([adopted])
    led.write_events([LedgerEvent("a", EventKind.absent), LedgerEvent("a", EventKind.intent)])
    r = led.record("a")
    assert r is not None and (r.state, r.session_id, r.url) == (LaunchState.adopted, "devin-1", "u")
    assert r.created_at is not None and r.last_error is None
    kinds = [e["kind"] for e in led.events("a")]
    assert kinds == ["intent", "ambiguous", "lookup_failed", "adopted", "absent", "intent"]
    led.write_events([LedgerEvent("b", EventKind.refused, http_status=422, detail="HTTP 422: no")])
    rb = led.record("b")
    assert rb is not None and rb.state == LaunchState.refused and rb.last_error == "HTTP 422: no"
    assert [e["key"] for e in led.events()] == ["a"] * 6 + ["b"]
    assert led.events("b")[0]["http_status"] == 422
    assert led.intent_fingerprints() == {"a": "fp-a"}
    assert led.session_ids_by_key() == {"a": {"devin-1"}}
    assert led.known_session_ids("a") == {"devin-1"} and led.known_session_ids("b") == set()
    led.write_events([LedgerEvent("zz", EventKind.created, session_id="devin-9")])  # no row: logged
    assert led.record("zz") is None and led.known_session_ids("zz") == {"devin-9"}


def test_status_refreshes_and_cancellation_are_kept(write: Write, open_store: Open) -> None:
    led = open_store()
    led.sync_plan(plan_of(write))
    launched(led, "a", "devin-1")
    update = {"session_id": "devin-1", "status": "running", "status_detail": "finished"}
    update |= {"outcome": "succeeded", "acus_consumed": 2.5, "pull_requests": [{"pr_url": "p"}]}
    led.update_status([update | {"structured_output": {"ok": True}}])
    r = led.record("a")
    assert r is not None and (r.status, r.status_detail) == ("running", "finished")
    assert (r.outcome, r.acus_consumed) == ("succeeded", 2.5)
    assert (r.pull_requests, r.structured_output) == ([{"pr_url": "p"}], {"ok": True})
    assert r.refreshed_at is not None
    led.mark_cancelled(["a"], archived=True)
    r = led.record("a")
    assert r is not None and r.outcome == "cancelled" and r.cancelled_at is not None
    assert led.events("a")[-1]["kind"] == "cancelled" and led.events("a")[-1]["detail"] == "archived"


def test_a_relaunch_keeps_the_earlier_attempt_whole_and_starts_clean(
    write: Write, open_store: Open
) -> None:
    led = open_store()
    led.sync_plan(plan_of(write))
    launched(led, "a", "devin-1")
    led.update_status(
        [
            {"session_id": "devin-1", "status": "exit", "status_detail": None, "outcome": "failed"}
            | {"acus_consumed": 1.0, "pull_requests": [], "structured_output": None}
        ]
    )
    with pytest.raises(LedgerError, match="not launched"):
        led.relaunch("b", live=False, keep=False, request="b")
    assert led.relaunch("a", live=True, keep=False, request="a", expected=2) is None
    assert led.relaunch("a", live=True, keep=False, request="a", expected=1) == 2
    r = led.record("a")
    assert r is not None and r.state == LaunchState.planned and r.launch_attempt == 2
    assert (r.session_id, r.outcome, r.attempts, r.created_at) == (None, None, 0, None)
    (earlier,) = led.attempt_history("a")
    assert (earlier.attempt, earlier.session_id, earlier.outcome) == (1, "devin-1", "failed")
    assert (earlier.termination, earlier.request, earlier.pull_requests) == ("pending", "a", [])
    assert led.events("a")[-1]["kind"] == EventKind.relaunch.value
    assert led.known_session_ids("a") == {"devin-1"}  # history is kept
    led.set_termination("a", 1, "done")
    assert led.attempt_history()[0].termination == "done"
    assert led.events("a")[-1]["kind"] == "cancelled"


def test_remembered_attempts_are_kept_once(open_store: Open) -> None:
    led = open_store()
    old = AttemptRecord(
        key="a",
        attempt=1,
        session_id="devin-0",
        url="u",
        fingerprint=None,
        status="exit",
        status_detail=None,
        outcome=None,
        acus_consumed=0.5,
        pull_requests=[{"pr_url": "p", "pr_state": "open"}],
        structured_output={"x": 1},
        created_at=10.0,
        superseded_at=20.0,
        termination="none",
        request="rebuilt",
    )
    assert led.remember_attempts([old]) == 1
    assert led.remember_attempts([old]) == 0
    assert led.remember_attempts([]) == 0
    assert led.attempt_history() == [old]
    assert led.session_ids_by_key() == {"a": {"devin-0"}}


def test_messages_record_intent_then_outcome(open_store: Open) -> None:
    led = open_store()
    led.message_intent("a", "devin-1", "d1", "hello")
    m = led.messages()[("devin-1", "d1")]
    assert (m.state, m.key, m.text, m.sent_at) == ("pending", "a", "hello", None)
    led.message_outcome("devin-1", "d1", "not_sent", "rate limited")
    assert led.messages()[("devin-1", "d1")].detail == "rate limited"
    led.message_outcome("devin-1", "d1", "sent")
    m = led.messages()[("devin-1", "d1")]
    assert m.state == "sent" and m.sent_at is not None and m.detail is None


def test_wave_decisions_are_logged_in_order(open_store: Open) -> None:
    led = open_store()
    led.record_wave(1, "passed", "ok")
    led.record_wave(2, "stopped")
    assert [(w["wave"], w["decision"], w["detail"]) for w in led.wave_log()] == [
        (1, "passed", "ok"),
        (2, "stopped", None),
    ]


def test_the_lease_fences_a_taken_over_holder(open_store: Open) -> None:
    first, second = open_store(), open_store()
    assert not first.holds_lock() and first.lock_holder() is None
    one = first.acquire_lock(ttl=30.0)
    assert first.heartbeat() and first.holds_lock()
    holder = first.lock_holder()
    assert holder is not None and holder.generation == one.generation
    # Same host and pid here: the second takes over as a later run of this process would.
    two = second.acquire_lock(ttl=30.0)
    assert two.generation > one.generation
    assert not first.holds_lock() and not first.heartbeat()
    first.release_lock()  # the old holder's release must not free the new holder's lock
    assert second.holds_lock()
    removed = second.break_lock()
    assert removed is not None and removed.generation == two.generation
    assert not second.holds_lock() and second.break_lock() is None
    assert second.acquire_lock().generation > two.generation  # generations only grow


def test_a_live_holder_elsewhere_refuses_and_a_dead_one_is_taken_over(
    location: str, open_store: Open
) -> None:
    led = open_store()
    with live_holder(location, "led") as owner:
        with pytest.raises(LockedError) as info:
            led.acquire_lock()
        assert owner in info.value.message and "devin-fleet unlock" in (info.value.hint or "")
    owner = dead_holder(location, "led")
    holder = led.lock_holder()
    assert holder is not None and holder.owner == owner
    assert led.acquire_lock().generation > holder.generation and led.holds_lock()


def test_a_copy_carries_every_row_and_goes_into_an_empty_ledger_only(
    write: Write, open_store: Open, tmp_path: Path
) -> None:
    led = open_store()
    plan = plan_of(write)
    led.sync_plan(plan)
    launched(led, "a", "devin-1")
    led.relaunch("a", live=False, keep=False, request="a")
    led.message_intent("a", "devin-1", "d", "t")
    led.record_wave(1, "passed")
    rows = led.export_rows()
    with open_ledger(Path("."), "led", tmp_path / "copy.db") as copy:
        copy.import_rows(rows)
        assert copy.export_rows() == rows
        assert copy.records() == led.records() and copy.diff(plan) == led.diff(plan)
        with pytest.raises(LedgerError, match="not empty"):
            copy.import_rows(rows)


def test_writes_from_many_threads_all_land(write: Write, open_store: Open) -> None:
    """Async callers run store calls in worker threads: concurrent calls must not interleave."""
    led = open_store()
    led.sync_plan(plan_of(write, "[a, b, c, d]"))

    def writer(key: str) -> None:
        for i in range(20):
            led.write_events([LedgerEvent(key, EventKind.rate_limited, i)])
            led.records()

    threads = [threading.Thread(target=writer, args=(k,)) for k in "abcd"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(led.events()) == 80


def test_a_ledger_is_bound_to_one_target_and_the_first_binder_wins(open_store: Open) -> None:
    led = open_store()
    assert led.target() is None
    assert led.bind_target("https://api.devin.ai", "org-a") == ("https://api.devin.ai", "org-a")
    assert led.bind_target("http://127.0.0.1:1", "org-b") == ("https://api.devin.ai", "org-a")
    led.close()
    assert open_store().target() == ("https://api.devin.ai", "org-a")  # durable


def test_writes_that_matter_check_the_lease_in_their_own_transaction(
    write: Write, open_store: Open
) -> None:
    """After a takeover the old holder's intents, wave decisions and message intents are
    refused (nothing written); that a session exists (created, adopted) is still kept."""
    old, new = open_store(), open_store()
    old.sync_plan(plan_of(write))
    old.acquire_lock()
    old.write_events([LedgerEvent("a", EventKind.intent, 1)])  # while it holds the lease
    new.acquire_lock()  # this process again: a takeover
    with pytest.raises(LockLostError, match="lost the campaign lock"):
        old.write_events(
            [
                LedgerEvent("b", EventKind.intent, 1),
                LedgerEvent("a", EventKind.created, session_id="devin-1"),
            ]
        )
    assert [(e["key"], e["kind"]) for e in new.events()] == [("a", "intent"), ("a", "created")]
    with pytest.raises(LockLostError):
        old.record_wave(1, "passed")
    with pytest.raises(LockLostError):
        old.message_intent("a", "devin-1", "d", "t")
    assert new.wave_log() == [] and new.messages() == {}
    new.record_wave(1, "passed")  # the holder writes as before
    new.message_intent("a", "devin-1", "d", "t")
    assert len(new.wave_log()) == 1 and len(new.messages()) == 1


def test_a_run_waits_for_a_held_lease_then_is_told_who_holds_it(location: str, open_store: Open) -> None:
    """`--lock-timeout`: the lease is tried again until the wait is over (on the run's clock:
    virtual here), then LockedError names the holder; a free lease is taken at once."""
    import anyio

    from launcher.ledger.lease import Lease
    from launcher.ledger.records import LockLease
    from tests.helpers import FakeClock

    led = open_store()
    clock = FakeClock()

    async def acquire() -> LockLease:
        try:
            return await Lease(led, clock=clock).acquire(5.0)
        except LockedError as exc:  # out of the clock's task group as itself, not in a group
            refused.append(exc)
            raise

    refused: list[LockedError] = []
    with live_holder(location, "led") as owner:
        with pytest.raises(BaseExceptionGroup):
            anyio.run(clock.run, acquire)
        assert owner in refused[0].message and "since 20" in refused[0].message
        assert clock.t >= 1000.0 + 5.0  # it waited the whole timeout
    start = clock.t
    lease = anyio.run(clock.run, acquire)
    assert lease.generation >= 1 and clock.t == start  # free: no wait


def test_an_orgs_list_lag_is_kept_per_org_and_replaced_by_the_next_figure(
    location: str, open_store: Open
) -> None:
    led = open_store()
    assert led.org_list_lag("http://api.test", "org-a") is None
    led.remember_list_lag("http://api.test/", "org-a", 0.75, 1_000.0)
    led.remember_list_lag("http://api.test", "org-a", 0.5, 2_000.0)  # the newest figure wins
    assert led.org_list_lag("http://api.test", "org-a") == (0.5, 2_000.0)
    assert led.org_list_lag("http://api.test", "org-b") is None  # another org learns nothing
    other = open_store("other") if location.startswith("postgresql://") else None
    if other is not None:  # one database, many campaigns: the org's figure is shared
        assert other.org_list_lag("http://api.test", "org-a") == (0.5, 2_000.0)
