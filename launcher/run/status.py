"""Status: refresh a campaign's sessions from the API (storing states and outcomes in the
ledger), and watch the fleet until every outcome is final. The outcome rules are `outcome`'s."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from typing import Any

import anyio

from launcher.api.client import DevinClient
from launcher.api.models import Session, session_path_id
from launcher.api.pacing import Clock, MonotonicClock, sleep_unless
from launcher.errors import APIError, AuthError
from launcher.ledger.attempts import attempt_history
from launcher.ledger.binding import check_target
from launcher.ledger.store import Ledger, Record, off_loop
from launcher.run.options import FOLLOW_INTERVAL, FOLLOW_MAX_INTERVAL

# `status` is where callers have always found these: re-exported from `outcome`
from launcher.run.outcome import (
    ATTENTION as ATTENTION,
    RULE_NOT_MET as RULE_NOT_MET,
    SUSPEND_FAILURES as SUSPEND_FAILURES,
    CampaignView as CampaignView,
    Outcome as Outcome,
    SessionView as SessionView,
    _build_view as _build_view,
    campaign_view as campaign_view,
    classify as classify,
    history_views as history_views,
    output_check as output_check,
    restrict as restrict,
)
from launcher.run.reconcile import (
    ENDED,
    Reconciliation,
    adoptions,
    duplicate_events,
    keep_the_keepers,
    remember_earlier,
    scan,
)
from launcher.spec.plan import Plan

CONCURRENCY = 8  # GET fallbacks / terminates in flight


def _refreshed(r: Record, s: Session) -> Record:
    return dataclasses.replace(
        r,
        status=s.status,
        status_detail=s.status_detail,
        acus_consumed=s.acus_consumed,
        pull_requests=[p.model_dump() for p in s.pull_requests],
        structured_output=s.structured_output,
    )


async def refresh(
    plan: Plan, client: DevinClient, ledger: Ledger, *, page_size: int = 200
) -> CampaignView:
    """Refresh every launched session: the list endpoint filtered by the campaign tag (200 a
    page), then one GET per session the list missed; store states and outcomes in the ledger;
    return the joined view. Raises AuthError (401/403) and APIError when the list fails."""
    before = client.requests
    cfg = client.config
    await off_loop(check_target, ledger, cfg.base_url, cfg.org_id)  # another org: ids mean nothing
    # One listing of the campaign tag: it refreshes, and it reconciles (the API is the source
    # of truth): planned keys the ledger does not hold as launched are adopted, extra live
    # sessions of one key are logged as duplicates, unmatched ones are strays.
    rec = await scan(plan, client, page_size=page_size)
    records = await off_loop(_heal, plan, ledger, rec, cfg.base_url, cfg.org_id)
    # Match on the path form of ids: some bodies carry bare hex ids (devin-api.md section 1).
    wanted = {
        session_path_id(r.session_id): k for k, r in records.items() if r.state.launched and r.session_id
    }
    found: dict[str, Session] = {}
    untracked: list[str] = []
    earlier = {a.session_id for a in await off_loop(attempt_history, ledger)}  # superseded
    listed = [x for v in rec.by_key.values() for x in v]
    listed += [x for v in rec.other_attempts.values() for x in v] + rec.strays
    for session in listed:
        sid = session_path_id(session.session_id)
        if sid in wanted:
            found[sid] = session
        elif session.session_id not in earlier:
            untracked.append(session.session_id)
    got, gone, failures = await _get_each(client, [sid for sid in wanted if sid not in found])
    found.update(got)
    updated = dict(records)
    for sid, session in found.items():
        updated[wanted[sid]] = _refreshed(records[wanted[sid]], session)
    view = _build_view(plan, updated)
    by_key = {v.key: v for v in view.sessions}
    for sid in gone:
        v = by_key[wanted[sid]]
        if v.outcome != Outcome.cancelled:
            v.outcome = Outcome.failed
        v.note = "the API no longer knows this session (404)"
    for sid, exc in failures.items():
        by_key[wanted[sid]].note = f"not refreshed: {exc.message}"
    refreshed = [updated[wanted[sid]] for sid in found]
    await off_loop(
        ledger.update_status,
        [
            {
                "session_id": r.session_id,
                "status": r.status,
                "status_detail": r.status_detail,
                "outcome": by_key[r.key].outcome.value,
                "acus_consumed": r.acus_consumed,
                "pull_requests": r.pull_requests,
                "structured_output": r.structured_output,
            }
            for r in refreshed
        ],
    )
    view.untracked = untracked
    view.strays = [x for x in rec.strays if x.status not in ENDED]
    view.duplicates = {k: [x.session_id for x in v] for k, v in rec.duplicates().items()}
    view.warnings.extend(rec.warnings())
    others = len(untracked) - len(rec.strays) - sum(len(v) - 1 for v in view.duplicates.values())
    if others > 0:
        view.warnings.append(
            f"{others} session(s) carry the tag {plan.campaign_tag} and a planned key but are "
            "not this ledger's (replaced ones, or another ledger's)"
        )
    if gone:
        view.warnings.append(f"{len(gone)} session(s) in the ledger are unknown to the API (404)")
    if failures:
        first = next(iter(failures.values()))
        view.warnings.append(f"{len(failures)} session(s) could not be refreshed: {first.message}")
    view.requests = client.requests - before
    return view


def _heal(
    plan: Plan, ledger: Ledger, rec: Reconciliation, base_url: str, org_id: str
) -> dict[str, Record]:
    """What the listing teaches the ledger (adoptions, duplicates, earlier attempts a rebuilt
    ledger did not know); returns the records as they are then."""
    records: dict[str, Record] | None = ledger.records()  # read once when nothing changes
    healing = adoptions(plan, ledger, rec, how="reconcile (status)", records=records)
    healing += duplicate_events(rec, ledger)
    if healing:
        check_target(ledger, base_url, org_id, claim=True)
        ledger.sync_plan(plan)  # rows for the adopted keys (a fresh ledger has none)
        ledger.write_events(healing)
        records = None
    if keep_the_keepers(rec, ledger, records):  # the ledger follows the session every machine keeps
        records = None
    remember_earlier(ledger, rec.other_attempts)  # a rebuilt ledger keeps earlier attempts too
    return ledger.records() if records is None else records


async def _get_each(
    client: DevinClient, ids: list[str]
) -> tuple[dict[str, Session], list[str], dict[str, APIError]]:
    """One GET per session id, `CONCURRENCY` at a time: the sessions found, the ids the API no
    longer knows (404), and the ids that failed (why). Raises AuthError (401/403) at once."""
    found: dict[str, Session] = {}
    gone: list[str] = []
    failures: dict[str, APIError] = {}
    if not ids:
        return found, gone, failures
    limiter = anyio.CapacityLimiter(CONCURRENCY)
    async with anyio.create_task_group() as tg:

        async def one(sid: str) -> None:
            async with limiter:
                try:
                    session = await client.get_session(sid)
                except APIError as exc:  # AuthError too: raised below, not in a group
                    failures[sid] = exc
                    if isinstance(exc, AuthError):
                        tg.cancel_scope.cancel()
                    return
            if session is None:
                gone.append(sid)
            else:
                found[sid] = session

        for sid in ids:
            tg.start_soon(one, sid)
    for exc in failures.values():
        if isinstance(exc, AuthError):
            raise exc
    return found, gone, failures


async def watch(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    *,
    keys: Collection[str] | None = None,
    interval: float = FOLLOW_INTERVAL,
    max_interval: float = FOLLOW_MAX_INTERVAL,
    wait_timeout: float | None = None,
    on_refresh: Callable[[CampaignView, float], None] | None = None,
    on_error: Callable[[APIError], None] | None = None,
    max_failures: int = 5,
    clock: Clock | None = None,
    stop: anyio.Event | None = None,
) -> CampaignView:
    """Refresh until every session (of `keys`, when given) has a final outcome,
    `wait_timeout` seconds pass (the view says `timed_out`), or `stop` is set.

    The interval adapts: back to `interval` whenever something changed, otherwise it grows by
    half up to `max_interval` (polling a quiet fleet less often). `on_refresh(view, next_wait)`
    sees every refresh. A failed refresh (5xx, network) is reported to `on_error` and retried;
    `max_failures` in a row, or any AuthError, raises. Every wait goes through `clock`.
    """
    clock = clock or MonotonicClock()
    stop = stop or anyio.Event()
    deadline = None if wait_timeout is None else clock.now() + wait_timeout
    view: CampaignView | None = None
    previous: dict[str, Any] | None = None
    wait = interval
    failures = 0
    timed_out = False
    while True:
        try:
            view = await refresh(plan, client, ledger)
            if keys is not None:
                view = restrict(view, keys)
        except AuthError:
            raise
        except APIError as exc:
            failures += 1
            if failures >= max_failures:
                raise
            if on_error is not None:
                on_error(exc)
        else:
            failures = 0
            snapshot = {s.key: (s.status, s.status_detail, s.outcome) for s in view.sessions}
            wait = interval if snapshot != previous else min(max_interval, wait * 1.5)
            previous = snapshot
            if view.settled:
                if on_refresh is not None:
                    on_refresh(view, 0.0)
                break
            if on_refresh is not None:
                on_refresh(view, wait)
        pause = wait
        if deadline is not None:
            remaining = deadline - clock.now()
            if remaining <= 0:
                timed_out = True
                break
            pause = min(wait, remaining)
        if await sleep_unless(clock, pause, stop):
            break
    if view is None:  # the timeout (or a stop) came before any refresh succeeded
        view = campaign_view(plan, ledger)
        if keys is not None:
            view = restrict(view, keys)
    view.timed_out = timed_out
    return view
