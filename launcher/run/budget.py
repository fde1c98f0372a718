"""The campaign budget as spent: every session the campaign launches counts, relaunched attempts
included, and so does each one's ACU cap; a relaunch that would pass the budget is refused
before anything is sent, at the budget's manifest line."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from launcher.errors import ManifestError
from launcher.ledger.attempts import attempt_history
from launcher.ledger.store import Ledger
from launcher.spec.plan import Plan


@dataclass(frozen=True)
class BudgetUse:
    """Sessions and ACU caps the campaign has launched, and what the plan still would."""

    launched: int  # sessions created or adopted, every attempt
    relaunched: int  # of which attempts >= 2 (and earlier attempts they superseded)
    launched_acu: int  # the sum of their max_acu_limit caps
    to_launch: int  # planned keys not launched yet
    to_launch_acu: int
    max_sessions: int | None
    max_total_acu: int | None

    @property
    def sessions(self) -> int:
        return self.launched + self.to_launch

    @property
    def acu(self) -> int:
        return self.launched_acu + self.to_launch_acu

    def to_json(self) -> dict[str, Any]:
        return {
            "launched": self.launched,
            "relaunched": self.relaunched,
            "launched_acu": self.launched_acu,
            "to_launch": self.to_launch,
            "to_launch_acu": self.to_launch_acu,
            "max_sessions": self.max_sessions,
            "max_total_acu": self.max_total_acu,
        }

    def line(self) -> str:
        """`budget: 4 sessions launched (2 relaunches) + 0 to launch / 2; ACU caps 8 / 4`."""
        cap = f" / {self.max_sessions}" if self.max_sessions else ""
        again = f" ({self.relaunched} by relaunches)" if self.relaunched else ""
        text = f"budget: {self.launched} session(s) launched{again} + {self.to_launch} to launch{cap}"
        acu = f" / {self.max_total_acu}" if self.max_total_acu else ""
        return text + f"; ACU caps {self.launched_acu} launched + {self.to_launch_acu} to launch{acu}"


def budget_use(plan: Plan, ledger: Ledger) -> BudgetUse:
    """What the campaign has spent (the ledger: current and earlier attempts) and would spend."""
    caps = {s.key: int(s.request.get("max_acu_limit") or 0) for s in plan.sessions}
    launched = relaunched = launched_acu = to_launch = to_launch_acu = 0
    for r in ledger.records().values():
        if r.state.launched:
            launched += 1
            launched_acu += caps.get(r.key, 0)
            relaunched += r.launch_attempt >= 2
        elif r.key in caps:
            to_launch += 1
            to_launch_acu += caps[r.key]
    for a in attempt_history(ledger):
        if a.session_id:
            launched += 1
            launched_acu += caps.get(a.key, 0)
            relaunched += a.attempt >= 2
    seen = set(ledger.records())
    for s in plan.sessions:  # keys the ledger has no row for yet
        if s.key not in seen:
            to_launch += 1
            to_launch_acu += caps[s.key]
    budget = plan.manifest.manifest.budget
    return BudgetUse(
        launched,
        relaunched,
        launched_acu,
        to_launch,
        to_launch_acu,
        budget.max_sessions,
        budget.max_total_acu,
    )


def check_relaunch(plan: Plan, ledger: Ledger, keys: Iterable[str] = ()) -> None:
    """Raise ManifestError (at the budget line) when relaunching `keys` (none: launching what
    the plan has left, e.g. items added after relaunches) would take the campaign past
    `budget.max_sessions` or `budget.max_total_acu`, counting every attempt launched."""
    keys = list(keys)
    use = budget_use(plan, ledger)
    if not keys and not use.relaunched:
        return  # attempt 1 of each item: the plan-time check already covers it
    caps = {s.key: int(s.request.get("max_acu_limit") or 0) for s in plan.sessions}
    extra_acu = sum(caps.get(k, 0) for k in keys)
    problems = []
    doing = f"relaunching {len(keys)} key(s)" if keys else "launching the rest of the plan"
    if use.max_sessions is not None and use.sessions + len(keys) > use.max_sessions:
        problems.append(
            plan.manifest.problem(
                ("budget", "max_sessions"),
                f"{doing} would make {use.sessions + len(keys)} sessions "
                f"({use.launched} launched, {use.to_launch} still to launch, {len(keys)} new "
                f"attempts); the budget allows {use.max_sessions}. Nothing was sent",
                "every attempt counts: raise budget.max_sessions, or relaunch fewer keys (a key glob)",
            )
        )
    if use.max_total_acu is not None and use.acu + extra_acu > use.max_total_acu:
        problems.append(
            plan.manifest.problem(
                ("budget", "max_total_acu"),
                f"{doing} would commit {use.acu + extra_acu} ACUs "
                f"({use.launched_acu} launched, {use.to_launch_acu} still to launch, {extra_acu} "
                f"new); the budget allows {use.max_total_acu}. Nothing was sent",
                "every attempt's max_acu_limit counts: raise budget.max_total_acu, or relaunch "
                "fewer keys",
            )
        )
    if problems:
        raise ManifestError(problems)
