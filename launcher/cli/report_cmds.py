"""`results`, `report` and `message`: the fleet as a report, and acting on it."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import click
from rich.table import Table
from rich.text import Text

from launcher.cli.common import (
    F,
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
from launcher.errors import ExitCode
from launcher.ledger.location import open_ledger
from launcher.run.status import Outcome

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
OUTCOMES = [o.value for o in Outcome]


def outcome_option(f: F) -> F:
    return click.option(
        "--outcome",
        "outcomes",
        multiple=True,
        type=click.Choice(OUTCOMES),
        help="Only sessions with this outcome (repeatable).",
    )(f)


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
        with api_config(base_url, org_id) as cfg:
            return anyio.run(refresh_campaign, p, cfg, led)


@click.command()
@click.argument("manifest", type=click.Path())
@click.option(
    "-o",
    "--output",
    type=click.Choice(["table", "json", "jsonl", "csv", "markdown"]),
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
    refresh: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """The campaign as a report: a row per session with its item, outcome, reason, pull request,
    ACUs and one column per structured-output field (schema order), refreshed from the API."""
    from launcher.views.results import FieldError, build_results, select

    if len(group_by) > 2:
        raise click.UsageError("--group-by takes one field, or two for a two-way count")
    p = load_plan(manifest, "read")
    view = _view(p, ledger, offline or not refresh, base_url, org_id)
    warn(view)
    chosen = select(view, outcomes, only)
    if history:
        chosen = _with_history(p, ledger, chosen, outcomes)
    res = build_results(view, p.schemas, chosen)
    try:
        if group_by:
            _groups(res, list(group_by), output)
        else:
            _emit(res, output)
    except FieldError as exc:
        raise click.BadParameter(
            f"no column {exc.name!r}; columns: {', '.join(exc.available)}", param_hint="--group-by"
        ) from None


def _with_history(
    p: Plan, ledger: str | None, chosen: list[SessionView], outcomes: tuple[str, ...]
) -> list[SessionView]:
    """Each chosen key's earlier attempts (oldest first) before its latest."""
    from launcher.run.status import history_views

    with open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led:
        earlier = history_views(p, led)
    out: list[SessionView] = []
    for s in chosen:
        out += [
            dataclasses.replace(e, fleet=s.fleet)
            for e in earlier.get(s.key, [])
            if not outcomes or e.outcome.value in outcomes
        ]
        out.append(s)
    return out


def _emit(res: Results, output: str) -> None:
    from launcher.views.results import to_csv, to_markdown, totals_line

    if output == "json":
        emit_json(res.to_json())
    elif output == "jsonl":
        for record in res.records():
            click.echo(json.dumps(record, ensure_ascii=False))
    elif output == "csv":
        click.echo(to_csv(res), nl=False)
    elif output == "markdown":
        click.echo(to_markdown(res), nl=False)
    else:
        _results_table(res)
    (out if output == "table" else err).print(totals_line(res), markup=False)


def _results_table(res: Results) -> None:
    from launcher.views.results import cell_of, table_columns

    cols = table_columns(res)
    table = Table(title=f"campaign {res.campaign}: results")
    for col in cols:  # output fields by their own name, unless it is one of the fixed columns
        bare = col.removeprefix("output.")
        table.add_column(col if bare in res.columns else bare, overflow="fold")
    for row in res.rows:
        cells: list[Text | str] = []
        for c in cols:
            text = cell_of(c, row[c])
            if c == "outcome":
                cells.append(Text(text, style=OUTCOME_STYLE.get(text, "")))
            elif c == "output_valid":
                cells.append({"true": "yes", "false": "NO", "": "-"}[text])
            else:
                cells.append(text)
        table.add_row(*cells)
    counts = "  ".join(f"{k}: {v}" for k, v in res.counts().items() if v) or "no sessions"
    out.print(counts, markup=False)
    out.print(table)


