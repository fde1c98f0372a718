"""`status`, `cancel` and `unlock`: following a launched campaign."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections import Counter
from typing import TYPE_CHECKING

import anyio
import click
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from launcher.cli.common import (
    FiniteRange,
    api_config,
    api_options,
    confirm,
    emit_json,
    err,
    follow_ledger,
    ledger_option,
    load_plan,
    out,
    outcome_option,
    refresh_campaign,
    warn,
)
from launcher.errors import APIError, ExitCode
from launcher.ledger.location import open_ledger
from launcher.ledger.store import Ledger
from launcher.run.options import FOLLOW_INTERVAL, FOLLOW_MAX_INTERVAL
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from rich.console import Console

    from launcher.api.client import ApiConfig
    from launcher.run.cancel import CancelReport, CancelTargets
    from launcher.run.status import CampaignView, SessionView


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--watch", is_flag=True, help="Refresh until every session has a final outcome.")
@click.option(
    "--interval",
    default=FOLLOW_INTERVAL,
    show_default=True,
    type=FiniteRange(min=0.05),
    help="First --watch interval (s); it grows while nothing changes.",
)
@click.option(
    "--max-interval",
    default=FOLLOW_MAX_INTERVAL,
    show_default=True,
    type=FiniteRange(min=0.05),
    help="Longest --watch interval (s).",
)
@click.option("--timeout", type=FiniteRange(min=0), help="Give up watching after this many seconds.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@outcome_option
@click.option("--only", multiple=True, metavar="GLOB", help="Only keys matching this glob (repeatable).")
@click.option("--offline", is_flag=True, help="Show what the ledger knows; no API calls.")
@click.option(
    "--all",
    "every",
    is_flag=True,
    help="On a terminal, every session (default: the rows that fit the screen, attention first).",
)
@ledger_option
@api_options
def status(
    manifest: str,
    watch: bool,
    interval: float,
    max_interval: float,
    timeout: float | None,
    output: str,
    outcomes: tuple[str, ...],
    only: tuple[str, ...],
    offline: bool,
    every: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Refresh and classify the campaign's sessions (succeeded, needs-human, failed, running,
    cancelled), what needs attention first: on a terminal the rows that fit the screen (--all:
    every one), piped a line per session. Exit 0: all succeeded/cancelled, 3: some failed,
    6: some need a human, 4: some still running (or not launched), 8: --watch timed out with
    sessions still running (the codes are of the sessions shown)."""
    from launcher.run.budget import budget_use
    from launcher.run.status import campaign_view

    p = load_plan(manifest, "read")
    pick = Filter(outcomes, only)
    with follow_ledger(p, ledger, offline) as (led, _):
        if offline:
            view = campaign_view(p, led)
        else:
            with api_config(base_url, org_id, offers_offline=True) as cfg:
                try:
                    view = anyio.run(_refresh, p, cfg, led, watch, interval, max_interval, timeout, pick)
                except KeyboardInterrupt:
                    err.print("interrupted: the ledger keeps the last refresh")
                    sys.exit(ExitCode.interrupted)
        use = budget_use(p, led)
    warn(view)
    view = pick(view)
    if output == "json":
        emit_json({**view.status_json(), "budget": use.to_json()})
    else:
        spent = use.line() if use.max_sessions or use.max_total_acu or use.relaunched else None
        _status_table(view, pick, every, spent)
    sys.exit(view.exit_code)


@dataclasses.dataclass(frozen=True)
class Filter:
    """`--outcome` / `--only` of `status`: the view of the chosen sessions."""

    outcomes: tuple[str, ...] = ()
    only: tuple[str, ...] = ()

    def __call__(self, view: CampaignView) -> CampaignView:
        from launcher.views.results import select

        if not self.outcomes and not self.only:
            return view
        return dataclasses.replace(view, sessions=select(view, self.outcomes, self.only))

    def describe(self) -> str:
        parts = [f"--outcome {o}" for o in self.outcomes] + [f"--only {g}" for g in self.only]
        return " ".join(parts)


