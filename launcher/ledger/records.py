"""The ledger's vocabulary, apart from any storage: launch states and the one table of their
transitions, the records a store hands out, the campaign lease as its holder knows it, and the
plan diff. No SQL here: every backend shares these (and so behaves the same)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

LOCK_TTL = 60.0  # seconds without a heartbeat after which a lock is stale
CANCELLED_OUTCOME = "cancelled"  # status.Outcome.cancelled's value (status imports the ledger)


class LaunchState(StrEnum):
    """Where a planned session stands in launching."""

    planned = "planned"  # not attempted yet (or every attempt surely created nothing)
    pending = "pending"  # an intent was committed; the outcome is not known yet (or crashed)
    created = "created"  # the API answered with a session
    adopted = "adopted"  # found by its identity tag (after an ambiguous attempt, or reconcile)
    refused = "refused"  # the API refused it (a 4xx): nothing was created
    gave_up = "gave_up"  # not sent (API unreachable) or 429s exhausted: surely nothing created
    unknown = "unknown"  # ambiguous attempts not resolved: looked up before anything is resent

    @property
    def launched(self) -> bool:
        return self in (LaunchState.created, LaunchState.adopted)

    @property
    def uncertain(self) -> bool:
        """A session may exist: the identity tag is looked up before anything is sent again."""
        return self in (LaunchState.pending, LaunchState.unknown)


class EventKind(StrEnum):
    """What one line of the attempt log says (the values are stored: never rename one)."""

    intent = "intent"  # about to send a create (durable before the request leaves)
    created = "created"  # the API answered with the session
    adopted = "adopted"  # the session was found by its identity tag
    not_sent = "not_sent"  # nothing reached the server (connect failure): safe to retry
    rate_limited = "rate_limited"  # 429: nothing created
    ambiguous = "ambiguous"  # timeout after sending, dropped connection, 5xx: may exist
    absent = "absent"  # looked up (twice, past the list lag): not there
    lookup_failed = "lookup_failed"  # the lookup itself failed: outcome unknown
    refused = "rejected"  # a 4xx: the API refused the create (stored as "rejected" since v1)
    gave_up = "gave_up"  # attempts or 429s exhausted, nothing created
    unresolved = "unresolved"  # ambiguous attempts exhausted: unknown until looked up
    auth = "auth"  # 401/403: the run stops, the key is untouched
    relaunch = "replace"  # a new attempt was recorded (`apply --relaunch`; stored value kept)
    cancelled = "cancelled"  # terminated by `cancel`
    duplicate = "duplicate"  # another live session carries this key's identity tag
    lock_lost = "lock_lost"  # this run lost the campaign lease: it stopped sending


# The one table of state transitions: the state an event kind moves its key to (None: none).
TRANSITIONS: dict[EventKind, LaunchState | None] = {
    EventKind.intent: LaunchState.pending,
    EventKind.created: LaunchState.created,
    EventKind.adopted: LaunchState.adopted,
    EventKind.not_sent: LaunchState.planned,
    EventKind.rate_limited: LaunchState.planned,
    EventKind.ambiguous: LaunchState.pending,
    EventKind.absent: LaunchState.planned,
    EventKind.lookup_failed: LaunchState.unknown,
    EventKind.refused: LaunchState.refused,
    EventKind.gave_up: LaunchState.gave_up,
    EventKind.unresolved: LaunchState.unknown,
    EventKind.auth: LaunchState.planned,
    EventKind.relaunch: LaunchState.planned,
    EventKind.cancelled: None,
    EventKind.duplicate: None,
    EventKind.lock_lost: None,
}
# A launched key leaves its state only through a relaunch: nothing else may move it (a late
# event about an earlier attempt is logged, and the row keeps what it knows).
_FROM_LAUNCHED = frozenset({EventKind.relaunch})
# Once a run has lost the campaign lease, only facts that a session exists are still written:
# anything else could overwrite the new holder's rows.
FACTS = frozenset({EventKind.created, EventKind.adopted, EventKind.lock_lost})
# A message's outcome never goes back from `sent` (a late or repeated intent must not make a
# delivered message look unsent: the next run would send it again).
MESSAGE_STATES = ("pending", "sent", "not_sent", "rejected")


def transition(current: LaunchState, kind: EventKind) -> LaunchState | None:
    """The state an event of `kind` moves a key in `current` to; None: the row stays as it is."""
    new = TRANSITIONS[kind]
    if new is None or (current.launched and kind not in _FROM_LAUNCHED):
        return None
    return new


class Change(StrEnum):
    """How the manifest differs from the ledger, per key (`plan` shows these)."""

    create = "+"  # to create
    same = "="  # already launched, unchanged
    changed = "~"  # launched, but the manifest changed since (`--relaunch changed` relaunches)
    gone = "-"  # in the ledger, gone from the manifest
    reconcile = "?"  # an earlier attempt's outcome is unknown: apply looks it up first


def _decoded(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    for name in ("pull_requests", "structured_output"):
        if isinstance(d.get(name), str):
            d[name] = json.loads(d[name])
    return d


@dataclass(frozen=True)
class Record:
    """One planned session as the ledger knows it."""

    key: str
    fleet: str
    fingerprint: str
    item_tag: str
    state: LaunchState
    session_id: str | None
    url: str | None
    attempts: int
    last_error: str | None
    created_at: float | None
    updated_at: float
    status: str | None = None
    status_detail: str | None = None
    outcome: str | None = None
    acus_consumed: float | None = None
    pull_requests: list[dict[str, Any]] | None = None
    structured_output: dict[str, Any] | None = None
    refreshed_at: float | None = None
    cancelled_at: float | None = None
    launch_attempt: int = 1  # the current attempt (`fleet-attempt:<n>` for n >= 2)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Record:
        d = _decoded(row)
        d["state"] = LaunchState(d["state"])
        return cls(**{k: v for k, v in d.items() if k != "campaign"})


@dataclass(frozen=True)
class LedgerEvent:
    """One line of the append-only attempt log; its kind decides the key's new state."""

    key: str
    kind: EventKind
    attempt: int | None = None
    http_status: int | None = None
    session_id: str | None = None
    fingerprint: str | None = None
    detail: str | None = None
    state: LaunchState | None = None  # derived from TRANSITIONS (a given one must agree)
    url: str | None = None
    launch_attempt: int | None = None  # which launch attempt of the key it is about

    def __post_init__(self) -> None:
        kind = EventKind(self.kind)
        object.__setattr__(self, "kind", kind)
        expected = TRANSITIONS[kind]
        if self.state is not None and self.state != expected:
            raise ValueError(f"a {kind.value!r} event moves a key to {expected}, not {self.state}")
        object.__setattr__(self, "state", expected)


