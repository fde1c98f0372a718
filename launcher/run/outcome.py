"""Outcomes: what each session of a campaign came to, judged from the ledger (as the last
refresh stored it), and the views of the campaign built from them.

Outcome rules (what users act on), from the API's status and status_detail, where "delivered"
means the session has a pull request, or a structured output valid against its fleet's schema
(or any output when the fleet has no schema):
- `succeeded`: running/finished; or delivered while waiting for the user (running/
  waiting_for_user), idle (suspended for inactivity, user_request or an unknown reason) or exited.
  A session whose output breaks the schema but which opened a pull request is `succeeded` (the
  PR is the deliverable); its output is still flagged invalid by `results` (output_valid false).
- `needs-human`: waiting for the user or idle-suspended with nothing delivered, or waiting for
  approval (always: the session is blocked on a gate, whatever it delivered so far).
- `failed`: status `error`, or suspended for a limit, credit, quota, payment or error reason
  (SUSPEND_FAILURES); also a session whose create the API refused (ledger state `failed`), and a
  launched session the API no longer knows (404).
- `cancelled`: terminated by `devin-fleet cancel`, or exited without delivering.
- `running`: new, claimed, working, resuming, not refreshed yet, and any status value the API
  adds later (unknown values never crash: they keep `status --watch` polling until its timeout).
- The manifest's success rule (`success_when`), when it has one, then decides between
  `succeeded` and `failed` for every session the rules above call `succeeded`: a session whose
  output does not meet it (or on which it fails to evaluate) is `failed`, with the rule as reason.
- `not-launched`: planned but never created, or its create's outcome is still unknown (apply
  reconciles it): final for `--watch`, counted as unfinished (exit 4) by `status`.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from launcher.api.models import Session, output_errors
from launcher.errors import ExitCode
from launcher.ledger.attempts import attempt_history
from launcher.ledger.store import LaunchState, Ledger, Record
from launcher.spec.plan import Plan
from launcher.spec.templating import Rule, TemplateFailure

SUSPEND_FAILURES = frozenset(
    {
        "usage_limit_exceeded",
        "out_of_credits",
        "out_of_quota",
        "no_quota_allocation",
        "payment_declined",
        "org_usage_limit_exceeded",
        "total_session_limit_exceeded",
        "error",
        "user_usage_limit_exceeded",
        "contract_expired",
    }
)
RULE_NOT_MET = "success rule not met"  # the reason; the rule itself is in the manifest


class Outcome(StrEnum):
    succeeded = "succeeded"
    needs_human = "needs-human"
    failed = "failed"
    running = "running"
    cancelled = "cancelled"
    not_launched = "not-launched"

    @property
    def final(self) -> bool:
        """Whether polling can still change it (`status --watch` stops when all are final)."""
        return self is not Outcome.running

    @property
    def rank(self) -> int:
        """Where it sorts when a person reads the fleet: what needs attention first."""
        return ATTENTION.index(self)


# What a reader acts on first: failures, sessions waiting for a person, those still on their
# way; the settled ones last.
ATTENTION: tuple[Outcome, ...] = (Outcome.failed, Outcome.needs_human, Outcome.running)
ATTENTION += (Outcome.not_launched, Outcome.cancelled, Outcome.succeeded)


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


def classify(
    status: str | None, detail: str | None, *, delivered: bool, cancelled: bool = False
) -> Outcome:
    """The outcome of one session (rules in the module docstring); never raises."""
    if cancelled:
        return Outcome.cancelled
    if status == "error":
        return Outcome.failed
    if status == "exit":
        return Outcome.succeeded if delivered else Outcome.cancelled
    if status == "suspended":
        if detail in SUSPEND_FAILURES:
            return Outcome.failed
        # inactivity, user_request, or a reason added later: it waits for a human to resume it
        return Outcome.succeeded if delivered else Outcome.needs_human
    if status == "running":
        if detail == "finished":
            return Outcome.succeeded
        if detail == "waiting_for_user":
            return Outcome.succeeded if delivered else Outcome.needs_human
        if detail == "waiting_for_approval":
            return Outcome.needs_human
    return Outcome.running


@dataclass
class SessionView:
    """One session of the campaign as status/results show it."""

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
    note: str | None = None  # why it was not launched, or why its state may be stale
    in_plan: bool = True  # False: launched earlier, since removed from the manifest
    attempts: int = 0  # create attempts the ledger recorded
    rule_note: str | None = None  # why the success rule made a delivered session `failed`
    attempt: int = 1  # the launch attempt (a relaunch makes a new one)
    latest: bool = True  # False: an earlier attempt, superseded by a relaunch (results --history)

    @property
    def reason(self) -> str:
        """Why the session stands where it does: the rule, the API's refusal, or status_detail."""
        if self.rule_note:
            return self.rule_note
        if self.outcome is Outcome.succeeded:  # "waiting_for_user" reads as a problem: it is not
            return ""
        if self.outcome in (Outcome.failed, Outcome.not_launched) and self.note:
            return self.note
        if self.status_detail:
            return self.status_detail
        return self.status or "" if self.outcome is Outcome.failed else ""

    @property
    def pr_urls(self) -> list[str]:
        return [str(p.get("pr_url") or "") for p in self.pull_requests if p.get("pr_url")]

    def status_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "attempt": self.attempt,
            "session_id": self.session_id,
            "url": self.url,
            "status": self.status,
            "status_detail": self.status_detail,
            "outcome": self.outcome.value,
            "pull_requests": self.pull_requests,
            "acus_consumed": self.acus_consumed,
            "structured_output": self.structured_output,
        }

    def result_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "item": self.item,
            "session_id": self.session_id,
            "url": self.url,
            "outcome": self.outcome.value,
            "pull_requests": self.pr_urls,
            "acus_consumed": self.acus_consumed,
            "structured_output": self.structured_output,
            "output_valid": self.output_valid,
            "output_errors": self.output_errors,
        }


