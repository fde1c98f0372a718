"""The start of an apply run, before any create: the preflight (the token, the referenced ids)
and the reconcile (every planned key the API already has a session for is adopted, the API
being the source of truth), run at once; then which sessions the run launches."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from launcher.api.client import DevinClient
from launcher.api.listlag import LagProbe
from launcher.api.pacing import sleep_unless
from launcher.errors import AuthError, FleetError
from launcher.ledger.lease import Lease
from launcher.ledger.store import Ledger, off_loop
from launcher.run.options import ApplyOptions
from launcher.run.reconcile import adoptions, duplicate_events, keep_the_keepers, scan
from launcher.run.remote import check_remote
from launcher.run.summary import ApplySummary, Result
from launcher.spec.plan import Plan, PlannedSession


@dataclass(frozen=True)
class StartView:
    """What the start of an apply run works with."""

    plan: Plan
    client: DevinClient
    ledger: Ledger
    options: ApplyOptions
    summary: ApplySummary
    note: Callable[[str], None]


async def before_creates(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    options: ApplyOptions,
    summary: ApplySummary,
    note: Callable[[str], None],
) -> AuthError | None:
    """The preflight and the reconcile listing at once: both only read, both end before the
    first create, and the run waits one round trip, not two. Raises what fails the preflight
    (a bad token or a missing id: the reconcile's 401 says less) or the listing; returns the
    listing's AuthError when only it failed (the run halts: nothing is sent blind)."""
    failed: dict[str, FleetError] = {}

    async def guarded(name: str, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except FleetError as exc:
            failed[name] = exc

    async def preflight() -> None:
        for warning in await check_remote(plan, client):
            # "... not verified" never blocks; what the check could not look at ("note: ")
            # is `plan --check-remote`'s to say, not every apply's
            if not warning.startswith("note: "):
                note(warning)

    async with anyio.create_task_group() as tg:
        if options.preflight:
            tg.start_soon(guarded, "preflight", preflight)
        if options.reconcile:
            tg.start_soon(guarded, "reconcile", lambda: reconcile(plan, client, ledger, summary, note))
    if "preflight" in failed:
        raise failed["preflight"]
    if "reconcile" in failed:
        if not isinstance(failed["reconcile"], AuthError):
            raise failed["reconcile"]
        return failed["reconcile"]
    return None


async def reconcile(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    summary: ApplySummary,
    note: Callable[[str], None],
    *,
    again: bool = False,
) -> None:
    """Before any create: adopt every planned key the API already has a session for (`again`:
    the second look of a young listing, whose warnings were said by the first)."""
    rec = await scan(plan, client)
    adopted = await off_loop(adoptions, plan, ledger, rec, how="reconcile")
    dups = await off_loop(duplicate_events, rec, ledger)
    if adopted or dups:
        await off_loop(ledger.write_events, adopted + dups)
    await off_loop(keep_the_keepers, rec, ledger)
    for e in adopted:
        summary.results[e.key] = Result.adopted
    summary.reconciled += len(adopted)
    summary.strays = len(rec.strays)
    summary.duplicates.update({k: [x.session_id for x in v] for k, v in rec.duplicates().items()})
    for w in [] if again and not dups else rec.warnings():
        note(w)
    if adopted:
        note(
            f"reconcile: {len(adopted)} planned session(s) already exist in the API "
            "(a lost or other ledger): adopted, not relaunched"
        )


async def recall_lag(ledger: Ledger, client: DevinClient, lag: LagProbe) -> None:
    """Give the probe the org's list lag an earlier run measured (the ledger keeps it)."""
    cfg = client.config
    lag.remember(await off_loop(ledger.org_list_lag, cfg.base_url, cfg.org_id), time.time())


async def keep_lag(ledger: Ledger, client: DevinClient, lag: LagProbe) -> None:
    """Keep what this run measured of the org's list lag for the runs after it."""
    if lag.samples:
        cfg = client.config
        await off_loop(ledger.remember_list_lag, cfg.base_url, cfg.org_id, lag.lag, time.time())


def select(
    plan: Plan, ledger: Ledger, options: ApplyOptions, summary: ApplySummary
) -> list[tuple[PlannedSession, bool]]:
    """The sessions this run should launch, each with whether it must be looked up first."""
    records = ledger.records()
    work: list[tuple[PlannedSession, bool]] = []
    for s in plan.sessions:
        if options.only and not any(fnmatch.fnmatchcase(s.key, g) for g in options.only):
            continue
        if options.keys is not None and s.key not in options.keys:
            continue
        r = records[s.key]
        if r.state.launched:
            if r.fingerprint != s.fingerprint:
                summary.changed.append(s.key)
            else:
                summary.already += 1
            continue
        work.append((s, r.state.uncertain))
    if options.limit is not None:
        work = work[: options.limit]
    return work


async def confirm_absent(
    run: StartView,
    lag: LagProbe,
    lease: Lease,
    work: list[tuple[PlannedSession, bool]],
    listed_at: float,
) -> list[tuple[PlannedSession, bool]]:
    """The start listing (begun at `listed_at`) cannot show sessions created in the list lag
    before it (a lost ledger, a run right after another, a crashed run's last creates): the
    keys it did not show are created only once a listing begun a lag bound after it agrees.
    Returns the work left (what the second listing showed is adopted). The lease is renewed
    while it waits; a lost lease halts the run (its listener sets the stop)."""
    options, clock, stop = run.options, lag.clock, lag.stop
    await recall_lag(run.ledger, run.client, lag)  # here, its lookups' waits too
    if not options.reconcile or all(u for _, u in work):
        return work
    bound = lag.bound(options.list_lag)
    if bound <= 0:
        return work
    wait = listed_at + bound - clock.now()
    if wait > 0:
        run.note(
            f"{sum(not u for _, u in work)} key(s) not listed yet: listing again in "
            f"{wait:.1f}s, once what was created before this run surely shows (list lag "
            f"bound {bound:.2g}s, {lag.basis(options.list_lag)}; --list-lag states it)"
        )
    while (left := listed_at + bound - clock.now()) > 0:
        if await sleep_unless(clock, min(left, options.lock_ttl / 6), stop):
            return work  # stopped: nothing is sent
        if not await lease.renew() and lease.lost.is_set():
            return work  # the loss halted the run: nothing is sent (a missed beat is not one)
    await reconcile(run.plan, run.client, run.ledger, run.summary, run.note, again=True)
    run.summary.already, run.summary.changed = 0, []
    return await off_loop(select, run.plan, run.ledger, options, run.summary)
