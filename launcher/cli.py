"""The `devin-fleet` command line: a thin layer over the library; the only place that prints
or exits. Exit codes are fixed (see EXIT_CODES and the README)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from launcher.errors import APIError, ConfirmationError, FleetError
from launcher.ledger import Change, Ledger, open_ledger
from launcher.manifest import load_manifest, manifest_json_schema
from launcher.plan import Plan, build_plan

if TYPE_CHECKING:
    from launcher import client as api
    from launcher import execute, follow
    from launcher.client import ApiConfig
else:  # imported on first use: `validate` and `plan` start without httpx and the executor
    import importlib

    class _Lazy:
        def __init__(self, name: str) -> None:
            self._name = name

        def __getattr__(self, attr: str) -> Any:
            return getattr(importlib.import_module(self._name), attr)

    api, execute, follow = (_Lazy(f"launcher.{m}") for m in ("client", "execute", "follow"))

EXIT_CODES = {
    0: "success (apply: every selected session launched; status: all succeeded)",
    1: "error: invalid manifest, configuration, ledger, or remote check",
    2: "plan --detailed-exitcode: changes pending",
    3: "some sessions failed (apply: refused by the API; status: failed outcomes)",
    4: "apply: some sessions not launched yet (outcome unknown, or stopped by --timeout): "
       "re-run to resume; status: some still running or not launched",
    5: "aborted: bad credentials (401/403) or the circuit breaker opened",
    6: "status: some sessions need a human",
    64: "usage error (bad command-line options)",
    130: "interrupted (Ctrl-C); re-run to resume",
}

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])


class _Group(click.Group):
    """Renders FleetErrors as located messages (tracebacks only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            err.print(exc.render(), markup=False)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            exc.exit_code = 64  # type: ignore[misc]  # EX_USAGE: 2 means "changes" for plan
            raise


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="devin-fleet")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Declarative batch launcher for Devin sessions: validate, plan, apply, status, results."""
    ctx.obj = {"debug": debug}


def main() -> None:
    cli(prog_name="devin-fleet")


# ------------------------------------------------------------------------------ shared options

def _ledger_option(f: F) -> F:
    return click.option("--ledger", type=click.Path(dir_okay=False), envvar="DEVIN_FLEET_LEDGER",
                        help="Ledger file (default: .devin-fleet/<campaign>.db by the manifest).")(f)


def _api_options(f: F) -> F:
    f = click.option("--base-url", help="API base URL (env DEVIN_API_BASE_URL).")(f)
    return click.option("--org", "org_id", help="Organization id (env DEVIN_ORG_ID).")(f)


def _sim_options(f: F) -> F:
    f = click.option("--sim", is_flag=True,
                     help="Rehearse against the embedded simulator (in-process, loopback).")(f)
    f = click.option("--sim-profile", default="clean", show_default=True,
                     help="Simulator profile name or file, with --sim.")(f)
    return click.option("--sim-time-scale", default=60.0, show_default=True,
                        help="Simulated seconds per real second, with --sim.")(f)


def _load(path: str) -> Plan:
    plan = build_plan(load_manifest(path))
    for w in plan.warnings:
        err.print(f"warning: {w}", markup=False)
    return plan


@contextlib.contextmanager
def _api(base_url: str | None, org_id: str | None, sim: bool = False, profile: str = "clean",
         time_scale: float = 60.0) -> Iterator[ApiConfig]:
    if not sim:
        yield api.ApiConfig.from_env(os.environ, base_url=base_url, org_id=org_id)
        return
    from launcher.sim import running_simulator

    with running_simulator(profile, time_scale=time_scale) as server:
        err.print(f"simulator: {server.base_url} (org {server.org_id}, profile "
                  f"{server.profile.name})", markup=False)
        yield api.ApiConfig(server.base_url, server.org_id, server.token)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationError("no terminal to confirm on", hint="pass --yes to proceed")
    if not click.confirm(question, default=False, err=True):
        raise click.Abort()


def _emit_json(data: Any) -> None:
    # One line, C encoder: `plan -o json` of 10,000 sessions is ~30 MB; indenting costs 4x.
    click.echo(json.dumps(data, ensure_ascii=False))


# ------------------------------------------------------------------------------ commands

@cli.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path())
def validate(manifests: tuple[str, ...]) -> None:
    """Check manifests fully (templates, data files, API rules, budget), offline."""
    failed: list[FleetError] = []
    for path in manifests:
        try:
            plan = _load(path)
            out.print(f"{path}: ok ({len(plan)} sessions)")
        except FleetError as exc:
            failed.append(exc)
            err.print(exc.render(), markup=False)
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("manifest", type=click.Path())
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--show-prompts", is_flag=True, help="Print each rendered prompt.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: nothing to do, 2: changes, 1: error.")
@click.option("--check-remote", is_flag=True, help="Check the token and referenced ids in the org.")
@_ledger_option
@_api_options
def plan(manifest: str, output: str, show_prompts: bool, detailed_exitcode: bool,
         check_remote: bool, ledger: str | None, base_url: str | None, org_id: str | None) -> None:
    """Expand a manifest and show exactly what apply would send, diffed against the ledger."""
    p = _load(manifest)
    if check_remote:
        with _api(base_url, org_id) as cfg:
            warnings = anyio.run(_check_remote, p, cfg)
        for w in warnings:
            err.print(f"warning: {w}", markup=False)
        err.print(f"remote check passed at {cfg.base_url} (org {cfg.org_id})"
                  + (f" with {len(warnings)} warning(s)" if warnings else ""), markup=False)
    changes = _diff(p, ledger)
    if output == "json":
        notes = [(c.value, note) for c, _, note in changes[:len(p)]]
        for chunk in p.json_chunks(notes, [k for _, k, _ in changes[len(p):]]):
            click.echo(chunk.decode(), nl=False)  # text, a chunk at a time: never 200 MB twice
        click.echo()
    else:
        _plan_table(p, changes, show_prompts)
    pending = any(c != Change.same for c, _, _ in changes)
    sys.exit(2 if detailed_exitcode and pending else 0)


async def _check_remote(p: Plan, cfg: ApiConfig) -> list[str]:
    async with api.DevinClient(cfg) as client:
        return await follow.check_remote(p, client)


def _diff(p: Plan, ledger_path: str | None) -> list[tuple[Change, str, str]]:
    from launcher.ledger import default_ledger_path

    path = Path(ledger_path) if ledger_path else default_ledger_path(p.manifest.path, p.campaign)
    if not path.exists():
        return [(Change.create, s.key, "") for s in p.sessions]
    with Ledger(path, p.campaign, create=False) as led:
        return led.diff(p)


def _plan_table(p: Plan, changes: list[tuple[Change, str, str]], show_prompts: bool) -> None:
    table = Table(title=f"campaign {p.campaign}", show_lines=False)
    for col in ("", "key", "title", "repos", "mode", "ACU", "note"):
        table.add_column(col, overflow="fold")
    by_key = p.by_key()
    for change, key, note in changes:
        s = by_key.get(key)
        req = s.request if s else {}
        table.add_row(change.value, key, req.get("title", ""), ", ".join(req.get("repos", [])),
                      req.get("devin_mode", "default") if s else "",
                      str(req.get("max_acu_limit", "-")) if s else "", note)
    out.print(table)
    if show_prompts:
        for s in p.sessions:
            out.rule(s.key)
            out.print(s.request["prompt"], markup=False)
    t = p.totals()
    counts = {c: sum(1 for x, _, _ in changes if x == c) for c in Change}
    budget = f" / budget {t['max_total_acu']}" if t["max_total_acu"] else ""
    cap = f" / budget {t['max_sessions']}" if t["max_sessions"] else ""
    out.print(f"{t['sessions']} sessions{cap}; max ACU {t['acu']}{budget}; "
              + ", ".join(f"{c.value} {c.name}: {n}" for c, n in counts.items() if n))


@cli.command()
def schema() -> None:
    """Print the manifest JSON Schema (draft-07) for editors."""
    _emit_json(manifest_json_schema())


@cli.command()
@click.argument("manifest", type=click.Path())
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--concurrency", default=8, show_default=True, help="Most requests in flight.")
@click.option("--rate", default=5.0, show_default=True, help="Most creates per second.")
@click.option("--only", multiple=True, help="Only keys matching this glob (repeatable).")
@click.option("--limit", type=int, help="Launch at most N sessions in this run.")
@click.option("--replace", multiple=True, help="Relaunch this launched-but-changed key.")
@click.option("--timeout", type=float, help="Stop starting creates after this many seconds.")
@click.option("--request-timeout", default=30.0, show_default=True,
              help="Seconds to wait for one API answer (a create that times out is looked up).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_ledger_option
@_api_options
@_sim_options
def apply(manifest: str, yes: bool, concurrency: int, rate: float, only: tuple[str, ...],
          limit: int | None, replace: tuple[str, ...], timeout: float | None,
          request_timeout: float, output: str,
          ledger: str | None, base_url: str | None, org_id: str | None, sim: bool,
          sim_profile: str, sim_time_scale: float) -> None:
    """Launch every planned session not launched yet: paced, exactly once, resumable."""
    p = _load(manifest)
    options = execute.ApplyOptions(concurrency=concurrency, rate=rate, only=only, limit=limit,
                                   replace=replace, run_timeout=timeout)
    with contextlib.ExitStack() as stack:
        if sim and not ledger:
            ledger = str(Path(stack.enter_context(tempfile.TemporaryDirectory())) / "sim.db")
        cfg = dataclasses.replace(
            stack.enter_context(_api(base_url, org_id, sim, sim_profile, sim_time_scale)),
            read_timeout=request_timeout)
        led = stack.enter_context(open_ledger(p.manifest.path, p.campaign, ledger))
        counts = Counter(c for c, _, _ in led.diff(p))
        todo = counts[Change.create] + counts[Change.reconcile]
        if not yes:
            err.print(f"plan: {len(p)} sessions; " + ", ".join(
                f"{c.value} {c.name} {counts[c]}" for c in Change if counts[c])
                + f"; max ACU {p.total_acu}", markup=False)
        _confirm(f"Launch up to {min(todo, limit if limit is not None else todo)} session(s) "
                 f"of campaign {p.campaign} at {cfg.base_url}?", yes)
        summary = anyio.run(_apply_async, p, cfg, led, options)
    if output == "json":
        _emit_json(summary.to_json())
    else:
        _apply_summary(summary)
    if summary.aborted is not None:
        err.print(summary.aborted.render(), markup=False)
    sys.exit(summary.exit_code)


async def _apply_async(p: Plan, cfg: ApiConfig, led: Ledger,
                       options: execute.ApplyOptions) -> execute.ApplySummary:
    from launcher.progress import ProgressReporter

    stop, interrupted = anyio.Event(), anyio.Event()

    async def on_signals(scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if interrupted.is_set():
                    err.print("interrupted again: exiting now; the next run reconciles")
                    os._exit(130)
                interrupted.set()
                stop.set()
                err.print("interrupted: finishing in-flight creates (Ctrl-C again to quit now)")

    async with api.DevinClient(cfg, max_connections=options.concurrency + 4) as client:
        # Prove the token and the referenced ids before anything is created (so apply_plan
        # need not ask /v3/self again).
        for warning in await follow.check_remote(p, client):
            err.print(f"warning: {warning}", markup=False)
        options = dataclasses.replace(options, verify_token=False)
        async with anyio.create_task_group() as tg:
            tg.start_soon(on_signals, tg.cancel_scope)
            summary = await execute.apply_plan(p, client, led, options, stop=stop,
                                               interrupted=interrupted,
                                               reporter=ProgressReporter("apply"))
            tg.cancel_scope.cancel()
    return summary


def _apply_summary(s: execute.ApplySummary) -> None:
    c = {r: s.count(r) for r in execute.Result}
    out.print(f"campaign {s.campaign}: {s.planned} planned, {s.already} already launched; "
              f"created {c[execute.Result.created]}, adopted {c[execute.Result.adopted]}, "
              f"failed {c[execute.Result.failed]}, unknown {c[execute.Result.unknown]}, "
              f"not started {c[execute.Result.not_started]} "
              f"in {s.elapsed:.1f}s ({s.requests} requests, {s.rate_limited} rate-limited)")
    if s.changed:
        out.print(f"{len(s.changed)} launched session(s) changed in the manifest since; not "
                  f"relaunched (use --replace KEY): {', '.join(s.changed[:5])}")
    for key, why in s.errors.items():
        out.print(f"  {s.results.get(key, '?')}: {key}: {why}", markup=False)
    if s.interrupted:
        out.print("interrupted: run apply again to resume")


@cli.command()
@click.argument("manifest", type=click.Path())
@click.option("--watch", is_flag=True, help="Refresh until every session has a final outcome.")
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.05),
              help="First --watch interval (s); it grows while nothing changes.")
@click.option("--max-interval", default=60.0, show_default=True,
              type=click.FloatRange(min=0.05), help="Longest --watch interval (s).")
@click.option("--timeout", type=click.FloatRange(min=0),
              help="Give up watching after this many seconds.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--offline", is_flag=True, help="Show what the ledger knows; no API calls.")
@_ledger_option
@_api_options
def status(manifest: str, watch: bool, interval: float, max_interval: float,
           timeout: float | None, output: str, offline: bool, ledger: str | None,
           base_url: str | None, org_id: str | None) -> None:
    """Refresh and classify the campaign's sessions (succeeded, needs-human, failed, running,
    cancelled). Exit 0: all succeeded/cancelled, 3: some failed, 6: some need a human, 4: some
    still running (or not launched)."""
    p = _load(manifest)
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        if offline:
            view = follow.campaign_view(p, led)
        else:
            with _api(base_url, org_id) as cfg:
                try:
                    view = anyio.run(_refresh, p, cfg, led, watch, interval, max_interval,
                                     timeout)
                except KeyboardInterrupt:
                    err.print("interrupted: the ledger keeps the last refresh")
                    sys.exit(130)
    _warn(view)
    if output == "json":
        _emit_json(view.status_json())
    else:
        _status_table(view)
    sys.exit(view.exit_code)


async def _refresh(p: Plan, cfg: ApiConfig, led: Ledger, watch: bool = False,
                   interval: float = 5.0, max_interval: float = 60.0,
                   timeout: float | None = None) -> follow.CampaignView:
    async with api.DevinClient(cfg) as client:
        if not watch:
            return await follow.refresh(p, client, led)
        started = anyio.current_time()

        def show(view: follow.CampaignView, wait: float) -> None:
            counts = ", ".join(f"{k} {v}" for k, v in view.counts().items() if v)
            then = f"; next refresh in {wait:.1f}s" if wait else ""
            err.print(f"[{anyio.current_time() - started:6.1f}s] {counts or 'no sessions'} "
                      f"({view.requests} requests){then}", markup=False)

        def failed(exc: APIError) -> None:
            err.print(f"warning: refresh failed, retrying: {exc.message}", markup=False)

        view = await follow.watch(p, client, led, interval=interval, max_interval=max_interval,
                                  timeout=timeout, on_refresh=show, on_error=failed)
        if view.timed_out:
            err.print(f"timeout: {view.counts()['running']} session(s) still running after "
                      f"{timeout:g}s", markup=False)
        return view


def _warn(view: follow.CampaignView) -> None:
    for w in view.warnings:
        err.print(f"warning: {w}", markup=False)


def _status_table(view: follow.CampaignView) -> None:
    counts = view.counts()
    out.print("  ".join(f"{k}: {v}" for k, v in counts.items() if v) or "no sessions",
              markup=False)
    table = Table(title=f"campaign {view.campaign}")
    for col in ("key", "outcome", "status", "detail", "PR", "ACUs"):
        table.add_column(col, overflow="fold")
    for s in view.sessions:
        detail = " / ".join(x for x in (s.status_detail, s.note) if x)
        if not s.in_plan:
            detail = " / ".join(x for x in (detail, "removed from the manifest") if x)
        table.add_row(s.key, s.outcome.value, s.status or "", detail, " ".join(s.pr_urls),
                      "" if s.acus_consumed is None else f"{s.acus_consumed:g}")
    out.print(table)


@cli.command()
@click.argument("manifest", type=click.Path())
@click.option("-o", "--output", type=click.Choice(["table", "jsonl", "csv"]), default="table")
@click.option("--group-by", metavar="FIELD",
              help="Count sessions per value of a structured-output field (dotted path).")
@click.option("--refresh/--no-refresh", default=False,
              help="Refresh from the API first (default: what the last `status` stored).")
@_ledger_option
@_api_options
def results(manifest: str, output: str, group_by: str | None, refresh: bool,
            ledger: str | None, base_url: str | None, org_id: str | None) -> None:
    """One record per session joined with its item, with its structured output validated
    against the fleet's schema (invalid or missing output is flagged), and campaign totals."""
    p = _load(manifest)
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        if refresh:
            with _api(base_url, org_id) as cfg:
                view = anyio.run(_refresh, p, cfg, led)
        else:
            view = follow.campaign_view(p, led)
            if any(s.session_id and s.status is None for s in view.sessions):
                err.print("note: some sessions were never refreshed: run `devin-fleet status` "
                          "first, or pass --refresh", markup=False)
    _warn(view)
    if group_by:
        _group_by(view, group_by, output)
    elif output == "jsonl":
        for s in view.sessions:
            click.echo(json.dumps(s.result_json(), ensure_ascii=False))
    elif output == "csv":
        rows = follow.results_rows(view)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(sys.stdout, fieldnames=fields, lineterminator="\n", restval="")
        w.writeheader()
        w.writerows(rows)
    else:
        _results_table(view)
    (out if output == "table" else err).print(_totals_line(view), markup=False)


