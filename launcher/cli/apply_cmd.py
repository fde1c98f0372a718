"""`apply`: confirm, then launch through the library with a progress bar and Ctrl-C handling."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click

from launcher.api.models import REQUEST_TIMEOUT
from launcher.cli.common import (
    FiniteRange,
    api_config,
    api_options,
    confirm,
    emit_json,
    err,
    ledger_option,
    load_plan,
    lock_timeout_option,
    lock_wait,
    out,
    sim_options,
)
from launcher.errors import ExitCode
from launcher.ledger.location import open_ledger
from launcher.ledger.store import Change, Ledger
from launcher.run.options import SIM_RATE, ApplyOptions, RolloutOptions
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig
    from launcher.run.relaunch import Selection
    from launcher.run.rollout import RolloutSummary
    from launcher.run.summary import ApplySummary


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--concurrency",
    default=ApplyOptions.concurrency,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most requests in flight.",
)
@click.option(
    "--rate",
    type=FiniteRange(min=0, min_open=True),
    help=f"Most creates per second (default {ApplyOptions.rate:g}; {SIM_RATE:g} with --sim); apply "
    "learns a lower limit from 429s.",
)
@click.option("--only", multiple=True, help="Only keys matching this glob (repeatable).")
@click.option("--limit", type=click.IntRange(min=0), help="Launch at most N sessions in this run.")
@click.option(
    "--relaunch",
    "relaunch",
    multiple=True,
    metavar="SELECTOR",
    help="A new attempt of the keys selected: failed, needs-human, cancelled, changed, or a "
    "key glob (repeatable; see docs/campaigns.md: Relaunch).",
)
@click.option(
    "--keep-previous",
    is_flag=True,
    help="With --relaunch: leave earlier attempts that are still live running.",
)
@click.option("--replace", multiple=True, hidden=True, help="Old name of --relaunch KEY.")
@click.option(
    "--timeout",
    type=FiniteRange(min=0, min_open=True),
    help="Stop starting creates after this many seconds.",
)
@click.option(
    "--request-timeout",
    default=REQUEST_TIMEOUT,
    show_default=True,
    type=FiniteRange(min=0, min_open=True),
    help="Seconds to wait for one API answer (a create that times out is looked up).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the launched sessions until every one is final, then show the results.",
)
@click.option(
    "--wait-timeout",
    metavar="DURATION",
    help="Stop following after this long (seconds, or 90s, 30m, 2h): exit 8.",
)
@click.option(
    "--interval",
    type=FiniteRange(min=0.01),
    help="First interval (s) between refreshes while following (default 5; 1 with --sim); "
    "it grows while nothing changes.",
)
@click.option("--wave", type=click.IntRange(min=1), help="Go straight to rollout wave N.")
@click.option("--skip-gate", is_flag=True, help="Open the gate of the wave this run resumes at.")
@click.option(
    "--max-running",
    type=click.IntRange(min=1),
    help="Hold launches while this many sessions are not final (default: budget.max_running).",
)
@click.option(
    "--lookup-grace",
    default=ApplyOptions.lookup_grace,
    show_default=True,
    type=FiniteRange(min=0),
    help="Least seconds between an ambiguous create and its lookup (the list lag seen in the "
    "run, and the request timeout for unanswered creates, lengthen it).",
)
@click.option(
    "--lock-ttl",
    default=ApplyOptions.lock_ttl,
    show_default=True,
    envvar="DEVIN_FLEET_LOCK_TTL",
    type=FiniteRange(min=0.5),
    help="Campaign lease (s): renewed every TTL/6; this run stops sending once its last renewal "
    "is TTL/2 old; another apply may take a lock silent for a whole TTL.",
)
@click.option(
    "--list-lag",
    type=FiniteRange(min=0),
    envvar="DEVIN_FLEET_LIST_LAG",
    help="The most seconds a new session takes to show in list results, if known (default: "
    "measured in the run; before that, twice what an earlier run measured on the org, else 10; "
    "the simulator's with --sim). Keys the start listing did not show are created only once "
    "a listing this much later agrees.",
)
@lock_timeout_option
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(dir_okay=False),
    help="The reviewed `plan -o json` file: refuse, sending nothing, unless the re-plan matches it.",
)
@click.option(
    "--plan-digest",
    metavar="DIGEST",
    help="The reviewed plan's digest (`sha256:...`, as `plan -o json` and the PR comment show it).",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@ledger_option
@api_options
@sim_options
def apply(
    manifest: str,
    yes: bool,
    concurrency: int,
    rate: float | None,
    only: tuple[str, ...],
    limit: int | None,
    relaunch: tuple[str, ...],
    keep_previous: bool,
    replace: tuple[str, ...],
    timeout: float | None,
    request_timeout: float,
    wait: bool,
    wait_timeout: str | None,
    interval: float | None,
    wave: int | None,
    skip_gate: bool,
    max_running: int | None,
    lookup_grace: float,
    lock_ttl: float,
    list_lag: float | None,
    lock_timeout: str | None,
    plan_file: str | None,
    plan_digest: str | None,
    output: str,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
    sim: bool,
    sim_profile: str,
    sim_time_scale: float,
) -> None:
    """Launch every planned session not launched yet: paced, exactly once, resumable; wave by
    wave when the manifest has a rollout; with --wait, follow them to the end."""
    p = load_plan(manifest, "send")
    check_reviewed_plan(p, plan_file, plan_digest)  # before anything is sent
    options = ApplyOptions(
        concurrency=concurrency,
        rate=rate or (SIM_RATE if sim else ApplyOptions.rate),
        only=only,
        limit=limit,
        run_timeout=timeout,
        lookup_grace=lookup_grace,
        lock_ttl=lock_ttl,
        list_lag=_list_lag(list_lag, sim, sim_profile),
        lock_timeout=lock_wait(lock_timeout),
    )
    rollout = _rollout_options(p, sim, wait, wait_timeout, interval, wave, skip_gate, max_running)
    selectors = relaunch + replace  # --replace KEY is folded into --relaunch KEY
    with contextlib.ExitStack() as stack:
        if sim and not ledger:
            ledger = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sim.db")
        api = api_config(base_url, org_id, sim, sim_profile, sim_time_scale, offers_sim=True)
        cfg = dataclasses.replace(stack.enter_context(api), read_timeout=request_timeout)
        led = stack.enter_context(open_ledger(p.manifest.path, p.campaign, ledger))
        selection = anyio.run(_select, p, cfg, led, selectors) if selectors else None
        _confirm_launch(p, cfg, led, selection, keep_previous, yes, options, rollout)
        summary = anyio.run(_launch, p, cfg, led, options, rollout, selection, keep_previous)
    _show(summary, p, output, selection, keep_previous, manifest, sim)
    sys.exit(summary.exit_code)


def _list_lag(stated: float | None, sim: bool, sim_profile: str) -> float | None:
    """The list lag bound apply plans with: stated, or the embedded simulator's (known exactly)."""
    if sim and stated is None:
        from launcher.sim import load_profile

        return load_profile(sim_profile).faults.list_lag_seconds
    return stated


