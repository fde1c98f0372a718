"""The start of an apply run, before any create: the preflight (the token, the referenced ids)
and the reconcile (every planned key the API already has a session for is adopted, the API
being the source of truth), run at once; then which sessions the run launches."""

from __future__ import annotations

import fnmatch
from collections.abc import Awaitable, Callable

import anyio

from launcher.api.client import DevinClient
from launcher.errors import AuthError, FleetError
from launcher.ledger.store import Ledger, off_loop
from launcher.run.options import ApplyOptions
from launcher.run.reconcile import adoptions, duplicate_events, scan
from launcher.run.remote import check_remote
from launcher.run.summary import ApplySummary, Result
from launcher.spec.plan import Plan, PlannedSession


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
            note(warning)  # "... not verified": it never blocks

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
) -> None:
    """Before any create: adopt every planned key the API already has a session for."""
    rec = await scan(plan, client)
    adopted = await off_loop(adoptions, plan, ledger, rec, how="reconcile")
    dups = await off_loop(duplicate_events, rec, ledger)
    if adopted or dups:
        await off_loop(ledger.write_events, adopted + dups)
    for e in adopted:
        summary.results[e.key] = Result.adopted
    summary.reconciled = len(adopted)
    summary.strays = len(rec.strays)
    summary.duplicates.update({k: [x.session_id for x in v] for k, v in rec.duplicates().items()})
    for w in rec.warnings():
        note(w)
    if adopted:
        note(
            f"reconcile: {len(adopted)} planned session(s) already exist in the API "
            "(a lost or other ledger): adopted, not relaunched"
        )


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
