"""`status`, `cancel` and `unlock`: following a launched campaign."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import anyio
import click
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.cli.common import (
    api_config,
    api_options,
    confirm,
    emit_json,
    err,
    follow_ledger,
    ledger_option,
    load_plan,
    out,
    refresh_campaign,
    warn,
)
from launcher.errors import APIError, ExitCode
from launcher.ledger.location import open_ledger
from launcher.ledger.store import Ledger
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from rich.console import Console

    from launcher.api.client import ApiConfig
    from launcher.run.cancel import CancelReport
    from launcher.run.status import CampaignView


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--watch", is_flag=True, help="Refresh until every session has a final outcome.")
@click.option(
    "--interval",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="First --watch interval (s); it grows while nothing changes.",
)
@click.option(
    "--max-interval",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.05),
    help="Longest --watch interval (s).",
)
@click.option(
    "--timeout", type=click.FloatRange(min=0), help="Give up watching after this many seconds."
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--offline", is_flag=True, help="Show what the ledger knows; no API calls.")
@ledger_option
@api_options
def status(
    manifest: str,
    watch: bool,
    interval: float,
    max_interval: float,
    timeout: float | None,
    output: str,
    offline: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Refresh and classify the campaign's sessions (succeeded, needs-human, failed, running,
    cancelled). Exit 0: all succeeded/cancelled, 3: some failed, 6: some need a human, 4: some
    still running (or not launched), 8: --watch timed out with sessions still running."""
    from launcher.run.status import campaign_view

    p = load_plan(manifest, "read")
    with follow_ledger(p, ledger, offline) as (led, _):
        if offline:
            view = campaign_view(p, led)
        else:
            with api_config(base_url, org_id) as cfg:
                try:
                    view = anyio.run(_refresh, p, cfg, led, watch, interval, max_interval, timeout)
                except KeyboardInterrupt:
                    err.print("interrupted: the ledger keeps the last refresh")
                    sys.exit(ExitCode.interrupted)
    warn(view)
    if output == "json":
        emit_json(view.status_json())
    else:
        _status_table(view)
    sys.exit(view.exit_code)


async def _refresh(
    p: Plan,
    cfg: ApiConfig,
    led: Ledger,
    watch: bool = False,
    interval: float = 5.0,
    max_interval: float = 60.0,
    wait_timeout: float | None = None,
) -> CampaignView:
    from launcher.api.client import DevinClient
    from launcher.run.status import watch as watch_view

    if not watch:
        return await refresh_campaign(p, cfg, led)
    async with DevinClient(cfg) as client:
        started = anyio.current_time()
        # On a terminal: one live table redrawn in place (cleared at the end, when the final
        # table is printed); otherwise one line per refresh, for logs and CI.
        live = Live(console=err, transient=True, auto_refresh=False) if err.is_terminal else None

        def show(view: CampaignView, wait: float) -> None:
            counts = ", ".join(f"{k} {v}" for k, v in view.counts().items() if v)
            then = f"; next refresh in {wait:.1f}s" if wait else ""
            line = (
                f"[{anyio.current_time() - started:6.1f}s] {counts or 'no sessions'} "
                f"({view.requests} requests){then}"
            )
            if live is None:
                err.print(line, markup=False)
            else:
                live.update(Group(Text(line), _status_renderable(view)), refresh=True)

        def failed(exc: APIError) -> None:
            err.print(f"warning: refresh failed, retrying: {exc.message}", markup=False)

        with live or contextlib.nullcontext():
            view = await watch_view(
                p,
                client,
                led,
                interval=interval,
                max_interval=max_interval,
                wait_timeout=wait_timeout,
                on_refresh=show,
                on_error=failed,
            )
        if view.timed_out:
            err.print(
                f"timeout: {view.counts()['running']} session(s) still running after {wait_timeout:g}s",
                markup=False,
            )
        return view


def _status_table(view: CampaignView) -> None:
    counts = view.counts()
    out.print("  ".join(f"{k}: {v}" for k, v in counts.items() if v) or "no sessions", markup=False)
    out.print(_status_renderable(view))
    for key, ids in view.duplicates.items():
        out.print(
            f"DUPLICATE: {key}: {len(ids)} live sessions: {', '.join(ids)} "
            "(`devin-fleet cancel --duplicates` ends all but the earliest)",
            markup=False,
        )
    if view.strays:
        out.print(f"{len(view.strays)} stray session(s) (campaign tag, no planned key):", markup=False)
        for x in view.strays:
            out.print(f"  stray  {x.session_id}  {x.status}  {x.url}", markup=False)