def _question(
    what: str, p: Plan, base_url: str, rate: float, concurrency: int, ceiling: int | None, waves: int
) -> str:
    """The confirmation: what, where, how fast, and how long apply keeps running."""
    text = f"{what} of campaign {p.campaign} at {base_url}, at most {rate:g} creates/s"
    text += f" and {concurrency} at a time"
    if ceiling:
        text += f", at most {ceiling} running at once"
    if waves > 1:
        rollout = p.manifest.manifest.rollout
        gate = rollout.gate.wait_timeout if rollout is not None else None
        limit = f"up to {_duration(gate)} a wave" if gate else "with no time limit"
        text += (
            f", in {waves} waves: apply stays running to follow each wave to its gate "
            f"({limit}) before it launches the next"
        )
    return text + "?"


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def check_reviewed_plan(p: Plan, plan_file: str | None, plan_digest: str | None) -> None:
    """`--plan` / `--plan-digest`: the re-plan must be the reviewed plan (PlanChangedError)."""
    from launcher.spec.digest import check_reviewed, read_reviewed, reviewed_digest

    for reviewed in (
        *([read_reviewed(plan_file)] if plan_file else []),
        *([reviewed_digest(plan_digest)] if plan_digest else []),
    ):
        check_reviewed(p.campaign, p.fingerprints(), reviewed)
    if plan_file or plan_digest:
        err.print(f"plan matches the reviewed plan ({p.digest})", markup=False)