async def _refresh(
    p: Plan,
    cfg: ApiConfig,
    led: Ledger,
    watch: bool = False,
    interval: float = FOLLOW_INTERVAL,
    max_interval: float = FOLLOW_MAX_INTERVAL,
    wait_timeout: float | None = None,
    pick: Filter | None = None,
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
            view = pick(view) if pick is not None else view
            then = f"; next refresh in {wait:.1f}s" if wait else ""
            line = (
                f"[{anyio.current_time() - started:6.1f}s] {_counts(view)} "
                f"({view.requests} requests){then}"
            )
            if live is None:
                err.print(line, markup=False)
            else:  # what fits the screen, what needs attention first
                rows = max(3, err.height - 8)
                table = _status_renderable(view, rows, width=err.width)
                live.update(Group(Text(line), table), refresh=True)

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


def _counts(view: CampaignView) -> str:
    """`failed: 3  needs-human: 2  succeeded: 35`: attention first."""
    from launcher.run.outcome import Outcome

    c = view.counts()
    ranked = sorted(c, key=lambda o: Outcome(o).rank)
    return "  ".join(f"{o}: {c[o]}" for o in ranked if c[o]) or "no sessions"


def _status_table(
    view: CampaignView, pick: Filter, every: bool = False, spent: str | None = None
) -> None:
    """On a terminal, the rows that fit the screen (all of them with a filter or --all), what
    needs attention first, the rest counted below; piped, every session, a line each, the
    header first (what was `spent` against the budget: above the table on a terminal, below
    the rows in a pipe)."""
    if spent and out.is_terminal:
        out.print(spent, markup=False)
    if not view.sessions:
        pass
    elif out.is_terminal:
        # the budget line, title, heading, caption, strays and counts stay on the screen too
        limit = None if every or pick.describe() else max(10, out.height - 10 - len(view.strays))
        out.print(_status_renderable(view, limit))
        if limit is not None and len(view.sessions) > limit:
            out.print("every session: --all (or piped, a line each)", markup=False)
    else:
        click.echo("\n".join(_status_lines(view)))
    if spent and not out.is_terminal:
        out.print(spent, markup=False)
    if not view.sessions and pick.describe():
        out.print(f"no session matches {pick.describe()}", markup=False)
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
    out.print(_counts(view), markup=False)


def _status_cells(s: SessionView) -> dict[str, str]:
    detail = " / ".join(x for x in (s.status_detail, s.rule_note, s.note) if x)
    if not s.in_plan:
        detail = " / ".join(x for x in (detail, "removed from the manifest") if x)
    return {
        "key": s.key,
        "attempt": str(s.attempt),
        "outcome": s.outcome.value,
        "status": s.status or "",
        "detail": detail,
        "PR": " ".join(s.pr_urls),
        "ACUs": "" if s.acus_consumed is None else f"{s.acus_consumed:.2f}",
        "url": s.url or "",
    }


def _status_columns(view: CampaignView, url: bool) -> list[str]:
    relaunched = any(s.attempt > 1 for s in view.sessions)  # the attempt column, when it tells
    cols = ["key", *(["attempt"] if relaunched else []), "outcome", "status", "detail", "PR", "ACUs"]
    return [*cols, "url"] if url else cols


def _status_lines(view: CampaignView) -> list[str]:
    """Not a terminal: aligned lines, one per session (attention first), with its URL."""
    from launcher.views.results import by_attention

    cols = _status_columns(view, url=True)
    rows = [_status_cells(s) for s in by_attention(view.sessions)]
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols}
    return [
        "  ".join(r[c].ljust(widths[c]) for c in cols).rstrip() for r in [{c: c for c in cols}, *rows]
    ]


