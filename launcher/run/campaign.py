"""Launching a campaign, the use case behind `apply`, for the CLI and library users alike: a
relaunch in its order (select, record the new attempts, terminate the earlier ones, launch),
then the rollout (waves, gates, ceiling, following)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import anyio

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock
from launcher.ledger.attempts import attempt_history
from launcher.ledger.store import Ledger, off_loop
from launcher.run.options import ApplyOptions, RolloutOptions
from launcher.run.relaunch import Selection, attempt_plan, record, select_relaunch, terminate_previous
from launcher.run.remote import check_remote
from launcher.run.rollout import Follower, RolloutSummary, run_rollout
from launcher.run.status import refresh
from launcher.run.summary import Reporter
from launcher.spec.plan import Plan


async def relaunch_selection(
    plan: Plan, client: DevinClient, ledger: Ledger, selectors: tuple[str, ...]
) -> Selection:
    """What `selectors` (failed, needs-human, cancelled, changed, key globs) pick for a new
    attempt: the campaign is refreshed first, so each key is judged by its latest outcome.
    Nothing is recorded: pass the selection to `launch_campaign` (after asking, if you ask)."""
    await off_loop(ledger.sync_plan, plan)
    view = await refresh(plan, client, ledger)
    return await off_loop(select_relaunch, plan, view, ledger, selectors)


async def launch_campaign(
    plan: Plan,
    client: DevinClient,
    ledger: Ledger,
    options: ApplyOptions | None = None,
    rollout: RolloutOptions | None = None,
    *,
    relaunch: Selection | None = None,
    keep_previous: bool = False,
    note: Callable[[str], None] | None = None,
    progress: Callable[[str], Reporter] | None = None,
    follower: Callable[[str], Follower] | None = None,
    clock: Clock | None = None,
    environ: Mapping[str, str] | None = None,
    stop: anyio.Event | None = None,
    interrupted: anyio.Event | None = None,
) -> RolloutSummary:
    """Launch the campaign as `devin-fleet apply` does; return what happened.

    With `relaunch` (from `relaunch_selection`), its new attempts are recorded first (one
    durable write per key, before anything is sent), then the earlier attempts still live are
    terminated (unless `keep_previous`; also those a crashed run recorded), and only then do
    the new attempts launch. `note` hears what is said along the way (warnings, terminations);
    the rest is `run_rollout`'s.
    """
    options = options or ApplyOptions()
    say = note or (lambda _message: None)
    if relaunch is not None:
        await off_loop(record, ledger, relaunch, keep=keep_previous)
    if any(a.termination == "pending" for a in await off_loop(attempt_history, ledger)):
        # A relaunch ends earlier attempts first: only once the token and the referenced ids
        # are proven, so a relaunch that cannot start never ends its predecessor. Otherwise
        # apply_plan proves them while it lists the campaign (one round trip).
        for warning in await check_remote(plan, client):
            say(f"warning: {warning}")
        options = dataclasses.replace(options, preflight=False)
    # Earlier live attempts end before any new attempt starts, and relaunched keys are planned
    # at their current attempt.
    ended = await terminate_previous(client, ledger)
    if ended:
        say(f"relaunch: terminated {ended} earlier attempt(s)")
    return await run_rollout(
        await off_loop(attempt_plan, plan, ledger, environ),
        client,
        ledger,
        options,
        rollout,
        progress=progress,
        follower=follower,
        clock=clock,
        environ=environ,
        stop=stop,
        interrupted=interrupted,
    )
