"""Relaunch with lineage: a new *attempt* of selected keys, exactly once, never orphaning the
earlier one.

Identity of a launch = (campaign, key, attempt); attempt n >= 2 carries `fleet-attempt:<n>`.
The idempotency of `apply --relaunch SELECTOR` rests on one durable ledger write per key,
made before anything is sent: "key K: attempt n -> n+1" (`attempts.relaunch`), which keeps
attempt n whole in the ledger's `attempts` table and turns K's row into attempt n+1, planned.
From then on attempt n+1 is an ordinary planned launch of apply (intent before the create,
lookup by its identity tag and attempt tag after an ambiguous outcome or a crash, adoption by
the start-of-apply reconcile). A selector is evaluated against each key's *latest* attempt:
`failed` means the keys whose latest attempt is failed now, so the same command relaunches
again the keys whose new attempt failed too, as often as needed. A key whose latest attempt
is a relaunch not created or not final yet is "already relaunched": reported and left alone,
so re-running the command while the new attempts are live creates nothing. A key glob names
keys rather than a state: a key whose latest attempt the same request (its selectors,
recorded with it) created is left alone too, final or not.

The earlier attempt is terminated first when it is live (the termination is recorded as
pending in the same write, and done before any attempt n+1 is created, also by a re-run after
a crash), unless the user keeps it. A relaunched request links the earlier session through
`session_links`, and its templates see `previous`; its fingerprint stays the manifest
entry's (the plain plan's), so `plan` shows `=` once it is launched.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from launcher.api.client import DevinClient
from launcher.errors import APIError, AuthError, FleetError, SelectorError
from launcher.ledger.attempts import AttemptRecord, attempt_history, relaunch, set_termination
from launcher.ledger.store import Ledger, Record, off_loop
from launcher.run.budget import check_relaunch
from launcher.run.reconcile import ENDED
from launcher.run.status import CampaignView, Outcome, SessionView
from launcher.spec.build import build_plan
from launcher.spec.identity import stamp
from launcher.spec.plan import Plan

OUTCOME_SELECTORS = {
    "failed": Outcome.failed,
    "needs-human": Outcome.needs_human,
    "cancelled": Outcome.cancelled,
}
CHANGED = "changed"


@dataclass(frozen=True)
class Pick:
    """A key to relaunch: its latest attempt as it stands."""

    key: str
    attempt: int  # the attempt being superseded (the new one is attempt + 1)
    outcome: Outcome
    session_id: str | None
    live: bool  # still running or waiting: terminated first unless kept
    pr_urls: tuple[str, ...]


@dataclass
class Selection:
    """What `--relaunch` selected, and what it left alone and why."""

    request: str = ""  # the selectors, sorted: what makes a re-run of the same command a no-op
    picks: list[Pick] = field(default_factory=list)
    already: dict[str, int] = field(default_factory=dict)  # key -> its relaunch attempt in progress
    not_launched: list[str] = field(default_factory=list)  # plain apply launches these

    def to_json(self, keep: bool) -> dict[str, Any]:
        live = [p.key for p in self.picks if p.live]
        return {
            "request": self.request,
            "new_attempts": {p.key: p.attempt + 1 for p in self.picks},
            "terminated_first": [] if keep else live,
            "kept_running": live if keep else [],
            "succeeded_relaunched": {
                p.key: list(p.pr_urls) for p in self.picks if p.outcome == Outcome.succeeded
            },
            "already_relaunched": self.already,
            "not_launched": self.not_launched,
        }

    def question(self, todo: int, keep: bool) -> str:
        """The confirmation's first words ("" when there is nothing to do, so nothing to ask)."""
        parts = []
        if self.picks:
            text = f"Relaunch {len(self.picks)} key(s) as new attempts"
            live = sum(1 for p in self.picks if p.live)
            if live:
                text += f" ({'keeping' if keep else 'terminating'} {live} earlier live session(s)"
                text += " running)" if keep else " first)"
            parts.append(text)
        if todo:
            parts.append(f"{'launch' if parts else 'Launch'} up to {todo} session(s) not launched yet")
        return ", and ".join(parts)

    def describe(self, keep: bool) -> list[str]:
        """The confirmation: exactly what will happen."""
        lines = [f"relaunch: {len(self.picks)} new attempt(s)"]
        live = [p for p in self.picks if p.live]
        if live:
            what = "kept running (--keep-previous)" if keep else "terminated first"
            lines.append(f"  {len(live)} earlier live session(s) {what}: " + _few(p.key for p in live))
        for p in self.picks:
            if p.outcome == Outcome.succeeded:
                prs = ", ".join(p.pr_urls) or "no pull request"
                lines.append(
                    f"  {p.key}: attempt {p.attempt} SUCCEEDED ({prs}); attempt {p.attempt + 1} "
                    "replaces it as the key's latest (its PR stays listed by `results --history`)"
                )
        if self.already:
            lines.append(
                f"  already relaunched, not again: {len(self.already)} key(s) whose new "
                "attempt is not final yet (or, for a key glob, was made by this same command): "
                + _few(self.already)
            )
        if self.not_launched:
            lines.append(
                f"  not launched yet (apply launches them as attempt 1): {_few(self.not_launched)}"
            )
        return lines


