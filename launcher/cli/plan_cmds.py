"""`validate`, `plan` and `schema`: everything knowable before anything is sent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

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
from launcher.errors import ExitCode, FleetError
from launcher.ledger import Change, Ledger
from launcher.manifest import manifest_json_schema
from launcher.plan import Plan

if TYPE_CHECKING:
    from launcher.client import ApiConfig


@click.command()
@click.argument("manifests", nargs=-1, required=True, type=click.Path())
def validate(manifests: tuple[str, ...]) -> None:
    """Check manifests fully (templates, data files, API rules, budget), offline."""
    failed: list[FleetError] = []
    for path in manifests:
        try:
            plan = load_plan(path)
            out.print(f"{path}: ok ({len(plan)} sessions)")
        except FleetError as exc:
            failed.append(exc)
            err.print(exc.render(), markup=False)
    if failed:
        sys.exit(ExitCode.error)


@click.command()
@click.argument("manifest", type=click.Path())
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@click.option("--show-prompts", is_flag=True, help="Print each rendered prompt.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0: nothing to do, 2: changes, 1: error.")
@click.option("--check-remote", is_flag=True, help="Check the token and referenced ids in the org.")
@ledger_option
@api_options
def plan(
    manifest: str,
    output: str,
    show_prompts: bool,
    detailed_exitcode: bool,
    check_remote: bool,
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
    if output == "json":
        data = p.to_json()
        for entry, (change, _, note) in zip(data["sessions"], changes, strict=False):
            entry["change"], entry["note"] = change.value, note
        data["gone"] = [k for c, k, _ in changes[len(p) :]]
        emit_json(data)
    else:
        _plan_table(p, changes, show_prompts)
    pending = any(c != Change.same for c, _, _ in changes)
    sys.exit(ExitCode.changes if detailed_exitcode and pending else ExitCode.ok)


async def _check_remote(
    p: Plan, cfg: ApiConfig, ledger_path: str | None
) -> tuple[list[str], list[tuple[Change, str, str]]]:
    """The remote checks, then the diff against the ledger reconciled with the API (in memory:
    `plan` writes nothing), so what exists shows `=` even on a fresh clone."""
    from launcher.client import DevinClient
    from launcher.ledger import default_ledger_path
    from launcher.reconcile import rebuild
    from launcher.remote import check_remote

    path = Path(ledger_path) if ledger_path else default_ledger_path(p.manifest.path, p.campaign)
    async with DevinClient(cfg) as client:
        warnings = await check_remote(p, client)
        with Ledger.scratch_copy(path, p.campaign) as led:
            rec = await rebuild(p, client, led)
            warnings += rec.warnings()
            return warnings, led.diff(p)


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
        table.add_row(
            change.value,
            key,
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


@click.command()
def schema() -> None:
    """Print the manifest JSON Schema (draft-07) for editors."""
    emit_json(manifest_json_schema())