def _status_renderable(view: CampaignView, limit: int | None = None, width: int | None = None) -> Table:
    """The table on a terminal: a line per session (keys and outcomes whole, the other cells
    cut with "…" to fit the width; keys and pull requests linked), what needs attention first;
    at most `limit` rows, the rest summed up below."""
    from launcher.views.results import by_attention, fit_widths, short_pr

    cols = _status_columns(view, url=False)
    ranked = by_attention(view.sessions)
    shown = ranked if limit is None or len(ranked) <= limit else ranked[: limit - 1]
    rows = []
    for s in shown:
        cells = _status_cells(s)
        cells["PR"] = " ".join(short_pr(u) for u in s.pr_urls)
        rows.append(cells)
    natural = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in cols}
    keep = {"key", "attempt", "outcome"}
    widths = fit_widths(natural, width or out.width, overhead=(3, 1), keep=keep)
    table = Table(title=f"campaign {view.campaign}", box=box.SIMPLE_HEAD)
    for col in cols:  # kept columns: rich cuts them no further (the line wraps instead)
        whole = widths[col] if col in keep else None
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", width=None if whole else widths[col], min_width=whole
        )
    for s, cells in zip(shown, rows, strict=True):
        row = [Text(cells[c]) for c in cols]  # text, never markup: "[x]" in a detail stays
        row[0] = Text(s.key, style=f"link {s.url}" if s.url else "")
        if s.pr_urls:
            row[cols.index("PR")] = Text(cells["PR"], style=f"link {s.pr_urls[0]}")
        table.add_row(*row)
    if len(shown) < len(ranked):
        rest = Counter(s.outcome.value for s in ranked[len(shown) :])
        table.caption = f"... {len(ranked) - len(shown)} more: " + ", ".join(
            f"{o} {n}" for o, n in rest.items()
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
    from launcher.run.cancel import cancel_targets

    say = err if output == "json" else out  # with -o json, stdout holds only the JSON
    p = load_plan(manifest, "send")
    if earlier:
        _cancel_earlier(p, ledger, only, yes, say, base_url, org_id)
        return
    with follow_ledger(p, ledger) as (led, _), api_config(base_url, org_id) as cfg:
        view = anyio.run(refresh_campaign, p, cfg, led)
        warn(view)
        chosen = cancel_targets(view, only, gone=gone, strays=strays, duplicates=duplicates)
        if not chosen.targets:
            _nothing_to_cancel(say, chosen, only, p.campaign, output)
            return
        n = len(chosen.targets)
        say.print(
            f"{n} {chosen.what} session(s){chosen.of} to terminate{' and archive' if archive else ''}:",
            markup=False,
        )
        for line in chosen.listing[:20]:
            say.print(line, markup=False)
        if len(chosen.listing) > 20:
            say.print(f"  ... and {len(chosen.listing) - 20} more", markup=False)
        confirm(f"Terminate {n} session(s) of campaign {p.campaign}? This cannot be undone.", yes)
        report = anyio.run(_cancel, cfg, led, chosen, archive)
    if output == "json":
        emit_json(report.to_json(p.campaign, chosen.selected))
    else:
        for key, what_done in report.results.items():
            why = report.errors.get(key)
            out.print(f"  {key}: {what_done.value}" + (f": {why}" if why else ""), markup=False)
        out.print(
            f"cancelled {report.cancelled} of {n} session(s)"
            + ("; re-run to retry the rest" if report.errors else ""),
            markup=False,
        )
    sys.exit(ExitCode.ok if report.ok else ExitCode.error)


def _nothing_to_cancel(
    say: Console, chosen: CancelTargets, only: tuple[str, ...], campaign: str, output: str
) -> None:
    from launcher.run.cancel import CancelReport

    what = chosen.of or f" ({chosen.what})"
    say.print(f"nothing to cancel{what}" + (f" matching {' '.join(only)}" if only else ""), markup=False)
    if output == "json":
        emit_json(CancelReport().to_json(campaign, []))


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


async def _cancel(cfg: ApiConfig, led: Ledger, chosen: CancelTargets, archive: bool) -> CancelReport:
    from launcher.api.client import DevinClient
    from launcher.run.cancel import cancel_campaign

    async with DevinClient(cfg) as client:
        return await cancel_campaign(client, led, chosen, archive=archive)


@click.command()
@click.argument("manifest", type=click.Path())
@ledger_option
def unlock(manifest: str, ledger: str | None) -> None:
    """Break a stale campaign lock (left by an apply that was killed on another host)."""
    p = load_plan(manifest, "read")
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        held = led.break_lock()
    out.print(f"removed lock held by {held.owner}" if held else "no lock was held")
