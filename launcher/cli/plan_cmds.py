"""`validate`, `plan` and `schema`: everything knowable before anything is sent."""

from __future__ import annotations

import sys
from collections import Counter
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
    if check_remote:
        with api_config(base_url, org_id) as cfg:
            warnings = anyio.run(_check_remote, p, cfg)
        for w in warnings:
            err.print(f"warning: {w}", markup=False)
        err.print(
            f"remote check passed at {cfg.base_url} (org {cfg.org_id})"
            + (f" with {len(warnings)} warning(s)" if warnings else ""),
            markup=False,
        )
    changes = _diff(p, ledger)
    from launcher.rollout import waves_by_key

    waves = waves_by_key(p)
    if output == "json":
        data = p.to_json()
        for entry, (change, _, note) in zip(data["sessions"], changes, strict=False):
            entry["change"], entry["note"] = change.value, note
            entry["wave"] = waves[entry["key"]]
        data["gone"] = [k for c, k, _ in changes[len(p) :]]
        emit_json(data)
    else:
        _plan_table(p, changes, show_prompts, waves if p.manifest.manifest.rollout else None)
    pending = any(c != Change.same for c, _, _ in changes)
    sys.exit(ExitCode.changes if detailed_exitcode and pending else ExitCode.ok)


async def _check_remote(p: Plan, cfg: ApiConfig) -> list[str]:
    from launcher.client import DevinClient
    from launcher.remote import check_remote

    async with DevinClient(cfg) as client:
        return await check_remote(p, client)


def _diff(p: Plan, ledger_path: str | None) -> list[tuple[Change, str, str]]:
    from launcher.ledger import default_ledger_path

    path = Path(ledger_path) if ledger_path else default_ledger_path(p.manifest.path, p.campaign)
    if not path.exists():
        return [(Change.create, s.key, "") for s in p.sessions]
    with Ledger(path, p.campaign, create=False) as led:
        return led.diff(p)


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
    """Print the manifest JSON Schema (draft-07) for editors."""
    emit_json(manifest_json_schema())