def _status_renderable(view: CampaignView) -> Table:
    table = Table(title=f"campaign {view.campaign}")
    relaunched = any(s.attempt > 1 for s in view.sessions)  # the attempt column, when it tells
    for col in ("key", *(("attempt",) if relaunched else ()), "outcome", "status", "detail", "PR"):
        table.add_column(col, overflow="fold")
    table.add_column("ACUs", overflow="fold")
    for s in view.sessions:
        detail = " / ".join(x for x in (s.status_detail, s.note) if x)
        if not s.in_plan:
            detail = " / ".join(x for x in (detail, "removed from the manifest") if x)
        table.add_row(
            s.key,
            *((str(s.attempt),) if relaunched else ()),
            s.outcome.value,
            s.status or "",
            detail,
            " ".join(s.pr_urls),
            "" if s.acus_consumed is None else f"{s.acus_consumed:g}",
        )
    return table


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--only", multiple=True, metavar="GLOB", help="Only keys matching this glob (repeatable).")
@click.option(
    "--gone", is_flag=True, help="Only sessions of items removed from the manifest (`-` in plan)."
)
@click.option(
    "--strays", is_flag=True, help="End live sessions with the campaign tag and no planned key."
)
@click.option(
    "--duplicates",
    is_flag=True,
    help="End the extra live sessions of keys launched more than once (keeps the earliest).",
)
@click.option(
    "--earlier",
    is_flag=True,
    help="End earlier attempts left running by `apply --relaunch --keep-previous` (--only too).",
)
@click.option("--archive", is_flag=True, help="Archive the sessions too.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "-o",
    "--output",
    type=click.Choice(["text", "json"]),
    default="text",
    help="json: a report on stdout.",
)
@ledger_option
@api_options
def cancel(
    manifest: str,
    only: tuple[str, ...],
    gone: bool,
    strays: bool,
    duplicates: bool,
    earlier: bool,
    archive: bool,
    yes: bool,
    output: str,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Terminate the campaign's live sessions that have not delivered (all, --only GLOB, or
    --gone: those of items removed from the manifest); or, with --strays / --duplicates, the
    sessions no planned key owns. Records it in the ledger. Safe to re-run: cancelled sessions
    are skipped."""
    from launcher.run.cancel import CancelResult, cancellable, extras

    say = err if output == "json" else out  # with -o json, stdout holds only the JSON
    p = load_plan(manifest, "send")
    if earlier:
        _cancel_earlier(p, ledger, only, yes, say, base_url, org_id)
        return
    with follow_ledger(p, ledger) as (led, _), api_config(base_url, org_id) as cfg:
        view = anyio.run(refresh_campaign, p, cfg, led)
        warn(view)
        by_key = {s.key: s for s in view.sessions}
        if strays or duplicates:
            targets = extras(view, strays=strays, duplicates=duplicates)
            listing = [f"  {label}  {sid}" for label, sid in targets]
            what, of = "stray or duplicate", ""
        else:
            keys = cancellable(view, only, gone=gone)
            targets = [(k, by_key[k].session_id or "") for k in keys]
            listing = [f"  {k}  {by_key[k].session_id}  {by_key[k].outcome.value}" for k in keys]
            what, of = "live", " of items removed from the manifest" if gone else ""
        if not targets:
            say.print(
                f"nothing to cancel{of or f' ({what})'}"
                + (f" matching {' '.join(only)}" if only else ""),
                markup=False,
            )
            if output == "json":
                emit_json(
                    {"campaign": p.campaign, "selected": [], "results": {}, "errors": {}, "ok": True}
                )
            return
        say.print(
            f"{len(targets)} {what} session(s){of} to terminate{' and archive' if archive else ''}:",
            markup=False,
        )
        for line in listing[:20]:
            say.print(line, markup=False)
        if len(listing) > 20:
            say.print(f"  ... and {len(listing) - 20} more", markup=False)
        confirm(
            f"Terminate {len(targets)} session(s) of campaign {p.campaign}? This cannot be undone.",
            yes,
        )
        report = anyio.run(_cancel, cfg, led, targets, archive, strays or duplicates)
    done = sum(1 for r in report.results.values() if r != CancelResult.error)
    if output == "json":
        emit_json(
            {
                "campaign": p.campaign,
                "selected": [k for k, _ in targets],
                "results": {k: v.value for k, v in report.results.items()},
                "errors": dict(report.errors),
                "cancelled": done,
                "ok": report.ok,
            }
        )
    else:
        for key, what_done in report.results.items():
            why = report.errors.get(key)
            out.print(f"  {key}: {what_done.value}" + (f": {why}" if why else ""), markup=False)
        out.print(
            f"cancelled {done} of {len(targets)} session(s)"
            + ("; re-run to retry the rest" if report.errors else ""),
            markup=False,
        )
    sys.exit(ExitCode.ok if report.ok else ExitCode.error)


def _cancel_earlier(
    p: Plan,
    ledger: str | None,
    only: tuple[str, ...],
    yes: bool,
    say: Console,
    base_url: str | None,
    org_id: str | None,
) -> None:
    from launcher.api.client import DevinClient
    from launcher.run.relaunch import kept, terminate_previous

    with follow_ledger(p, ledger) as (led, _), api_config(base_url, org_id) as cfg:
        targets = kept(led, only)
        if not targets:
            say.print("nothing to cancel (no earlier attempt was kept running)", markup=False)
            return
        say.print(f"{len(targets)} earlier attempt(s) kept running to terminate:", markup=False)
        for a in targets[:20]:
            say.print(f"  {a.key}  attempt {a.attempt}  {a.session_id}", markup=False)
        confirm(f"Terminate {len(targets)} earlier attempt(s) of campaign {p.campaign}?", yes)

        async def go() -> int:
            async with DevinClient(cfg) as client:
                return await terminate_previous(client, led, targets)

        done = anyio.run(go)
    say.print(f"terminated {done} earlier attempt(s)", markup=False)


async def _cancel(
    cfg: ApiConfig, led: Ledger, targets: list[tuple[str, str]], archive: bool, by_id: bool
) -> CancelReport:
    from launcher.api.client import DevinClient
    from launcher.run.cancel import cancel_ids, cancel_sessions

    async with DevinClient(cfg) as client:
        if by_id:
            return await cancel_ids(client, led, targets, archive=archive)
        return await cancel_sessions(client, led, [k for k, _ in targets], archive=archive)


@click.command()
@click.argument("manifest", type=click.Path())
@ledger_option
def unlock(manifest: str, ledger: str | None) -> None:
    """Break a stale campaign lock (left by an apply that was killed on another host)."""
    p = load_plan(manifest, "read")
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        held = led.break_lock()
    out.print(f"removed lock held by {held.owner}" if held else "no lock was held")
