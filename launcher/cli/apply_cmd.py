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

from launcher.cli.common import (
    api_config,
    api_options,
    confirm,
    emit_json,
    err,
    ledger_option,
    load_plan,
    out,
    sim_options,
)
from launcher.errors import ExitCode
from launcher.ledger.location import open_ledger
from launcher.ledger.store import Change, Ledger, off_loop
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig
    from launcher.run.apply import ApplyOptions
    from launcher.run.relaunch import Selection
    from launcher.run.rollout import RolloutOptions, RolloutSummary
    from launcher.run.summary import ApplySummary


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", default=8, show_default=True, help="Most requests in flight.")
@click.option("--rate", default=5.0, show_default=True, help="Most creates per second.")
@click.option("--only", multiple=True, help="Only keys matching this glob (repeatable).")
@click.option("--limit", type=int, help="Launch at most N sessions in this run.")
@click.option(
    "--relaunch",
    "relaunch",
    multiple=True,
    metavar="SELECTOR",
    help="A new attempt of the keys selected: failed, needs-human, cancelled, changed, or a "
    "key glob (repeatable; see README: Relaunch).",
)
@click.option(
    "--keep-previous",
    is_flag=True,
    help="With --relaunch: leave earlier attempts that are still live running.",
)
@click.option("--replace", multiple=True, hidden=True, help="Old name of --relaunch KEY.")
@click.option("--timeout", type=float, help="Stop starting creates after this many seconds.")
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
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
    type=click.FloatRange(min=0.01),
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
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Least seconds between an ambiguous create and its lookup (the list lag seen in the "
    "run, and the request timeout for unanswered creates, lengthen it).",
)
@click.option(
    "--lock-ttl",
    default=60.0,
    show_default=True,
    envvar="DEVIN_FLEET_LOCK_TTL",
    type=click.FloatRange(min=0.5),
    help="Campaign lease (s): renewed every TTL/6; this run stops sending once its last renewal "
    "is TTL/2 old; another apply may take a lock silent for a whole TTL.",
)
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
    rate: float,
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
    from launcher.run.apply import ApplyOptions
    from launcher.run.rollout import RolloutOptions, assign_waves
    from launcher.spec.manifest import parse_duration

    try:
        wait_seconds = None if wait_timeout is None else parse_duration(wait_timeout)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--wait-timeout") from None
    p = load_plan(manifest, "send")
    check_reviewed_plan(p, plan_file, plan_digest)  # before anything is sent
    options = ApplyOptions(
        concurrency=concurrency,
        rate=rate,
        only=only,
        limit=limit,
        run_timeout=timeout,
        lookup_grace=lookup_grace,
        lock_ttl=lock_ttl,
    )
    # The simulator's sessions finish in seconds: poll it more often than a real org.
    rollout = RolloutOptions(
        wait=wait or wait_timeout is not None,
        wait_timeout=wait_seconds,
        wave=wave,
        skip_gate=skip_gate,
        max_running=max_running,
        interval=interval or (1.0 if sim else 5.0),
        max_interval=max(interval or 0, 5.0 if sim else 60.0),
        ceiling_interval=min(2.0, interval or (0.5 if sim else 2.0)),
    )
    waves = assign_waves(p)
    if wave is not None and wave > len(waves):
        raise click.BadParameter(f"the plan has {len(waves)} wave(s)", param_hint="--wave")
    with contextlib.ExitStack() as stack:
        if sim and not ledger:
            ledger = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sim.db")
        cfg = dataclasses.replace(
            stack.enter_context(api_config(base_url, org_id, sim, sim_profile, sim_time_scale)),
            read_timeout=request_timeout,
        )
        led = stack.enter_context(open_ledger(p.manifest.path, p.campaign, ledger))
        selectors = relaunch + replace  # --replace KEY is folded into --relaunch KEY
        selection = anyio.run(_select, p, cfg, led, selectors) if selectors else None
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
        ceiling = max_running or p.manifest.manifest.budget.max_running
        todo = min(todo, limit if limit is not None else todo)
        what = f"Launch up to {todo} session(s)"
        if selection is not None:
            what = selection.question(todo, keep_previous)
        if what:
            confirm(
                f"{what} of campaign {p.campaign} at {cfg.base_url}"
                + (f", in {len(waves)} waves with a gate between them" if len(waves) > 1 else "")
                + (f", at most {ceiling} running at once" if ceiling else "")
                + "?",
                yes,
            )
        if selection is not None:
            from launcher.run.relaunch import record

            record(led, selection, keep=keep_previous)
        summary = anyio.run(_apply_async, p, cfg, led, options, rollout)
    if output == "json":
        data = summary.to_json()
        if selection is not None:
            data["relaunch"] = selection.to_json(keep_previous)
        emit_json(data)
    else:
        _apply_summary(summary.apply)
        _rollout_summary(summary, p)
    if summary.apply.aborted is not None:
        err.print(summary.apply.aborted.render(), markup=False)
    sys.exit(summary.exit_code)


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