def _few(keys: Iterable[str], n: int = 5) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _nothing_is(selector: str, campaign: str) -> SelectorError:
    return SelectorError(
        f"{selector}: no session of campaign {campaign} is {selector} "
        "(by the latest status); nothing to relaunch",
        hint="`devin-fleet status MANIFEST` shows each key's outcome",
    )


def select_relaunch(
    plan: Plan, view: CampaignView, ledger: Ledger, selectors: Iterable[str]
) -> Selection:
    """Resolve selectors (outcomes, `changed`, key globs) against each key's latest attempt.
    Raises SelectorError for a selector that matches no key at all, ManifestError when the new
    attempts would pass the campaign budget (every attempt counts)."""
    records = ledger.records()
    views = {v.key: v for v in view.sessions if v.in_plan}
    planned = plan.by_key()
    history = {(a.key, a.attempt): a for a in attempt_history(ledger)}
    request = " ".join(sorted(set(selectors)))
    # In progress: the key's latest attempt is a relaunch not created yet, or not final. It is
    # left alone whatever selected it, and reported (matched by what its earlier attempt was),
    # so a re-run while the new attempts are live creates nothing.
    progress = {
        k: a
        for k, r in records.items()
        if k in planned
        and (a := history.get((k, r.launch_attempt - 1))) is not None
        and _in_progress(r, views.get(k))
    }
    # A key glob names keys, not a state: a key whose latest attempt this same request created
    # is not relaunched again by re-running the command (also after a crash), final or not.
    same = {
        k
        for k, r in records.items()
        if (a := history.get((k, r.launch_attempt - 1))) is not None and a.request == request
    }
    matched: dict[str, bool] = {}  # key -> selected by a key glob (else by its state)
    for sel in selectors:
        if sel in OUTCOME_SELECTORS:
            # the keys whose latest attempt is in that outcome now
            keys = [k for k, v in views.items() if v.outcome == OUTCOME_SELECTORS[sel]]
            keys += [k for k, a in progress.items() if a.outcome == sel]
        elif sel == CHANGED:
            keys = [
                k
                for k, r in records.items()
                if k in planned and r.state.launched and r.fingerprint != planned[k].fingerprint
            ]
            keys += [k for k, a in progress.items() if a.fingerprint != planned[k].fingerprint]
        else:
            keys = [k for k in planned if fnmatch.fnmatchcase(k, sel)]
            if not keys:
                raise SelectorError(
                    f"{sel!r}: no key of campaign {plan.campaign} matches it",
                    hint="a selector is failed, needs-human, cancelled, changed, or a key glob; "
                    f"keys look like {_few(planned, 3)} (`devin-fleet status` lists them)",
                )
        if (sel in OUTCOME_SELECTORS or sel == CHANGED) and not keys:
            raise _nothing_is(sel, plan.campaign)
        for k in keys:
            matched[k] = matched.get(k, False) or sel not in (*OUTCOME_SELECTORS, CHANGED)
    out = Selection(request)
    for key in planned:
        if key not in matched:
            continue
        r, v = records.get(key), views.get(key)
        if r is None or v is None:
            out.not_launched.append(key)
        elif key in progress or _in_progress(r, v) or (matched[key] and key in same):
            out.already[key] = r.launch_attempt
        elif not r.state.launched:
            out.not_launched.append(key)
        else:
            out.picks.append(
                Pick(
                    key,
                    r.launch_attempt,
                    v.outcome,
                    r.session_id,
                    v.status not in ENDED and v.outcome not in (Outcome.cancelled,),
                    tuple(v.pr_urls),
                )
            )
    check_relaunch(plan, ledger, [p.key for p in out.picks])  # before anything is recorded or sent
    return out