@dataclass
class CampaignView:
    """Every session of a campaign (planned, plus launched ones since removed), with the ledger."""

    campaign: str
    sessions: list[SessionView]
    budget_acu: int | None = None
    requests: int = 0  # API requests the refresh that built this view made
    untracked: list[str] = field(default_factory=list)  # campaign-tagged, not in the ledger
    strays: list[Session] = field(default_factory=list)  # live, campaign tag, no planned key
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # key -> live ids, earliest 1st
    warnings: list[str] = field(default_factory=list)
    timed_out: bool = False  # `watch` gave up before every outcome was final

    def counts(self) -> dict[str, int]:
        c = Counter(s.outcome.value for s in self.sessions)
        return {o.value: c.get(o.value, 0) for o in Outcome}

    @property
    def settled(self) -> bool:
        return all(s.outcome.final for s in self.sessions)

    @property
    def exit_code(self) -> ExitCode:
        """8 a watch timed out with sessions still running; else 3 some failed; 6 some need a
        human; 4 some still running or not launched yet; 0 all succeeded/cancelled."""
        if self.timed_out:
            return ExitCode.wait_timeout
        c = self.counts()
        if c[Outcome.failed]:
            return ExitCode.failed
        if c[Outcome.needs_human]:
            return ExitCode.needs_human
        if c[Outcome.running] or c[Outcome.not_launched]:
            return ExitCode.unfinished
        return ExitCode.ok

    def totals(self) -> dict[str, Any]:
        final = [s for s in self.sessions if s.session_id and s.outcome.final]
        return {
            "sessions": len(self.sessions),
            "succeeded": sum(1 for s in self.sessions if s.outcome == Outcome.succeeded),
            "pull_requests": sum(len(s.pr_urls) for s in self.sessions),
            "acus_consumed": round(sum(s.acus_consumed or 0 for s in self.sessions), 2),
            "max_total_acu": self.budget_acu,
            "invalid_outputs": sum(1 for s in final if s.output_valid is False),
        }

    def status_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "counts": self.counts(),
            "totals": self.totals(),
            "sessions": [s.status_json() for s in self.sessions],
            "strays": [
                {"session_id": x.session_id, "url": x.url, "status": x.status, "tags": x.tags}
                for x in self.strays
            ],
            "duplicates": self.duplicates,
        }

    def group_by(self, path: str) -> dict[str, int]:
        """Counts per value of a structured-output field (dotted path) across the fleet."""
        counts: Counter[str] = Counter()
        for s in self.sessions:
            value: Any = s.structured_output
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            label = (
                "(missing)"
                if value is None
                else value
                if isinstance(value, str)
                else json.dumps(value, sort_keys=True, ensure_ascii=False)
            )
            counts[label] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _session_view(
    plan: Plan, key: str, fleet: str, item: Any, r: Record | None, in_plan: bool = True
) -> SessionView:
    if r is None or not r.state.launched:
        failed = r is not None and r.state == LaunchState.refused
        if failed:
            note = f"the API refused the create: {r.last_error}" if r and r.last_error else None
        elif r is not None and r.state.uncertain:
            note = "create outcome unknown: apply looks it up"
        elif r is not None and r.state == LaunchState.gave_up:
            note = f"apply gave up (nothing created): {r.last_error or '?'}; re-run apply"
        else:
            note = "not launched yet"
        return SessionView(
            key,
            fleet,
            item,
            None,
            None,
            None,
            None,
            Outcome.failed if failed else Outcome.not_launched,
            [],
            None,
            None,
            None,
            note=note,
            in_plan=in_plan,
            attempts=r.attempts if r is not None else 0,
            attempt=r.launch_attempt if r is not None else 1,
        )
    schema = plan.schemas.get(fleet)
    prs = r.pull_requests or []
    valid, errors = output_check(schema, r.structured_output)
    delivered = bool(prs) or valid is True or (schema is None and r.structured_output is not None)
    # A cancellation older than the launch was of a session since replaced (`apply --replace`):
    # the ledger keeps cancelled_at across a relaunch, so compare the times.
    cancelled = r.cancelled_at is not None and (r.created_at is None or r.cancelled_at >= r.created_at)
    outcome = classify(r.status, r.status_detail, delivered=delivered, cancelled=cancelled)
    rule, rule_note = plan.rules.get(fleet), None
    if rule is not None and outcome is Outcome.succeeded:
        outcome, rule_note = _judge(rule, r, item)
    return SessionView(
        key,
        fleet,
        item,
        r.session_id,
        r.url,
        r.status,
        r.status_detail,
        outcome,
        prs,
        r.acus_consumed,
        r.structured_output,
        valid,
        errors,
        in_plan=in_plan,
        attempts=r.attempts,
        rule_note=rule_note,
        attempt=r.launch_attempt,
    )


