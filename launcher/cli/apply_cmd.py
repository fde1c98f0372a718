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
from launcher.ledger import Change, Ledger, open_ledger
from launcher.plan import Plan

if TYPE_CHECKING:
    from launcher.apply import ApplyOptions, ApplySummary
    from launcher.client import ApiConfig


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", default=8, show_default=True, help="Most requests in flight.")
@click.option("--rate", default=5.0, show_default=True, help="Most creates per second.")
@click.option("--only", multiple=True, help="Only keys matching this glob (repeatable).")
@click.option("--limit", type=int, help="Launch at most N sessions in this run.")
@click.option("--replace", multiple=True, help="Relaunch this launched-but-changed key.")
@click.option("--timeout", type=float, help="Stop starting creates after this many seconds.")
@click.option(
    "--request-timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait for one API answer (a create that times out is looked up).",
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
    replace: tuple[str, ...],
    timeout: float | None,
    request_timeout: float,
    lookup_grace: float,
    lock_ttl: float,
    output: str,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
    sim: bool,
    sim_profile: str,
    sim_time_scale: float,
) -> None:
    """Launch every planned session not launched yet: paced, exactly once, resumable."""
    from launcher.apply import ApplyOptions

    p = load_plan(manifest)
    options = ApplyOptions(
        concurrency=concurrency,
        rate=rate,
        only=only,
        limit=limit,
        replace=replace,
        run_timeout=timeout,
        lookup_grace=lookup_grace,
        lock_ttl=lock_ttl,
    )
    with contextlib.ExitStack() as stack:
        if sim and not ledger:
            ledger = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sim.db")
        cfg = dataclasses.replace(
            stack.enter_context(api_config(base_url, org_id, sim, sim_profile, sim_time_scale)),
            read_timeout=request_timeout,
        )
        led = stack.enter_context(open_ledger(p.manifest.path, p.campaign, ledger))
        counts = Counter(c for c, _, _ in led.diff(p))
        todo = counts[Change.create] + counts[Change.reconcile]
        if not yes:
            err.print(
                f"plan: {len(p)} sessions; "
                + ", ".join(f"{c.value} {c.name} {counts[c]}" for c in Change if counts[c])
                + f"; max ACU {p.total_acu}",
                markup=False,
            )
        confirm(
            f"Launch up to {min(todo, limit if limit is not None else todo)} session(s) "
            f"of campaign {p.campaign} at {cfg.base_url}?",
            yes,
        )
        summary = anyio.run(_apply_async, p, cfg, led, options)
    if output == "json":
        emit_json(summary.to_json())
    else:
        _apply_summary(summary)
    if summary.aborted is not None:
        err.print(summary.aborted.render(), markup=False)
    sys.exit(summary.exit_code)


async def _apply_async(p: Plan, cfg: ApiConfig, led: Ledger, options: ApplyOptions) -> ApplySummary:
    stop, interrupted = anyio.Event(), anyio.Event()

    async def on_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if interrupted.is_set():
                    err.print("interrupted again: exiting now; the next run reconciles")
                    os._exit(ExitCode.interrupted)
                interrupted.set()
                stop.set()
                err.print("interrupted: finishing in-flight creates (Ctrl-C again to quit now)")

    from launcher.apply import apply_plan
    from launcher.client import DevinClient
    from launcher.progress import ProgressReporter
    from launcher.remote import check_remote

    async with DevinClient(cfg, max_connections=options.concurrency + 4) as client:
        # Prove the token and the referenced ids before anything is created (so apply_plan
        # need not ask /v3/self again).
        for warning in await check_remote(p, client):
            err.print(f"warning: {warning}", markup=False)
        options = dataclasses.replace(options, verify_token=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals)
            summary = await apply_plan(
                p,
                client,
                led,
                options,
                stop=stop,
                interrupted=interrupted,
                reporter=ProgressReporter("apply"),
            )
            tg.cancel_scope.cancel()
    return summary


def _apply_summary(s: ApplySummary) -> None:
    from launcher.apply import Result

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
            f"relaunched (use --replace KEY): {', '.join(s.changed[:5])}"
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
