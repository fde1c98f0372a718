"""`results`, `report` and `message`: the fleet as a report, and acting on it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click
from rich import box
from rich.table import Table
from rich.text import Text

from launcher.cli.common import (
    FiniteRange,
    api_config,
    api_options,
    confirm,
    err,
    follow_ledger,
    ledger_option,
    load_plan,
    lock_timeout_option,
    lock_wait,
    out,
    outcome_option,
    refresh_campaign,
    warn,
)
from launcher.errors import ExitCode
from launcher.ledger.location import default_ledger_path, open_ledger
from launcher.run.options import MESSAGE_RATE
from launcher.views.formats import FORMATS

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig
    from launcher.ledger.store import Ledger
    from launcher.run.messages import MessageBatch, MessageReport
    from launcher.run.status import CampaignView, SessionView
    from launcher.spec.plan import Plan
    from launcher.views.results import Results

OUTCOME_STYLE = {
    "succeeded": "green",
    "needs-human": "yellow",
    "failed": "red",
    "running": "cyan",
    "cancelled": "dim",
    "not-launched": "dim",
}


def _view(
    p: Plan,
    ledger: str | None,
    offline: bool,
    base_url: str | None,
    org_id: str | None,
) -> CampaignView:
    """The campaign now: refreshed from the API, or (offline) as the ledger last saw it."""
    from launcher.run.status import campaign_view

    with follow_ledger(p, ledger, offline) as (led, _):
        if offline:
            view = campaign_view(p, led)
            if any(s.session_id and s.status is None for s in view.sessions):
                err.print(
                    "note: some sessions were never refreshed: drop --offline to ask the API",
                    markup=False,
                )
            return view
        with api_config(base_url, org_id, offers_offline=True) as cfg:
            return anyio.run(refresh_campaign, p, cfg, led)


@click.command()
@click.argument("manifest", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Choice(list(FORMATS)),
    default="table",
    show_default=True,
)
@outcome_option
@click.option("--only", multiple=True, metavar="GLOB", help="Only keys matching this glob (repeatable).")
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    metavar="FIELD",
    help="Count sessions per value of a column (outcome, status, reason, item.COL, "
    "output.FIELD); twice for a two-way count (rows by the first, columns by the second).",
)
@click.option("--offline", is_flag=True, help="What the ledger knows; no API calls.")
@click.option(
    "--history",
    is_flag=True,
    help="Every attempt of each key (earlier ones, superseded by a relaunch, before the latest).",
)
@click.option(
    "--columns",
    "columns",
    multiple=True,
    metavar="COLS",
    help="The columns of the table, csv or markdown, comma-separated (key, outcome, reason, pr, "
    "acus, url, attempt, status, item.COL, output fields by name; `all`). Default: key, "
    "outcome, reason, PR, ACUs and the output fields that fit.",
)
@click.option("--refresh/--no-refresh", default=True, hidden=True)  # before 0.2: opt-in refresh
@ledger_option
@api_options
def results(
    manifest: str,
    output: str,
    outcomes: tuple[str, ...],
    only: tuple[str, ...],
    group_by: tuple[str, ...],
    offline: bool,
    history: bool,
    columns: tuple[str, ...],
    refresh: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """The campaign as a report: a row per session (what needs attention first in the table and
    markdown) with its outcome, reason, pull request, ACUs and structured-output fields,
    refreshed from the API. On a terminal a table that fits; otherwise a line per session."""
    from launcher.views.results import FieldError, build_results, by_attention, choose_columns, select

    if len(group_by) > 2:
        raise click.UsageError("--group-by takes one field, or two for a two-way count")
    p = load_plan(manifest, "read")
    view = _view(p, ledger, offline or not refresh, base_url, org_id)
    warn(view)
    chosen = select(view, outcomes, only)
    if output in ("table", "markdown") and not group_by:
        chosen = by_attention(chosen)
    if history:
        chosen = _with_history(p, ledger, chosen, outcomes)
    res = build_results(view, p.schemas, chosen)
    try:
        cols = choose_columns(res, columns) if columns else None
    except FieldError as exc:
        raise click.BadParameter(
            f"no column {exc.name!r}; columns: {', '.join(exc.available)}", param_hint="--columns"
        ) from None
    try:
        if group_by:
            _groups(res, list(group_by), output)
        else:
            _emit(res, output, cols, manifest)
    except FieldError as exc:
        raise click.BadParameter(
            f"no column {exc.name!r}; columns: {', '.join(exc.available)}", param_hint="--group-by"
        ) from None


def _with_history(
    p: Plan, ledger: str | None, chosen: list[SessionView], outcomes: tuple[str, ...]
) -> list[SessionView]:
    from launcher.run.status import history_views
    from launcher.views.results import with_history

    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        return with_history(chosen, history_views(p, led), outcomes)


def _emit(res: Results, output: str, cols: list[str] | None, manifest: str) -> None:
    from launcher.views.results import totals_line

    write = FORMATS[output].results
    if write is None:
        results_table(res, cols)
        footer(res, manifest)
        return
    click.echo(write(res, cols), nl=False)
    err.print(totals_line(res), markup=False)


def results_table(res: Results, cols: list[str] | None = None, drop: tuple[str, ...] = ()) -> None:
    """On a terminal a table that fits its width (cells on one line; keys and outcomes whole,
    the rest cut with "…", then the `drop` columns left out; keys and pull requests linked);
    otherwise aligned lines, one per session, never wrapped, every column."""
    from launcher.views.results import (
        KEPT,
        column_widths,
        default_columns,
        display,
        fit_widths,
        heading,
        plain_lines,
    )

    if not out.is_terminal:
        cols = cols or default_columns(res, None)
        click.echo("\n".join(plain_lines(res, cols)))
        return
    cols = cols or default_columns(res, out.width)
    widths = fit_widths(column_widths(res, cols, terminal=True), out.width, drop=drop)
    cols = [c for c in cols if c in widths]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for col in cols:
        whole = widths[col] if col in KEPT else None  # rich cuts no further: the line wraps
        table.add_column(
            Text(heading(res, col)),
            no_wrap=True,
            overflow="ellipsis",
            width=None if whole else widths[col],
            min_width=whole,
        )
    for row, s in zip(res.rows, res.sessions, strict=True):
        cells: list[Text | str] = []
        for c in cols:
            text = display(c, row[c], terminal=True)
            if c == "outcome":
                cells.append(Text(text, style=OUTCOME_STYLE.get(text, "")))
            elif c == "key" and s.url:
                cells.append(Text(text, style=f"link {s.url}"))
            elif c == "pr_url" and s.pr_urls:
                cells.append(Text(text, style=f"link {s.pr_urls[0]}"))
            else:
                cells.append(Text(text))  # text, never markup: an output "[x]" stays
        table.add_row(*cells)
    out.print(table)


def footer(res: Results, manifest: str, *, rest: bool = False) -> None:
    """After a table: the outcome counts (attention first), the totals, what to run next."""
    from launcher.views.results import counts_line, totals_line

    out.print(counts_line(res), markup=False)
    out.print(totals_line(res), markup=False)
    if rest:
        out.print(f"every session: devin-fleet results {manifest}", markup=False)


def attention_summary(
    p: Plan, view: CampaignView, manifest: str, limit: int = 10, *, sim: bool = False
) -> None:
    """The end of `apply --wait`: the outcome counts, the few sessions that need attention, and
    the commands that show the rest (the whole table is `results`' job)."""
    from launcher.views.results import build_results, by_attention, needing_attention

    res = build_results(view, p.schemas, by_attention(view.sessions))
    todo = needing_attention(res)
    if todo:
        shown = build_results(view, p.schemas, todo[:limit])
        out.print(f"{len(todo)} session(s) need attention:", markup=False)
        results_table(shown, ["key", "outcome", "reason", "url"], drop=("url",))
        if len(todo) > limit:
            out.print(f"... and {len(todo) - limit} more", markup=False)
        if not sim:
            out.print(
                f"all of them: devin-fleet results {manifest} --outcome failed --outcome needs-human",
                markup=False,
            )
    footer(res, manifest, rest=not sim)
    if sim:
        out.print(
            "--sim: these sessions end with this run; to keep them for `results` and `status`, "
            "serve the simulator on its own (`devin-fleet sim`) and apply to it",
            markup=False,
        )


def _groups(res: Results, fields: list[str], output: str) -> None:
    from launcher.views.formats import grouping
    from launcher.views.results import aligned_lines

    g = grouping(res, fields)
    write = FORMATS[output].groups
    if write is not None:
        click.echo(write(g), nl=False)
        return
    rows = [[str(x) for x in r] for r in g.rows]
    if not out.is_terminal:  # a line per value, never cut (rich cut "succeeded" to "succee…")
        out.print(g.title, markup=False)
        click.echo("\n".join(aligned_lines(g.header, rows, right=range(1, len(g.header)))))
        return
    table = Table(title=Text(g.title))
    for i, h in enumerate(g.header):  # the values whole; a narrow screen folds count headings
        width = max(len(h), *(len(r[0]) for r in rows)) if not i else None
        table.add_column(
            Text(h), justify="right" if i else "left", no_wrap=not i, min_width=width, overflow="fold"
        )
    for r in rows:
        table.add_row(*map(Text, r))
    out.print(table)


# =========================================================================== report


@click.command()
@click.argument("manifest", type=click.Path())
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    help="The HTML file to write (default: <campaign>-report.html beside the ledger, in "
    ".devin-fleet/, not in the manifest's folder kept in git).",
)
@click.option("--offline", is_flag=True, help="What the ledger knows; no API calls.")
@ledger_option
@api_options
def report(
    manifest: str,
    output: str | None,
    offline: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Write the campaign as one self-contained HTML file (no scripts, no network): outcomes,
    ACUs against the budget, outcomes over time, the sessions with links, output summaries."""
    from launcher.views.report import render_report

    p = load_plan(manifest, "read")
    view = _view(p, ledger, offline, base_url, org_id)
    warn(view)
    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        times = {k: r.created_at for k, r in led.records().items()}
    # in the local state folder (.devin-fleet/, git-ignored), not among the manifests in git
    local = default_ledger_path(p.manifest.path, p.campaign).parent
    target = Path(output) if output else local / f"{p.campaign}-report.html"
    html = render_report(p, view, times)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(target), exc.strerror) from None
    out.print(
        f"wrote {target} ({len(view.sessions)} sessions, {len(html):,} bytes): "
        f"{target.resolve().as_uri()}",
        markup=False,
    )


# =========================================================================== message


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("--text", help="The message (a template: item, output, session).")
@click.option(
    "--file",
    "file",
    type=click.Path(exists=True, dir_okay=False),
    help="Read the message template from a file.",
)
@outcome_option
@click.option("--only", multiple=True, metavar="GLOB", help="Only keys matching this glob (repeatable).")
@click.option(
    "--rate",
    default=MESSAGE_RATE,
    show_default=True,
    type=FiniteRange(min=0.01),
    help="Messages per second (paced like creates).",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most messages in flight.",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@lock_timeout_option
@ledger_option
@api_options
def message(
    manifest: str,
    text: str | None,
    file: str | None,
    outcomes: tuple[str, ...],
    only: tuple[str, ...],
    rate: float,
    concurrency: int,
    yes: bool,
    lock_timeout: str | None,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Send a message to each selected session (which resumes a suspended one); each session
    gets a given message once, across re-runs and crashes (the ledger records it)."""
    from launcher.run.messages import MessageError, prepare_messages
    from launcher.views.results import select

    source = _message_text(text, file)
    p = load_plan(manifest, "send")
    with (
        open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led,
        api_config(base_url, org_id) as cfg,
    ):
        view = anyio.run(refresh_campaign, p, cfg, led)
        warn(view)
        matching = select(view, outcomes, only)
        chosen = [s for s in matching if s.session_id]
        try:
            batch = prepare_messages(p, chosen, source, led)
        except MessageError as exc:
            raise click.BadParameter(exc.message, param_hint="--text/--file") from None
        if batch.already:
            out.print(f"{len(batch.already)} session(s) already have this message", markup=False)
        if not batch.todo:
            out.print(_nothing_to_send(view, matching, chosen, batch, outcomes, only), markup=False)
            return
        _show_batch(batch)
        confirm(f"Send to {len(batch.todo)} session(s) of campaign {p.campaign}?", yes)
        try:
            report = anyio.run(_send, cfg, led, batch, rate, concurrency, lock_wait(lock_timeout))
        except KeyboardInterrupt:
            err.print(
                "interrupted: the ledger records what was sent; re-run to send the rest", markup=False
            )
            sys.exit(ExitCode.interrupted)
    for key, why in report.errors.items():
        err.print(f"  {key}: {why}", markup=False)
    out.print(
        f"sent {report.sent} message(s), {report.found} found already delivered"
        + (f", {len(batch.already)} had it before this run" if batch.already else "")
        + (f", {len(report.errors)} failed: re-run to retry" if report.errors else ""),
        markup=False,
    )
    sys.exit(ExitCode.error if report.errors else ExitCode.ok)


def _message_text(text: str | None, file: str | None) -> str:
    """The message template: --text, or the UTF-8 text of --file (one of them)."""
    if (text is None) == (file is None):
        raise click.UsageError("give the message with --text or --file (one of them)")
    try:
        return text if text is not None else Path(file or "").read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{file} is not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8",
            param_hint="--file",
        ) from None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="--file") from None