def _group_by(view: follow.CampaignView, field: str, output: str) -> None:
    groups = view.group_by(field)
    if output == "jsonl":
        for value, n in groups.items():
            click.echo(json.dumps({field: value, "sessions": n}, ensure_ascii=False))
    elif output == "csv":
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow([field, "sessions"])
        w.writerows(groups.items())
    else:
        table = Table(title=f"{view.campaign}: sessions by output.{field}")
        table.add_column(field)
        table.add_column("sessions", justify="right")
        for value, n in groups.items():
            table.add_row(value, str(n))
        out.print(table)


def _results_table(view: follow.CampaignView) -> None:
    table = Table(title=f"campaign {view.campaign}: results")
    for col in ("key", "outcome", "PR", "ACUs", "output", "valid"):
        table.add_column(col, overflow="fold")
    for s in view.sessions:
        valid = {None: "-", True: "yes", False: "NO"}[s.output_valid]
        if s.output_errors:
            valid += f" ({s.output_errors[0]})"
        table.add_row(s.key, s.outcome.value, " ".join(s.pr_urls),
                      "" if s.acus_consumed is None else f"{s.acus_consumed:g}",
                      json.dumps(s.structured_output)[:80] if s.structured_output else "", valid)
    out.print(table)


def _totals_line(view: follow.CampaignView) -> str:
    t = view.totals()
    budget = f" of a {t['max_total_acu']} ACU budget" if t["max_total_acu"] else ""
    return (f"{t['sessions']} sessions, {t['succeeded']} succeeded, {t['pull_requests']} PRs "
            f"opened, {t['acus_consumed']:g} ACUs consumed{budget}, {t['invalid_outputs']} "
            "invalid or missing outputs")


