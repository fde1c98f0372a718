"""`validate`, `plan` and `schema`: everything knowable before anything is sent."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich import box
from rich.table import Table
from rich.text import Text

from launcher.cli.common import (
    api_config,
    api_options,
    emit_json,
    err,
    ledger_option,
    load_plan,
    out,
)
from launcher.errors import ExitCode, Problem
from launcher.ledger.store import Change
from launcher.spec.diff import field_diff
from launcher.spec.model import manifest_json_schema
from launcher.spec.plan import Plan

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig
    from launcher.run.budget import BudgetUse
    from launcher.run.preview import PlanPreview
    from launcher.views.markdown import PlanView


@click.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path())
@click.option(
    "-o",
    "--output",
    "--format",
    "output",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="json: one report on stdout; github: GitHub Actions annotations (::error file=...).",
)
def validate(manifests: tuple[str, ...], output: str) -> None:
    """Check manifests fully (templates, data files, API rules, budget), offline."""
    from launcher.spec.check import check_manifest

    checks = []
    for path in manifests:
        check = check_manifest(path)
        checks.append(check)
        if output == "github":
            for problem in check.problems:
                click.echo(_annotation("error", problem))
            for w in check.warnings:
                click.echo(_annotation("warning", Problem(path, None, None, "", w)))
        elif output == "text" and check.error is not None:
            err.print(check.error.render(), markup=False)
        elif output == "text":
            for w in check.warnings:
                err.print(f"warning: {w}", markup=False)
            out.print(f"{path}: ok ({check.sessions} sessions)", markup=False)
    if output == "json":
        emit_json({"ok": all(c.ok for c in checks), "manifests": [c.to_json() for c in checks]})
    if not all(c.ok for c in checks):
        sys.exit(ExitCode.error)


def _annotation(level: str, p: Problem) -> str:
    """A GitHub Actions workflow command: shows on the pull request's diff at the line."""

    def data(text: str) -> str:
        return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    def prop(text: str) -> str:
        return data(text).replace(":", "%3A").replace(",", "%2C")

    props = [f"file={prop(p.file)}"]
    if p.line is not None:
        props += [f"line={p.line}", f"col={p.col or 1}"]
    if p.field:
        props.append(f"title={prop(p.field)}")
    message = p.message + (f" (hint: {p.hint})" if p.hint else "")
    return f"::{level} {','.join(props)}::{data(message)}"


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("-o", "--output", type=click.Choice(["table", "json", "markdown"]), default="table")
@click.option(
    "--max-length",
    type=click.IntRange(min=2000),
    help="-o markdown: most characters (default 65,000: a GitHub comment holds 65,536).",
)
@click.option("--show-prompts", is_flag=True, help="Print each rendered prompt (of --only's keys).")
@click.option("--only", multiple=True, metavar="GLOB", help="Only keys matching this glob (repeatable).")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: nothing to do, 2: changes, 1: error.")
@click.option("--check-remote", is_flag=True, help="Check the token and referenced ids in the org.")
@click.option(
    "--diff",
    "show_diff",
    is_flag=True,
    help="For sessions changed since launch: a unified diff of the prompt, old -> new for the rest.",
)
@ledger_option
@api_options
def plan(
    manifest: str,
    output: str,
    max_length: int | None,
    show_prompts: bool,
    only: tuple[str, ...],
    detailed_exitcode: bool,
    check_remote: bool,
    show_diff: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Expand a manifest and show exactly what apply would send, diffed against the ledger."""
    p = load_plan(manifest)
    preview = plan_preview(p, ledger, check_remote, base_url, org_id, say_passed=True)
    whole = p  # what was spent is the campaign's, whatever --only shows
    if only:  # the selection: its table, prompts, JSON and totals (waves: of the whole plan)
        p, preview = _only(p, preview, only)
    changes, fields, waves = preview.changes, preview.fields, preview.waves
    if output == "json":
        _plan_json(p, preview)
    elif output == "markdown":
        from launcher.views.markdown import DEFAULT_BUDGET, render_plan_markdown

        view = markdown_view(p, preview, check_remote)
        click.echo(render_plan_markdown(view, budget=max_length or DEFAULT_BUDGET), nl=False)
    else:
        noted = [
            (c, k, f"changed: {', '.join(fields[k]) or 'secret sources'}; {n}" if k in fields else n)
            for c, k, n in changes
        ]
        spent = _spent(whole, ledger)
        _plan_table(p, noted, show_prompts, waves if p.manifest.manifest.rollout else None, spent)
        if show_diff:
            _show_diffs(changes, preview.launched)
    sys.exit(ExitCode.changes if detailed_exitcode and preview.pending else ExitCode.ok)


def plan_preview(
    p: Plan,
    ledger: str | None,
    online: bool,
    base_url: str | None = None,
    org_id: str | None = None,
    *,
    say_passed: bool = False,
) -> PlanPreview:
    """The plan against the ledger, or (online: the remote check) against the ledger
    reconciled with the API in memory; the check's warnings printed."""
    from launcher.run.preview import preview_plan

    if not online:
        return preview_plan(p, ledger)
    with api_config(base_url, org_id) as cfg:
        preview = anyio.run(_preview_remote, p, cfg, ledger)
    for w in preview.warnings:  # a "note: " says what the remote check could not check
        err.print(w if w.startswith("note: ") else f"warning: {w}", markup=False)
    if say_passed:
        n = sum(1 for w in preview.warnings if not w.startswith("note: "))
        err.print(
            f"remote check passed at {cfg.base_url} (org {cfg.org_id})"
            + (f" with {n} warning(s)" if n else ""),
            markup=False,
        )
    return preview


def markdown_view(p: Plan, preview: PlanPreview, online: bool) -> PlanView:
    """What `plan -o markdown` (and the pull-request comment) shows: the diff, the changed
    fields of `~` sessions and their field diffs, the waves."""
    from launcher.views.markdown import offline_label, plan_view

    diffs = {k: field_diff(k, old, new) for k, (old, new) in preview.launched.items()}
    return plan_view(
        p,
        preview.changes,
        changed_fields=preview.fields,
        diffs=diffs,
        waves=preview.waves,
        label=offline_label(online),
    )


def _plan_json(p: Plan, preview: PlanPreview) -> None:
    fields, waves = preview.fields, preview.waves
    extras = [
        {
            "change": change.value,
            "note": note,
            # null: changed, but launched before the ledger kept requests (unknown fields)
            "changed_fields": fields.get(key, None if change == Change.changed else []),
            "wave": waves[key],
        }
        for change, key, note in preview.changes[: len(p)]
    ]
    # Text a chunk at a time: 100,000 sessions are 200 MB of JSON, never held twice.
    for chunk in p.json_chunks(extras, [k for _, k, _ in preview.changes[len(p) :]]):
        click.echo(chunk.decode(), nl=False)
    click.echo()


def _show_diffs(
    changes: list[tuple[Change, str, str]],
    launched: dict[str, tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """`plan --diff`: each changed session's fields, launched -> planned."""
    for c, key, _ in changes:
        if c != Change.changed:
            continue
        out.rule(f"~ {key}")
        if key not in launched:
            out.print("(launched before the ledger kept requests: no field diff)", markup=False)
            continue
        old, new = launched[key]
        out.print(field_diff(key, old, new) or "(no field differs)", markup=False)


def _only(p: Plan, preview: PlanPreview, only: tuple[str, ...]) -> tuple[Plan, PlanPreview]:
    """The plan and its preview restricted to the keys matching `--only`'s globs."""
    picked = [c for c in preview.changes if any(fnmatch.fnmatchcase(c[1], g) for g in only)]
    if not picked:
        raise click.BadParameter(
            f"no key of campaign {p.campaign} matches {' '.join(only)}; keys look like "
            + ", ".join(s.key for s in p.sessions[:3]),
            param_hint="--only",
        )
    keys = {k for _, k, _ in picked}
    launched = {k: v for k, v in preview.launched.items() if k in keys}
    return (
        dataclasses.replace(p, sessions=tuple(s for s in p.sessions if s.key in keys)),
        dataclasses.replace(preview, changes=picked, launched=launched),
    )


def _spent(p: Plan, ledger_path: str | None) -> BudgetUse | None:
    """What the campaign has launched so far (every attempt), from the ledger when there is one."""
    from launcher.ledger.location import ledger_exists, open_ledger
    from launcher.run.budget import budget_use

    if not ledger_exists(p.manifest.path, p.campaign, ledger_path):
        return None
    with open_ledger(p.manifest.path, p.campaign, ledger_path, create=False) as led:
        return budget_use(p, led)


async def _preview_remote(p: Plan, cfg: ApiConfig, ledger_path: str | None) -> PlanPreview:
    from launcher.api.client import DevinClient
    from launcher.run.preview import preview_plan_remote

    async with DevinClient(cfg) as client:
        return await preview_plan_remote(p, client, ledger_path)


def _plan_table(
    p: Plan,
    changes: list[tuple[Change, str, str]],
    show_prompts: bool,
    waves: dict[str, int] | None = None,
    spent: BudgetUse | None = None,
) -> None:
    _plan_rows(p, changes, waves)
    if show_prompts:
        for s in p.sessions:
            out.rule(s.key)
            out.print(s.request["prompt"], markup=False)
    t = p.totals()
    if spent is not None and (spent.launched or spent.relaunched):
        out.print(spent.line(), markup=False)
    counts = {c: sum(1 for x, _, _ in changes if x == c) for c in Change}
    budget = f" / budget {t['max_total_acu']}" if t["max_total_acu"] else ""
    cap = f" / budget {t['max_sessions']}" if t["max_sessions"] else ""
    out.print(
        f"{t['sessions']} sessions{cap}; max ACU {t['acu']}{budget}; "
        + ", ".join(f"{c.value} {c.name}: {n}" for c, n in counts.items() if n)
    )
    if counts[Change.changed]:
        out.print(
            f"{counts[Change.changed]} launched session(s) changed since launch: "
            "`devin-fleet apply MANIFEST --relaunch changed` relaunches them (`plan --diff`: what)",
            markup=False,
        )
    if counts[Change.gone]:
        out.print(
            f"{counts[Change.gone]} launched session(s) of items removed from the manifest: "
            "`devin-fleet cancel MANIFEST --gone` terminates the live ones",
            markup=False,
        )
    out.print(f"plan digest: {p.digest} (`apply --plan-digest` applies exactly this)", markup=False)
    if waves:
        sizes = Counter(waves.values())
        out.print(
            f"rollout: {len(sizes)} waves ("
            + ", ".join(f"wave {w}: {sizes[w]} session(s)" for w in sorted(sizes))
            + "), a gate after each wave but the last",
            markup=False,
        )


def _plan_rows(p: Plan, changes: list[tuple[Change, str, str]], waves: dict[str, int] | None) -> None:
    """The plan's sessions: on a terminal a table that fits its width (keys whole; titles,
    repos and notes cut with "…", repos left out when narrow); otherwise aligned lines, one
    per session, never wrapped (`-o json` is the form for programs)."""
    from launcher.views.results import aligned_lines, fit_widths

    cols = ["", "key", *(["wave"] if waves else []), "title", "repos", "mode", "ACU", "note"]
    by_key = p.by_key()
    rows = []
    for change, key, note in changes:
        s = by_key.get(key)
        req = s.request if s else {}
        rows.append(
            [
                change.value,
                key,
                *([str(waves.get(key, ""))] if waves else []),
                req.get("title", ""),
                ", ".join(req.get("repos", [])),
                req.get("devin_mode", "default") if s else "",
                str(req.get("max_acu_limit", "-")) if s else "",
                note,
            ]
        )
    if not out.is_terminal:
        out.print(f"campaign {p.campaign}", markup=False)
        click.echo("\n".join(aligned_lines(cols, rows)))
        return
    natural = {c: max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(cols)}
    keep = {"", "key", "wave", "mode", "ACU"}
    # a narrow terminal leaves the repos out (the key names them, as a rule) before it cuts
    # the title and the note ("changed: prompt") below 16 characters
    widths = fit_widths(natural, out.width, overhead=(3, 1), keep=keep, drop=("repos",), floor=16)
    table = Table(title=f"campaign {p.campaign}", box=box.SIMPLE_HEAD)
    for col in widths:  # kept columns: rich cuts them no further (the line wraps instead)
        whole = widths[col] if col in keep else None
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", width=None if whole else widths[col], min_width=whole
        )
    for r in rows:
        # Text, not markup: an `identity: title` suffix "[fleet … fp …]" read as a style vanished
        table.add_row(*(Text(cell) for col, cell in zip(cols, r, strict=True) if col in widths))
    out.print(table)


@click.command()
def schema() -> None:
    """Print the manifest JSON Schema (draft-07) for editors.

    Indented as committed: `devin-fleet schema > schemas/manifest.schema.json` reproduces it."""
    click.echo(json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False))