def _show_batch(batch: MessageBatch) -> None:
    """What is about to be sent: the sessions (20 at most), and the first message in full."""
    out.print(f"{len(batch.todo)} session(s) to message:", markup=False)
    for m in batch.todo[:20]:
        out.print(f"  {m.key}  {m.session_id}", markup=False)
    if len(batch.todo) > 20:
        out.print(f"  ... and {len(batch.todo) - 20} more", markup=False)
    out.print(f"message to {batch.todo[0].key}:\n{batch.todo[0].text}", markup=False)


def _nothing_to_send(
    view: CampaignView,
    matching: list[SessionView],
    chosen: list[SessionView],
    batch: MessageBatch,
    outcomes: tuple[str, ...],
    only: tuple[str, ...],
) -> str:
    """Why there is nothing to send: the filter matched nothing, or what became of the rest."""
    if not matching:
        given = " ".join([*(f"--outcome {o}" for o in outcomes), *(f"--only {g}" for g in only)])
        return f"nothing to send: no session of the {len(view.sessions)} matches {given}"
    why = []
    if batch.already:
        why.append(f"{len(batch.already)} already have this message")
    if batch.ended:
        why.append(f"{len(batch.ended)} have ended (exit) and cannot take one")
    if len(matching) > len(chosen):
        why.append(f"{len(matching) - len(chosen)} were never launched")
    return "nothing to send: " + ", ".join(why)


async def _send(
    cfg: ApiConfig, led: Ledger, batch: MessageBatch, rate: float, concurrency: int, wait: float
) -> MessageReport:
    from launcher.api.client import DevinClient
    from launcher.run.messages import send_messages
    from launcher.views.progress import ProgressReporter

    bar = ProgressReporter("message")  # stderr: a bar on a terminal, a line every 5 s otherwise
    bar.start(len(batch.todo))
    try:
        async with DevinClient(cfg, max_connections=concurrency + 4) as client:
            return await send_messages(
                client,
                led,
                batch,
                rate=rate,
                concurrency=concurrency,
                on_done=bar.advance,
                lock_timeout=wait,
            )
    finally:
        bar.finish()