def _judge(rule: Rule, r: Record, item: Any) -> tuple[Outcome, str | None]:
    """The success rule's verdict on a session the default rules call succeeded."""
    values = {
        "output": r.structured_output,
        "pull_requests": r.pull_requests or [],
        "status": r.status,
        "status_detail": r.status_detail,
        "item": item,
    }
    try:
        met = rule.evaluate(values)
    except TemplateFailure as exc:
        return Outcome.failed, exc.message
    return (Outcome.succeeded, None) if met else (Outcome.failed, RULE_NOT_MET)


def _build_view(plan: Plan, records: Mapping[str, Record]) -> CampaignView:
    views = [_session_view(plan, s.key, s.fleet, s.item, records.get(s.key)) for s in plan.sessions]
    planned = {s.key for s in plan.sessions}
    views += [
        _session_view(plan, k, r.fleet, None, r, in_plan=False)
        for k, r in records.items()
        if k not in planned and r.state.launched
    ]
    return CampaignView(plan.campaign, views, plan.manifest.manifest.budget.max_total_acu)


def history_views(plan: Plan, ledger: Ledger) -> dict[str, list[SessionView]]:
    """Every earlier attempt (superseded by a relaunch) as it stood then, by key, oldest first:
    `results --history` lists them, so no pull request of an earlier attempt is lost."""
    items = {s.key: s.item for s in plan.sessions}
    out: dict[str, list[SessionView]] = {}
    for a in attempt_history(ledger):
        prs = a.pull_requests or []
        outcome = (
            Outcome(a.outcome)
            if a.outcome in {o.value for o in Outcome}
            else classify(a.status, a.status_detail, delivered=bool(prs))
        )
        view = SessionView(
            a.key,
            "",
            items.get(a.key),
            a.session_id,
            a.url,
            a.status,
            a.status_detail,
            outcome,
            prs,
            a.acus_consumed,
            a.structured_output,
            None,
            note=f"superseded by attempt {a.attempt + 1}",
            attempt=a.attempt,
            latest=False,
        )
        out.setdefault(a.key, []).append(view)
    return out


def campaign_view(plan: Plan, ledger: Ledger) -> CampaignView:
    """Join the plan with what the ledger knows (no network)."""
    return _build_view(plan, ledger.records())


def restrict(view: CampaignView, keys: Collection[str] | None) -> CampaignView:
    """The view of only `keys` (None: every planned session; removed ones are not followed)."""
    return dataclasses.replace(
        view,
        sessions=[s for s in view.sessions if (s.key in keys if keys is not None else s.in_plan)],
    )