def _in_progress(r: Record, v: SessionView | None) -> bool:
    """A relaunch already asked for: the key's latest attempt (>= 2) is not created yet, or
    is not final."""
    if r.launch_attempt < 2:
        return False
    if not r.state.launched:
        return True
    return v is not None and not v.outcome.final


def record(ledger: Ledger, selection: Selection, *, keep: bool) -> None:
    """The durable relaunch requests, one transaction per key, before anything is sent. A key
    another run relaunched since it was selected is moved to `already`, not relaunched again."""
    for p in list(selection.picks):
        n = relaunch(
            ledger, p.key, live=p.live, keep=keep, request=selection.request, expected=p.attempt
        )
        if n is None:
            selection.picks.remove(p)
            selection.already[p.key] = p.attempt + 1


def kept(ledger: Ledger, only: Iterable[str] = ()) -> list[AttemptRecord]:
    """Earlier attempts left running by `--keep-previous` (matching the `only` globs)."""
    globs = list(only)
    return [
        a
        for a in attempt_history(ledger)
        if a.termination == "kept" and (not globs or any(fnmatch.fnmatchcase(a.key, g) for g in globs))
    ]


async def terminate_previous(
    client: DevinClient, ledger: Ledger, which: Iterable[AttemptRecord] | None = None
) -> int:
    """End every earlier attempt whose termination is pending (a re-run after a crash finishes
    what the crashed run recorded), or those in `which` (`cancel --earlier`). Raises when one
    could not be ended: nothing new may start while its predecessor runs unrecorded. Returns
    how many were ended."""
    done = 0
    chosen = which if which is not None else await off_loop(attempt_history, ledger)
    for a in chosen:
        if which is None and a.termination != "pending":
            continue
        if a.session_id:
            try:
                await client.terminate(a.session_id)
            except AuthError:
                raise
            except APIError as exc:
                raise FleetError(
                    f"could not terminate {a.key}'s attempt {a.attempt} ({a.session_id}): {exc.message}",
                    hint="nothing new was created for it; re-run to try again",
                ) from None
        await off_loop(set_termination, ledger, a.key, a.attempt, "done")
        done += 1
    return done


def attempt_plan(plan: Plan, ledger: Ledger, environ: Mapping[str, str] | None = None) -> Plan:
    """The plan with each key at its ledger's current attempt: a relaunched key's request is
    rendered with `previous`, links the earlier session, carries `fleet-attempt:<n>`, and
    keeps the manifest entry's fingerprint (the plain plan's)."""
    records = ledger.records()
    history: dict[tuple[str, int], AttemptRecord] = {
        (a.key, a.attempt): a for a in attempt_history(ledger)
    }
    current = {
        k: (r.launch_attempt, history.get((k, r.launch_attempt - 1)))
        for k, r in records.items()
        if r.launch_attempt >= 2
    }
    if not current:
        return plan
    previous = {k: a.previous() for k, (_, a) in current.items() if a is not None}
    rendered = build_plan(plan.manifest, environ=environ, previous=previous).by_key()
    sessions = []
    for s in plan.sessions:
        if s.key not in current:
            sessions.append(s)
            continue
        n, before = current[s.key]
        mode = plan.manifest.manifest.identity
        request = stamp(dict(rendered[s.key].request), mode, s.identity_tag, s.fingerprint, n)
        if before is not None and before.session_id:
            links = list(request.get("session_links") or [])
            request["session_links"] = list(dict.fromkeys([*links, before.session_id]))
        sessions.append(dataclasses.replace(s, request=request, attempt=n))
    return dataclasses.replace(plan, sessions=tuple(sessions))