@dataclass(frozen=True)
class LockLease:
    """The campaign lease as its holder knows it: the fencing generation it acquired."""

    generation: int
    ttl: float


@dataclass(frozen=True)
class LockHolder:
    """Who holds a campaign's lease, as the store records it (for messages and `unlock`)."""

    owner: str  # host:pid
    host: str
    pid: int
    acquired_at: float  # Unix seconds
    heartbeat_at: float
    generation: int


@dataclass(frozen=True)
class MessageRecord:
    """A message to one session, as the ledger knows it."""

    session_id: str
    digest: str
    key: str
    text: str
    state: str  # pending (intent recorded, outcome unknown), sent, not_sent, rejected
    detail: str | None
    intent_at: float
    sent_at: float | None


@dataclass(frozen=True)
class WaveDecision:
    """One rollout decision for a wave (1-based): passed, stopped, skipped, forced, timeout."""

    id: int
    wave: int
    at: float
    decision: str
    detail: str | None


@dataclass(frozen=True)
class AttemptRecord:
    """An earlier launch attempt of a key, as it stood when a relaunch superseded it."""

    key: str
    attempt: int
    session_id: str | None
    url: str | None
    fingerprint: str | None
    status: str | None
    status_detail: str | None
    outcome: str | None
    acus_consumed: float | None
    pull_requests: list[dict[str, Any]] | None
    structured_output: dict[str, Any] | None
    created_at: float | None
    superseded_at: float
    termination: str  # none (was not live), pending (to terminate first), done, kept
    request: str  # the relaunch request that superseded it: its selectors, sorted

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AttemptRecord:
        return cls(**{k: v for k, v in _decoded(row).items() if k != "campaign"})

    @property
    def pr_urls(self) -> list[str]:
        return [str(p.get("pr_url") or "") for p in self.pull_requests or [] if p.get("pr_url")]

    def previous(self) -> dict[str, Any]:
        """What prompt templates of the next attempt see as `previous`."""
        return {
            "attempt": self.attempt,
            "session_id": self.session_id,
            "url": self.url,
            "status": self.status,
            "status_detail": self.status_detail,
            "outcome": self.outcome,
            "structured_output": self.structured_output,
            "pull_requests": self.pr_urls,
        }


# ---------------------------------------------------------------------- what a plan hands in


class PlannedKey(Protocol):
    """What the ledger needs of a planned session (the plan's sessions are these): plain data,
    so the ledger does not depend on the planner."""

    @property
    def key(self) -> str: ...

    @property
    def fleet(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def identity_tag(self) -> str: ...

    @property
    def stored(self) -> Mapping[str, Any]:
        """The request as the ledger keeps it (no secret value, schema by digest)."""
        ...


class PlanLike(Protocol):
    """A plan as the ledger sees it: its sessions, in plan order."""

    @property
    def sessions(self) -> Sequence[PlannedKey]: ...


def plan_diff(plan: PlanLike, records: Mapping[str, Record]) -> list[tuple[Change, str, str]]:
    """Compare the plan with the ledger: (change, key, note) in plan order, then `-` rows."""
    out: list[tuple[Change, str, str]] = []
    for s in plan.sessions:
        r = records.get(s.key)
        if r is None or r.state == LaunchState.planned:
            out.append((Change.create, s.key, ""))
        elif r.state in (LaunchState.refused, LaunchState.gave_up):
            what = "refused" if r.state == LaunchState.refused else "gave up"
            out.append((Change.create, s.key, f"retry; last {what}: {r.last_error or '?'}"))
        elif r.state.uncertain:
            out.append((Change.reconcile, s.key, "outcome unknown: apply looks it up first"))
        elif r.fingerprint != s.fingerprint:
            out.append((Change.changed, s.key, r.session_id or ""))  # the hint: once, below
        else:
            out.append((Change.same, s.key, r.session_id or ""))
    keys = {s.key for s in plan.sessions}
    for key, r in records.items():
        if key not in keys and r.state != LaunchState.planned:
            out.append((Change.gone, key, r.session_id or r.state.value))
    return out


def dumps(value: Any) -> str | None:
    """A JSON column's text (None stays NULL)."""
    return None if value is None else json.dumps(value)