def _groups(res: Results, fields: list[str], output: str) -> None:
    from launcher.views.results import crosstab_markdown, group_markdown

    if len(fields) == 2:
        a, b = res.resolve(fields[0]), res.resolve(fields[1])
        cols, cross = res.crosstab(a, b)
        rows = [[v, *(counts[c] for c in cols), sum(counts.values())] for v, counts in cross.items()]
        header = [a, *cols, "total"]
        if output == "markdown":
            click.echo(crosstab_markdown(a, b, cols, cross), nl=False)
            return
        if output in ("json", "jsonl"):
            records = [{a: v, **counts, "total": sum(counts.values())} for v, counts in cross.items()]
            _records(records, output)
            return
    else:
        a = res.resolve(fields[0])
        groups = res.group(a)
        rows = [[v, n] for v, n in groups.items()]
        header = [a, "sessions"]
        if output == "markdown":
            click.echo(group_markdown(a, groups), nl=False)
            return
        if output in ("json", "jsonl"):
            _records([{a: v, "sessions": n} for v, n in groups.items()], output)
            return
    if output == "csv":
        import csv

        w = csv.writer(sys.stdout, lineterminator="\r\n")
        w.writerow(header)
        w.writerows(rows)
        return
    table = Table(title=f"{res.campaign}: sessions by {' and '.join(header[:1] + fields[1:])}")
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if i else "left")
    for r in rows:
        table.add_row(*(str(x) for x in r))
    out.print(table)


def _records(records: list[dict[str, object]], output: str) -> None:
    if output == "json":
        emit_json(records)
    else:
        for r in records:
            click.echo(json.dumps(r, ensure_ascii=False))


# =========================================================================== report


@click.command()
@click.argument("manifest", type=click.Path())
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False),
    help="The HTML file to write (default: <campaign>-report.html by the manifest).",
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
    target = Path(output) if output else p.manifest.path.parent / f"{p.campaign}-report.html"
    html = render_report(p, view, times)
    try:
        target.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise click.FileError(str(target), exc.strerror) from None
    out.print(f"wrote {target} ({len(view.sessions)} sessions, {len(html):,} bytes)", markup=False)


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
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.01),
    help="Messages per second (paced like creates).",
)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@ledger_option
@api_options
def message(
    manifest: str,
    text: str | None,
    file: str | None,
    outcomes: tuple[str, ...],
    only: tuple[str, ...],
    rate: float,
    yes: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Send a message to each selected session (which resumes a suspended one); each session
    gets a given message once, across re-runs and crashes (the ledger records it)."""
    from launcher.run.messages import MessageError, prepare_messages
    from launcher.views.results import select

    if (text is None) == (file is None):
        raise click.UsageError("give the message with --text or --file (one of them)")
    source = text if text is not None else Path(file or "").read_text(encoding="utf-8")
    p = load_plan(manifest, "send")
    with (
        open_ledger(p.manifest.path, p.campaign, ledger, create=False) as led,
        api_config(base_url, org_id) as cfg,
    ):
        view = anyio.run(refresh_campaign, p, cfg, led)
        warn(view)
        chosen = [s for s in select(view, outcomes, only) if s.session_id]
        try:
            batch = prepare_messages(p, chosen, source, led)
        except MessageError as exc:
            raise click.BadParameter(exc.message, param_hint="--text/--file") from None
        if batch.already:
            out.print(f"{len(batch.already)} session(s) already have this message", markup=False)
        if not batch.todo:
            out.print("nothing to send", markup=False)
            return
        out.print(f"{len(batch.todo)} session(s) to message:", markup=False)
        for m in batch.todo[:20]:
            out.print(f"  {m.key}  {m.session_id}", markup=False)
        if len(batch.todo) > 20:
            out.print(f"  ... and {len(batch.todo) - 20} more", markup=False)
        first = batch.todo[0].text
        out.print(f"message to {batch.todo[0].key}:\n{first}", markup=False)
        confirm(f"Send to {len(batch.todo)} session(s) of campaign {p.campaign}?", yes)
        try:
            report = anyio.run(_send, cfg, led, batch, rate)
        except KeyboardInterrupt:
            err.print(
                "interrupted: the ledger records what was sent; re-run to send the rest", markup=False
            )
            sys.exit(ExitCode.interrupted)
    for key, why in report.errors.items():
        err.print(f"  {key}: {why}", markup=False)
    out.print(
        f"sent {report.sent} message(s), {report.found} found already delivered"
        + (f", {len(report.errors)} failed: re-run to retry" if report.errors else ""),
        markup=False,
    )
    sys.exit(ExitCode.error if report.errors else ExitCode.ok)


async def _send(cfg: ApiConfig, led: Ledger, batch: MessageBatch, rate: float) -> MessageReport:
    from launcher.api.client import DevinClient
    from launcher.run.messages import send_messages

    async with DevinClient(cfg) as client:
        return await send_messages(client, led, batch, rate=rate)