def _rollout_options(
    p: Plan,
    sim: bool,
    wait: bool,
    wait_timeout: str | None,
    interval: float | None,
    wave: int | None,
    skip_gate: bool,
    max_running: int | None,
) -> RolloutOptions:
    """The rollout flags as options (a wave past the plan's is a usage error)."""
    from launcher.run.rollout import assign_waves
    from launcher.spec.model import parse_duration

    try:
        wait_seconds = None if wait_timeout is None else parse_duration(wait_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--wait-timeout") from None
    waves = len(assign_waves(p))
    if wave is not None and wave > waves:
        raise click.BadParameter(f"the plan has {waves} wave(s)", param_hint="--wave")
    # The simulator's sessions finish in seconds: poll it more often than a real org.
    return RolloutOptions(
        wait=wait or wait_timeout is not None,
        wait_timeout=wait_seconds,
        wave=wave,
        skip_gate=skip_gate,
        max_running=max_running,
        interval=interval or (1.0 if sim else RolloutOptions.interval),
        max_interval=max(interval or 0, 5.0 if sim else RolloutOptions.max_interval),
        ceiling_interval=min(
            RolloutOptions.ceiling_interval,
            interval or (0.5 if sim else RolloutOptions.ceiling_interval),
        ),
    )


def _confirm_launch(
    p: Plan,
    cfg: ApiConfig,
    led: Ledger,
    selection: Selection | None,
    keep_previous: bool,
    yes: bool,
    options: ApplyOptions,
    rollout: RolloutOptions,
) -> None:
    """Say what is about to happen (the plan's changes, the relaunch), and ask."""
    from launcher.run.rollout import assign_waves

    counts = Counter(c for c, _, _ in led.diff(p))
    todo = counts[Change.create] + counts[Change.reconcile]
    if selection is not None:
        for line in selection.describe(keep_previous):
            err.print(line, markup=False)
    if not yes:
        err.print(
            f"plan: {len(p)} sessions; "
            + ", ".join(f"{c.value} {c.name} {counts[c]}" for c in Change if counts[c])
            + f"; max ACU {p.total_acu}",
            markup=False,
        )
    waves = len(assign_waves(p))
    ceiling = rollout.max_running or p.manifest.manifest.budget.max_running
    todo = min(todo, options.limit if options.limit is not None else todo)
    what = f"Launch up to {todo} session(s)"
    if selection is not None:
        what = selection.question(todo, keep_previous)
    if what:
        question = _question(what, p, cfg.base_url, options.rate, options.concurrency, ceiling, waves)
        confirm(question, yes)


async def _launch(
    p: Plan,
    cfg: ApiConfig,
    led: Ledger,
    options: ApplyOptions,
    rollout: RolloutOptions,
    selection: Selection | None,
    keep_previous: bool,
) -> RolloutSummary:
    """`launch_campaign` with a progress bar; Ctrl-C stops starting creates, twice exits."""
    from launcher.api.client import DevinClient
    from launcher.run.campaign import launch_campaign
    from launcher.views.progress import ProgressReporter

    stop, interrupted = anyio.Event(), anyio.Event()

    async def on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if interrupted.is_set():
                    err.print("interrupted again: exiting now; the next run reconciles")
                    os._exit(ExitCode.interrupted)
                interrupted.set()
                stop.set()
                err.print("interrupted: finishing in-flight creates, if any (Ctrl-C again to quit now)")

    async with (
        DevinClient(cfg, max_connections=options.concurrency + 4) as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(on_signals)
        summary = await launch_campaign(
            p,
            client,
            led,
            options,
            rollout,
            relaunch=selection,
            keep_previous=keep_previous,
            note=lambda message: err.print(message, markup=False),
            stop=stop,
            interrupted=interrupted,
            progress=ProgressReporter,
            # sessions turn final in batches, one refresh at a time: a rate would mislead
            follower=lambda label: ProgressReporter(label, rate=False),
        )
        tg.cancel_scope.cancel()
    return summary


async def _select(p: Plan, cfg: ApiConfig, led: Ledger, selectors: tuple[str, ...]) -> Selection:
    from launcher.api.client import DevinClient
    from launcher.run.campaign import relaunch_selection

    async with DevinClient(cfg) as client:
        return await relaunch_selection(p, client, led, selectors)


def _show(
    summary: RolloutSummary,
    p: Plan,
    output: str,
    selection: Selection | None,
    keep_previous: bool,
    manifest: str,
    sim: bool,
) -> None:
    if output == "json":
        data = summary.to_json()
        if selection is not None:
            data["relaunch"] = selection.to_json(keep_previous)
        emit_json(data)
    else:
        _apply_summary(summary.apply, sim)
        _rollout_summary(summary, p, manifest, sim)
    if summary.apply.aborted is not None:
        err.print(summary.apply.aborted.render(), markup=False)


def _apply_summary(s: ApplySummary, sim: bool = False) -> None:
    from launcher.run.summary import Result

    c = {r: s.count(r) for r in Result}
    out.print(
        f"campaign {s.campaign}: {s.planned} planned, {s.already} already launched; "
        f"created {c[Result.created]}, adopted {c[Result.adopted]}"
        + (f" ({s.reconciled} found by the start reconcile)" if s.reconciled else "")
        + f", refused {c[Result.failed]}, gave up {c[Result.gave_up]}, unknown {c[Result.unknown]}, "
        f"not started {c[Result.not_started]} "
        f"in {s.elapsed:.1f}s ({s.requests} requests, {s.rate_limited} rate-limited)",
        markup=False,
    )
    if s.changed:
        out.print(
            f"{len(s.changed)} launched session(s) changed in the manifest since; not "
            f"relaunched (use --relaunch changed): {', '.join(s.changed[:5])}"
            + (
                f" and {len(s.changed) - 5} more (`plan --diff` shows them)"
                if len(s.changed) > 5
                else ""
            ),
            markup=False,  # keys are the user's text: "[x]" is not a style
        )
    for key, ids in s.duplicates.items():
        out.print(
            f"  DUPLICATE: {key}: {len(ids)} live sessions ({', '.join(ids)}): "
            "`devin-fleet cancel --duplicates` ends the extras, keeping the earliest",
            markup=False,
        )
    for key, why in s.errors.items():
        out.print(f"  {s.results.get(key, '?')}: {key}: {why}", markup=False)
    if s.interrupted and sim:
        out.print("interrupted: the in-process simulator ended with this run (nothing to resume)")
    elif s.interrupted:
        out.print("interrupted: run apply again to resume")


def _rollout_summary(s: RolloutSummary, p: Plan, manifest: str, sim: bool) -> None:
    from launcher.cli.report_cmds import attention_summary

    # Each gate's verdict was said as it was decided (progress, on stderr): only the stop here.
    if s.stopped is not None:
        out.print(
            f"rollout stopped before wave {s.stopped.wave + 1} of {s.waves}: {s.stopped.describe()}. "
            f"See `devin-fleet results {manifest}`; re-run apply to check the gate again, or pass "
            "--skip-gate to go on",
            markup=False,
        )
    elif s.incomplete is not None:
        out.print(f"{s.incomplete}: re-run apply to resume", markup=False)
    elif s.next_wave is not None and s.waves > 1 and not s.interrupted:
        out.print(f"rollout paused at wave {s.next_wave} of {s.waves}: re-run apply to resume")
    view = s.view
    if view is None:
        return
    if view.timed_out:
        out.print(
            f"wait timed out with {view.counts()['running']} session(s) still running: re-run "
            f"apply, or `devin-fleet status {manifest} --watch`, to keep following",
            markup=False,
        )
    if s.followed:
        attention_summary(p, view, manifest, sim=sim)
