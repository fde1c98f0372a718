"""What `plan` shows beside the plan itself: each session's change against the ledger (with
the remote check, against the ledger reconciled with the API, in memory: nothing is written),
the fields a changed session would change, and each session's rollout wave."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from launcher.api.client import DevinClient
from launcher.ledger.location import ledger_exists, open_ledger, scratch_copy
from launcher.ledger.store import Change, off_loop
from launcher.run.reconcile import rebuild
from launcher.run.remote import check_remote
from launcher.run.rollout import waves_by_key
from launcher.spec.diff import changed_fields
from launcher.spec.plan import Plan

Changes = list[tuple[Change, str, str]]  # (change, key, note): the plan's keys, then gone ones
Requests = tuple[dict[str, Any], dict[str, Any]]  # (launched request, planned request)


@dataclass
class PlanPreview:
    """The plan against what was launched."""

    changes: Changes
    launched: dict[str, Requests]  # of each `~` session the ledger kept a request for
    waves: dict[str, int]  # each key's rollout wave
    warnings: list[str] = field(default_factory=list)  # of the remote check

    @property
    def fields(self) -> dict[str, list[str]]:
        """The request fields each `~` session would change (when the ledger kept its request)."""
        return {k: changed_fields(old, new) for k, (old, new) in self.launched.items()}

    @property
    def pending(self) -> bool:
        return any(c != Change.same for c, _, _ in self.changes)


def preview_plan(plan: Plan, ledger_path: str | None = None) -> PlanPreview:
    """The plan against the ledger (no ledger yet: every session is a create)."""
    if not ledger_exists(plan.manifest.path, plan.campaign, ledger_path):
        changes: Changes = [(Change.create, s.key, "") for s in plan.sessions]
    else:
        with open_ledger(plan.manifest.path, plan.campaign, ledger_path, create=False) as led:
            changes = led.diff(plan)
    return PlanPreview(changes, _launched_requests(plan, ledger_path, changes), waves_by_key(plan))


async def preview_plan_remote(
    plan: Plan, client: DevinClient, ledger_path: str | None = None
) -> PlanPreview:
    """The remote checks (the token, the referenced ids), then the plan against the ledger
    reconciled with the API in memory, so what exists shows `=` even on a fresh clone."""
    warnings = await check_remote(plan, client)
    with await off_loop(scratch_copy, plan.manifest.path, plan.campaign, ledger_path) as led:
        rec = await rebuild(plan, client, led)
        warnings += rec.warnings()
        changes = await off_loop(led.diff, plan)
    launched = await off_loop(_launched_requests, plan, ledger_path, changes)
    return PlanPreview(changes, launched, waves_by_key(plan), warnings)


def _launched_requests(plan: Plan, ledger_path: str | None, changes: Changes) -> dict[str, Requests]:
    """(launched request, planned request) of each `~` session the ledger kept a request for,
    both as the ledger keeps them (schema by digest, secrets by variable name, never a value)."""
    changed = [k for c, k, _ in changes if c == Change.changed]
    if not changed or not ledger_exists(plan.manifest.path, plan.campaign, ledger_path):
        return {}
    by_key = plan.by_key()
    out = {}
    with open_ledger(plan.manifest.path, plan.campaign, ledger_path, create=False) as led:
        records = led.records()
        for key in changed:
            old = led.launched_request(records[key].fingerprint)
            if old is not None:  # launched before the ledger kept requests: no field diff
                s = by_key[key]
                out[key] = (old, s.stored)
    return out
