"""Follow-through: refresh a campaign's sessions, classify outcomes, collect results, cancel,
and check the manifest's references against the live org.

Outcome rules (what users act on), from the API's status and status_detail:
- `succeeded`: running/finished; or delivered (a pull request, or a structured output that is
  valid against the fleet's schema) while waiting for the user, suspended for inactivity, or exited.
- `needs-human`: waiting for the user or for approval, or suspended for inactivity, with nothing
  delivered.
- `failed`: status `error`, or suspended for a limit, credit, quota, payment or error reason;
  also a planned session whose create was refused (`not-launched` in the ledger view).
- `cancelled`: terminated by `devin-fleet cancel`, or exited without delivering.
- `running`: new, claimed, working, resuming, and any status value the API adds later.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio

from launcher.client import DevinClient
from launcher.errors import APIError, Problem, RemoteCheckError
from launcher.ledger import Ledger, Record
from launcher.manifest import Loc
from launcher.models import Session, output_errors
from launcher.plan import Plan

SUSPEND_FAILURES = {
    "usage_limit_exceeded", "out_of_credits", "out_of_quota", "no_quota_allocation",
    "payment_declined", "org_usage_limit_exceeded", "total_session_limit_exceeded", "error",
    "user_usage_limit_exceeded", "contract_expired",
}


class Outcome(StrEnum):
    succeeded = "succeeded"
    needs_human = "needs-human"
    failed = "failed"
    running = "running"
    cancelled = "cancelled"
    not_launched = "not-launched"

    @property
    def final(self) -> bool:
        return self is not Outcome.running


def output_check(schema: dict[str, Any] | None, output: Any) -> tuple[bool | None, list[str]]:
    """(valid?, problems) of a structured output against the fleet's schema.

    None when the fleet has no schema; False with "missing" when a schema expects output.
    """
    if schema is None:
        return None, []
    if output is None:
        return False, ["missing: no structured output"]
    errors = output_errors(schema, output)
    return not errors, errors


def classify(status: str | None, detail: str | None, *, delivered: bool,
             cancelled: bool = False) -> Outcome:
    """The outcome of one session; unknown values never crash (they count as running)."""
    if cancelled:
        return Outcome.cancelled
    if status == "error":
        return Outcome.failed
    if status == "exit":
        return Outcome.succeeded if delivered else Outcome.cancelled
    if status == "suspended":
        if detail in SUSPEND_FAILURES:
            return Outcome.failed
        if detail == "inactivity":
            return Outcome.succeeded if delivered else Outcome.needs_human
        return Outcome.running
    if status == "running":
        if detail == "finished":
            return Outcome.succeeded
        if detail in ("waiting_for_user", "waiting_for_approval"):
            return Outcome.succeeded if delivered else Outcome.needs_human
    return Outcome.running


@dataclass
class SessionView:
    """One planned session as status/results show it."""

    key: str
    fleet: str
    item: Any
    session_id: str | None
    url: str | None
    status: str | None
    status_detail: str | None
    outcome: Outcome
    pull_requests: list[dict[str, Any]]
    acus_consumed: float | None
    structured_output: dict[str, Any] | None
    output_valid: bool | None
    output_errors: list[str] = field(default_factory=list)
    launch_error: str | None = None

    def status_json(self) -> dict[str, Any]:
        return {"key": self.key, "session_id": self.session_id, "url": self.url,
                "status": self.status, "status_detail": self.status_detail,
                "outcome": self.outcome.value, "pull_requests": self.pull_requests,
                "acus_consumed": self.acus_consumed, "structured_output": self.structured_output}

    def result_json(self) -> dict[str, Any]:
        return {"key": self.key, "item": self.item, "session_id": self.session_id,
                "url": self.url, "outcome": self.outcome.value,
                "pull_requests": [p.get("pr_url") for p in self.pull_requests],
                "acus_consumed": self.acus_consumed,
                "structured_output": self.structured_output, "output_valid": self.output_valid,
                "output_errors": self.output_errors}


@dataclass
class CampaignView:
    """Every planned session of a campaign, joined with the ledger."""

    campaign: str
    sessions: list[SessionView]
    budget_acu: int | None = None
    requests: int = 0

    def counts(self) -> dict[str, int]:
        c = Counter(s.outcome.value for s in self.sessions)
        return {o.value: c.get(o.value, 0) for o in Outcome}

    @property
    def settled(self) -> bool:
        return all(s.outcome.final for s in self.sessions)

    @property
    def exit_code(self) -> int:
        """0 all succeeded/cancelled; 3 some failed; 6 some need a human; 4 some still running."""
        c = self.counts()
        if c["failed"] or c["not-launched"]:
            return 3
        if c["needs-human"]:
            return 6
        if c["running"]:
            return 4
        return 0

    def totals(self) -> dict[str, Any]:
        return {"sessions": len(self.sessions),
                "succeeded": sum(1 for s in self.sessions if s.outcome == Outcome.succeeded),
                "pull_requests": sum(len(s.pull_requests) for s in self.sessions),
                "acus_consumed": round(sum(s.acus_consumed or 0 for s in self.sessions), 2),
                "max_total_acu": self.budget_acu,
                "invalid_outputs": sum(1 for s in self.sessions if s.output_valid is False
                                       and s.outcome != Outcome.not_launched)}

    def status_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "counts": self.counts(), "totals": self.totals(),
                "sessions": [s.status_json() for s in self.sessions]}

    def group_by(self, path: str) -> dict[str, int]:
        """Counts per value of a structured-output field (dotted path) across the fleet."""
        counts: Counter[str] = Counter()
        for s in self.sessions:
            value: Any = s.structured_output
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            counts["(missing)" if value is None else str(value)] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def campaign_view(plan: Plan, ledger: Ledger) -> CampaignView:
    """Join the plan with what the ledger knows (no network)."""
    records = ledger.records()
    views = []
    for s in plan.sessions:
        r = records.get(s.key)
        schema = plan.schemas.get(s.fleet)
        if r is None or not r.state.launched:
            views.append(SessionView(
                s.key, s.fleet, s.item, None, None, None, None,
                Outcome.failed if r is not None and r.state.value == "failed"
                else Outcome.not_launched, [], None, None, None,
                launch_error=r.last_error if r else None))
            continue
        prs = r.pull_requests or []
        valid, errors = output_check(schema, r.structured_output)
        delivered = bool(prs) or valid is True or (schema is None and r.structured_output
                                                   is not None)
        outcome = classify(r.status, r.status_detail, delivered=delivered,
                           cancelled=r.cancelled_at is not None)
        views.append(SessionView(s.key, s.fleet, s.item, r.session_id, r.url, r.status,
                                 r.status_detail, outcome, prs, r.acus_consumed,
                                 r.structured_output, valid, errors))
    return CampaignView(plan.campaign, views, plan.manifest.manifest.budget.max_total_acu)


def _update(session: Session) -> dict[str, Any]:
    return {"session_id": session.session_id, "status": session.status,
            "status_detail": session.status_detail, "outcome": None,
            "acus_consumed": session.acus_consumed,
            "pull_requests": [p.model_dump() for p in session.pull_requests],
            "structured_output": session.structured_output}


async def refresh(plan: Plan, client: DevinClient, ledger: Ledger) -> CampaignView:
    """Refresh every launched session: the list endpoint by campaign tag (200 a page), then a
    GET for any the list missed; store the states in the ledger; return the joined view."""
    before = client.requests
    wanted = {r.session_id: k for k, r in ledger.records().items()
              if r.state.launched and r.session_id}
    updates: dict[str, dict[str, Any]] = {}
    async for session in client.list_sessions(tags=[plan.campaign_tag]):
        if session.session_id in wanted:
            updates[session.session_id] = _update(session)
    missing = [sid for sid in wanted if sid not in updates]
    if missing:
        limiter = anyio.CapacityLimiter(8)

        async def one(sid: str) -> None:
            async with limiter:
                session = await client.get_session(sid)
            if session is not None:
                updates[sid] = _update(session)

        async with anyio.create_task_group() as tg:
            for sid in missing:
                tg.start_soon(one, sid)
    ledger.update_status(updates.values())
    view = campaign_view(plan, ledger)
    view.requests = client.requests - before
    return view


async def watch(plan: Plan, client: DevinClient, ledger: Ledger, *, interval: float = 5.0,
                max_interval: float = 60.0, timeout: float | None = None,
                on_refresh: Callable[[CampaignView], None] | None = None) -> CampaignView:
    """Refresh until every session has a final outcome or `timeout` passes.

    The interval adapts: back to `interval` whenever something changed, otherwise it grows by
    half up to `max_interval` (polling a quiet fleet less often).
    """
    wait = interval
    previous: dict[str, Any] | None = None
    view = await refresh(plan, client, ledger)
    with anyio.move_on_after(timeout):
        while True:
            if on_refresh is not None:
                on_refresh(view)
            if view.settled:
                break
            snapshot = {s.key: (s.status, s.status_detail, s.outcome) for s in view.sessions}
            wait = interval if snapshot != previous else min(max_interval, wait * 1.5)
            previous = snapshot
            await anyio.sleep(wait)
            view = await refresh(plan, client, ledger)
    return view


async def cancel(plan: Plan, client: DevinClient, ledger: Ledger, keys: list[str], *,
                 archive: bool = False) -> dict[str, str]:
    """Terminate the sessions of `keys`; record it; returns key -> what happened."""
    records = ledger.records()
    done: dict[str, str] = {}
    limiter = anyio.CapacityLimiter(8)

    async def one(key: str) -> None:
        r = records[key]
        assert r.session_id is not None
        async with limiter:
            try:
                existed = await client.terminate(r.session_id, archive=archive)
            except APIError as exc:
                if exc.status is not None and exc.status in (401, 403):
                    raise
                done[key] = f"error: {exc.message}"
                return
        done[key] = "terminated" if existed else "already gone"

    async with anyio.create_task_group() as tg:
        for key in keys:
            tg.start_soon(one, key)
    ledger.mark_cancelled([k for k, v in done.items() if not v.startswith("error")],
                          archived=archive)
    return done


def cancellable(view: CampaignView, only: tuple[str, ...] = ()) -> list[str]:
    """Keys of sessions that are still live (running or waiting) and match `only`."""
    return [s.key for s in view.sessions
            if s.session_id and s.outcome in (Outcome.running, Outcome.needs_human)
            and s.status != "exit"
            and (not only or any(fnmatch.fnmatchcase(s.key, g) for g in only))]


# =========================================================================== remote checks

_REFERENCE_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("secret_ids", "/secrets", "secret"),
    ("playbook_id", "/playbooks", "playbook"),
    ("child_playbook_id", "/playbooks", "playbook"),
    ("knowledge_ids", "/knowledge/notes", "knowledge note"),
)


def _field_loc(plan: Plan, fleet: str, name: str) -> Loc:
    m = plan.manifest.manifest
    for i, f in enumerate(m.fleets):
        if f.name == fleet and getattr(f.session, name) is not None:
            return ("fleets", i, "session", name)
    return ("defaults", name)


async def check_remote(plan: Plan, client: DevinClient) -> list[str]:
    """Prove the token works, then that every referenced id exists; returns warnings.

    Raises AuthError for a token that does not work, RemoteCheckError for missing ids. A 403 on
    a list endpoint (the token may not read it) is a warning, not a failure.
    """
    warnings: list[str] = []
    try:
        await client.whoami()
    except APIError as exc:
        if exc.status != 403:
            raise
        warnings.append("the token may not read /v3/self (ReadAccountMeta); skipped the check")
    cache: dict[str, set[str] | None] = {}
    problems: list[Problem] = []
    seen: set[tuple[str, str, str]] = set()
    for field_name, path, label in _REFERENCE_CHECKS:
        refs: dict[str, set[str]] = {}
        for s in plan.sessions:
            value = s.request.get(field_name)
            for ref in ([value] if isinstance(value, str) else value or []):
                refs.setdefault(ref, set()).add(s.fleet)
        if not refs:
            continue
        if path not in cache:
            cache[path] = await client.list_ids(path)
        have = cache[path]
        if have is None:
            warnings.append(f"the token may not list {path}: {label} ids not checked")
            continue
        for ref, fleets in sorted(refs.items()):
            if ref in have:
                continue
            for fleet in sorted(fleets):
                loc = _field_loc(plan, fleet, field_name)
                if (field_name, ref, str(loc)) in seen:
                    continue
                seen.add((field_name, ref, str(loc)))
                problems.append(plan.manifest.problem(loc, f"{label} {ref!r} does not exist in "
                                                      f"org {client.config.org_id}"))
    if problems:
        raise RemoteCheckError(problems)
    return warnings


def results_rows(view: CampaignView) -> list[dict[str, Any]]:
    """Flattened rows for CSV: item fields and structured-output fields as columns."""
    rows = []
    for s in view.sessions:
        row: dict[str, Any] = {"key": s.key}
        if isinstance(s.item, Mapping):
            row.update({f"item.{k}": v for k, v in s.item.items()})
        else:
            row["item"] = s.item
        row.update({"session_id": s.session_id or "", "url": s.url or "",
                    "outcome": s.outcome.value,
                    "pull_requests": " ".join(p.get("pr_url", "") for p in s.pull_requests),
                    "acus_consumed": "" if s.acus_consumed is None else s.acus_consumed,
                    "output_valid": "" if s.output_valid is None else s.output_valid})
        for k, v in _flatten(s.structured_output or {}, "output").items():
            row[k] = v
        rows.append(row)
    return rows


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}"))
        return out
    if isinstance(value, list):
        return {prefix: "; ".join(str(v) for v in value)}
    return {prefix: value}