async def _apply_async(
    p: Plan, cfg: ApiConfig, led: Ledger, options: ApplyOptions, rollout: RolloutOptions
) -> RolloutSummary:
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

    from launcher.api.client import DevinClient
    from launcher.ledger.attempts import attempt_history
    from launcher.run.relaunch import attempt_plan, terminate_previous
    from launcher.run.remote import check_remote
    from launcher.run.rollout import run_rollout
    from launcher.views.progress import ProgressReporter

    async with DevinClient(cfg, max_connections=options.concurrency + 4) as client:
        if any(a.termination == "pending" for a in await off_loop(attempt_history, led)):
            # A relaunch ends earlier attempts first: only once the token and the referenced
            # ids are proven, so a relaunch that cannot start never ends its predecessor.
            # Otherwise apply_plan proves them while it lists the campaign (one round trip).
            for warning in await check_remote(p, client):
                err.print(f"warning: {warning}", markup=False)
            options = dataclasses.replace(options, preflight=False)
        # Relaunches: earlier live attempts end before any new attempt starts (also those a
        # crashed run recorded), and relaunched keys are planned at their current attempt.
        ended = await terminate_previous(client, led)
        if ended:
            err.print(f"relaunch: terminated {ended} earlier attempt(s)", markup=False)
        p = await off_loop(attempt_plan, p, led)
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals)
            summary = await run_rollout(
                p,
                client,
                led,
                options,
                rollout,
                stop=stop,
                interrupted=interrupted,
                progress=ProgressReporter,
                follower=ProgressReporter,
            )
            tg.cancel_scope.cancel()
    return summary


async def _select(p: Plan, cfg: ApiConfig, led: Ledger, selectors: tuple[str, ...]) -> Selection:
    """Refresh the campaign (the latest outcome of each key), then resolve the selectors."""
    from launcher.api.client import DevinClient
    from launcher.run.relaunch import select_relaunch
    from launcher.run.status import refresh

    await off_loop(led.sync_plan, p)
    async with DevinClient(cfg) as client:
        view = await refresh(p, client, led)
    return await off_loop(select_relaunch, p, view, led, selectors)


def _apply_summary(s: ApplySummary) -> None:
    from launcher.run.summary import Result

    c = {r: s.count(r) for r in Result}
    out.print(
        f"campaign {s.campaign}: {s.planned} planned, {s.already} already launched; "
        f"created {c[Result.created]}, adopted {c[Result.adopted]}"
        + (f" ({s.reconciled} found by the start reconcile)" if s.reconciled else "")
        + f", refused {c[Result.failed]}, gave up {c[Result.gave_up]}, unknown {c[Result.unknown]}, "
        f"not started {c[Result.not_started]} "
        f"in {s.elapsed:.1f}s ({s.requests} requests, {s.rate_limited} rate-limited)"
    )
    if s.changed:
        out.print(
            f"{len(s.changed)} launched session(s) changed in the manifest since; not "
            f"relaunched (use --relaunch changed): {', '.join(s.changed[:5])}"
        )
    for key, ids in s.duplicates.items():
        out.print(
            f"  DUPLICATE: {key}: {len(ids)} live sessions ({', '.join(ids)}): "
            "`devin-fleet cancel --duplicates` ends the extras, keeping the earliest",
            markup=False,
        )
    for key, why in s.errors.items():
        out.print(f"  {s.results.get(key, '?')}: {key}: {why}", markup=False)
    if s.interrupted:
        out.print("interrupted: run apply again to resume")


def _rollout_summary(s: RolloutSummary, p: Plan) -> None:
    from launcher.cli.report_cmds import _results_table
    from launcher.views.results import build_results, totals_line

    for g in s.gates:
        out.print(g.describe(), markup=False)
    if s.stopped is not None:
        out.print(
            f"rollout stopped before wave {s.stopped.wave + 1} of {s.waves}: see "
            "`devin-fleet results MANIFEST`; re-run apply to check the gate again, or pass "
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
    counts = "  ".join(f"{k}: {v}" for k, v in view.counts().items() if v)
    if view.timed_out:
        out.print(
            f"wait timed out with {view.counts()['running']} session(s) still running "
            f"({counts}): re-run apply, or `devin-fleet status MANIFEST --watch`, to keep following",
            markup=False,
        )
    if s.followed:
        out.print(counts or "no sessions", markup=False)
        res = build_results(view, p.schemas)
        _results_table(res)
        out.print(totals_line(res), markup=False)
