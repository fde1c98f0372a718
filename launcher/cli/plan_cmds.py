"""`validate`, `plan` and `schema`: everything knowable before anything is sent."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import click
from rich.table import Table

from launcher.cli.common import (
    api_config,
    api_options,
    emit_json,
    err,
    ledger_option,
    load_plan,
    out,
)
from launcher.errors import ExitCode, FleetError, ManifestError, Problem
from launcher.ledger.location import ledger_exists, open_ledger, scratch_copy
from launcher.ledger.store import Change, off_loop
from launcher.spec.diff import changed_fields, field_diff
from launcher.spec.manifest import manifest_json_schema
from launcher.spec.plan import Plan, plan_manifest

if TYPE_CHECKING:
    from launcher.api.client import ApiConfig


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
    failed = 0
    reports = []
    for path in manifests:
        try:
            plan = plan_manifest(path)
        except FleetError as exc:
            failed += 1
            problems = exc.problems if isinstance(exc, ManifestError) else []
            reports.append(
                {
                    "path": path,
                    "ok": False,
                    "sessions": None,
                    "problems": [dataclasses.asdict(p) for p in problems],
                    "error": exc.message,
                    "hint": exc.hint,
                }
            )
            if output == "github":
                for p in problems or [Problem(path, None, None, "", exc.message, exc.hint)]:
                    click.echo(_annotation("error", p))
            elif output == "text":
                err.print(exc.render(), markup=False)
            continue
        reports.append(
            {
                "path": path,
                "ok": True,
                "sessions": len(plan),
                "problems": [],
                "warnings": list(plan.warnings),
            }
        )
        if output == "github":
            for w in plan.warnings:
                click.echo(_annotation("warning", Problem(path, None, None, "", w)))
        elif output == "text":
            for w in plan.warnings:
                err.print(f"warning: {w}", markup=False)
            out.print(f"{path}: ok ({len(plan)} sessions)", markup=False)
    if output == "json":
        emit_json({"ok": not failed, "manifests": reports})
    if failed:
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
@click.option("--show-prompts", is_flag=True, help="Print each rendered prompt.")
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
    detailed_exitcode: bool,
    check_remote: bool,
    show_diff: bool,
    ledger: str | None,
    base_url: str | None,
    org_id: str | None,
) -> None:
    """Expand a manifest and show exactly what apply would send, diffed against the ledger."""
    p = load_plan(manifest)
    changes: list[tuple[Change, str, str]] | None = None
    if check_remote:
        with api_config(base_url, org_id) as cfg:
            warnings, changes = anyio.run(_check_remote, p, cfg, ledger)
        for w in warnings:
            err.print(f"warning: {w}", markup=False)
        err.print(
            f"remote check passed at {cfg.base_url} (org {cfg.org_id})"
            + (f" with {len(warnings)} warning(s)" if warnings else ""),
            markup=False,
        )
    if changes is None:
        changes = _diff(p, ledger)
    launched = _launched_requests(p, ledger, changes)
    fields = {k: changed_fields(old, new) for k, (old, new) in launched.items()}
    from launcher.run.rollout import waves_by_key

    waves = waves_by_key(p)
    if output == "json":
        extras = [
            {
                "change": change.value,
                "note": note,
                # null: changed, but launched before the ledger kept requests (unknown fields)
                "changed_fields": fields.get(key, None if change == Change.changed else []),
                "wave": waves[key],
            }
            for change, key, note in changes[: len(p)]
        ]
        # Text a chunk at a time: 100,000 sessions are 200 MB of JSON, never held twice.
        for chunk in p.json_chunks(extras, [k for _, k, _ in changes[len(p) :]]):
            click.echo(chunk.decode(), nl=False)
        click.echo()
    elif output == "markdown":
        from launcher.views.markdown import (
            DEFAULT_BUDGET,
            offline_label,
            plan_view,
            render_plan_markdown,
        )

        diffs = {k: field_diff(k, old, new) for k, (old, new) in launched.items()}
        label = offline_label(check_remote)
        view = plan_view(p, changes, changed_fields=fields, diffs=diffs, waves=waves, label=label)
        click.echo(render_plan_markdown(view, budget=max_length or DEFAULT_BUDGET), nl=False)
    else:
        noted = [
            (c, k, f"{n}; changed: {', '.join(fields[k]) or 'secret sources'}" if k in fields else n)
            for c, k, n in changes
        ]
        _plan_table(p, noted, show_prompts, waves if p.manifest.manifest.rollout else None)
        if show_diff:
            for c, key, _ in changes:
                if c != Change.changed:
                    continue
                out.rule(f"~ {key}")
                if key not in launched:
                    out.print("(launched before the ledger kept requests: no field diff)", markup=False)
                    continue
                old, new = launched[key]
                out.print(field_diff(key, old, new) or "(no field differs)", markup=False)
    pending = any(c != Change.same for c, _, _ in changes)
    sys.exit(ExitCode.changes if detailed_exitcode and pending else ExitCode.ok)


async def _check_remote(
    p: Plan, cfg: ApiConfig, ledger_path: str | None
) -> tuple[list[str], list[tuple[Change, str, str]]]:
    """The remote checks, then the diff against the ledger reconciled with the API (in memory:
    `plan` writes nothing), so what exists shows `=` even on a fresh clone."""
    from launcher.api.client import DevinClient
    from launcher.run.reconcile import rebuild
    from launcher.run.remote import check_remote

    async with DevinClient(cfg) as client:
        warnings = await check_remote(p, client)
        with await off_loop(scratch_copy, p.manifest.path, p.campaign, ledger_path) as led:
            rec = await rebuild(p, client, led)
            warnings += rec.warnings()
            return warnings, await off_loop(led.diff, p)


def _diff(p: Plan, ledger_path: str | None) -> list[tuple[Change, str, str]]:
    if not ledger_exists(p.manifest.path, p.campaign, ledger_path):
        return [(Change.create, s.key, "") for s in p.sessions]
    with open_ledger(p.manifest.path, p.campaign, ledger_path, create=False) as led:
        return led.diff(p)


def _launched_requests(
    p: Plan, ledger_path: str | None, changes: list[tuple[Change, str, str]]
) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """(launched request, planned request) of each `~` session the ledger kept a request for,
    both as the ledger keeps them (schema by digest, secrets by variable name, never a value)."""
    changed = [k for c, k, _ in changes if c == Change.changed]
    if not changed or not ledger_exists(p.manifest.path, p.campaign, ledger_path):
        return {}
    by_key = p.by_key()
    out = {}
    with open_ledger(p.manifest.path, p.campaign, ledger_path, create=False) as led:
        records = led.records()
        for key in changed:
            old = led.launched_request(records[key].fingerprint)
            if old is not None:  # launched before the ledger kept requests: no field diff
                out[key] = (old, by_key[key].stored)
    return out


def _plan_table(
    p: Plan,
    changes: list[tuple[Change, str, str]],
    show_prompts: bool,
    waves: dict[str, int] | None = None,
) -> None:
    table = Table(title=f"campaign {p.campaign}", show_lines=False)
    for col in ("", "key", *(["wave"] if waves else []), "title", "repos", "mode", "ACU", "note"):
        table.add_column(col, overflow="fold")
    by_key = p.by_key()
    for change, key, note in changes:
        s = by_key.get(key)
        req = s.request if s else {}
        table.add_row(
            change.value,
            key,
            *([str(waves.get(key, ""))] if waves else []),
            req.get("title", ""),
            ", ".join(req.get("repos", [])),
            req.get("devin_mode", "default") if s else "",
            str(req.get("max_acu_limit", "-")) if s else "",
            note,
        )
    out.print(table)
    if show_prompts:
        for s in p.sessions:
            out.rule(s.key)
            out.print(s.request["prompt"], markup=False)
    t = p.totals()
    counts = {c: sum(1 for x, _, _ in changes if x == c) for c in Change}
    budget = f" / budget {t['max_total_acu']}" if t["max_total_acu"] else ""
    cap = f" / budget {t['max_sessions']}" if t["max_sessions"] else ""
    out.print(
        f"{t['sessions']} sessions{cap}; max ACU {t['acu']}{budget}; "
        + ", ".join(f"{c.value} {c.name}: {n}" for c, n in counts.items() if n)
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
            f"rollout: {len(sizes)} waves of "
            + ", ".join(str(sizes[w]) for w in sorted(sizes))
            + " sessions, a gate after each but the last",
            markup=False,
        )


@click.command()
def schema() -> None:
    """Print the manifest JSON Schema (draft-07) for editors.

    Indented as committed: `devin-fleet schema > schemas/manifest.schema.json` reproduces it."""
    click.echo(json.dumps(manifest_json_schema(), indent=2, ensure_ascii=False))