@cli.command()
@click.argument("manifest", type=click.Path())
@click.option("--only", multiple=True, metavar="GLOB",
              help="Only keys matching this glob (repeatable).")
@click.option("--archive", is_flag=True, help="Archive the sessions too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_ledger_option
@_api_options
def cancel(manifest: str, only: tuple[str, ...], archive: bool, yes: bool, ledger: str | None,
           base_url: str | None, org_id: str | None) -> None:
    """Terminate the campaign's live sessions that have not delivered (all, or --only GLOB);
    record it in the ledger. Safe to re-run: cancelled sessions are skipped."""
    p = _load(manifest)
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led, \
            _api(base_url, org_id) as cfg:
        view = anyio.run(_refresh, p, cfg, led)
        _warn(view)
        keys = follow.cancellable(view, only)
        if not keys:
            out.print("nothing to cancel" + (f" matching {' '.join(only)}" if only else ""),
                      markup=False)
            return
        by_key = {s.key: s for s in view.sessions}
        out.print(f"{len(keys)} live session(s) to terminate"
                  f"{' and archive' if archive else ''}:", markup=False)
        for key in keys[:20]:
            s = by_key[key]
            out.print(f"  {key}  {s.session_id}  {s.outcome.value}", markup=False)
        if len(keys) > 20:
            out.print(f"  ... and {len(keys) - 20} more", markup=False)
        _confirm(f"Terminate {len(keys)} session(s) of campaign {p.campaign}? This cannot be "
                 "undone.", yes)
        report = anyio.run(_cancel, p, cfg, led, keys, archive)
    for key, what in report.results.items():
        why = report.errors.get(key)
        out.print(f"  {key}: {what.value}" + (f": {why}" if why else ""), markup=False)
    done = sum(1 for r in report.results.values() if r != follow.CancelResult.error)
    out.print(f"cancelled {done} of {len(keys)} session(s)"
              + ("; re-run to retry the rest" if report.errors else ""), markup=False)
    sys.exit(0 if report.ok else 1)


async def _cancel(p: Plan, cfg: ApiConfig, led: Ledger, keys: list[str],
                  archive: bool) -> follow.CancelReport:
    async with api.DevinClient(cfg) as client:
        return await follow.cancel(p, client, led, keys, archive=archive)


@cli.command()
@click.argument("manifest", type=click.Path())
@_ledger_option
def unlock(manifest: str, ledger: str | None) -> None:
    """Break a stale campaign lock (left by an apply that was killed on another host)."""
    p = _load(manifest)
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        held = led.break_lock()
    out.print(f"removed lock held by {held['owner']}" if held else "no lock was held")


@cli.command()
@click.option("--port", default=8765, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--token", help="Token to accept (generated when not given).")
@click.option("--org", "org_id", help="Organization id (generated when not given).")
@click.option("--profile", default="clean", show_default=True, help="Profile name or file.")
@click.option("--seed", default=0, show_default=True)
@click.option("--time-scale", default=1.0, show_default=True,
              help="Simulated seconds per real second.")
@click.option("--introspection", is_flag=True, help="Serve /_sim/... test endpoints.")
def sim(port: int, host: str, token: str | None, org_id: str | None, profile: str, seed: int,
        time_scale: float, introspection: bool) -> None:
    """Serve the local Devin API simulator until interrupted."""
    from launcher.sim import serve

    def ready(server: Any) -> None:
        click.echo(f"export DEVIN_API_BASE_URL={server.base_url}")
        click.echo(f"export DEVIN_ORG_ID={server.org_id}")
        click.echo(f"export DEVIN_API_KEY={server.token}")
        err.print(f"simulator ({server.profile.name}) serving; Ctrl-C to stop")

    with contextlib.suppress(KeyboardInterrupt):
        serve(profile, host=host, port=port, token=token, org_id=org_id, seed=seed,
              time_scale=time_scale, introspection=introspection, on_ready=ready)

