"""What an apply run did: one `Result` per planned session, and the run's `ApplySummary`
(its counts, its exit code, its JSON for `apply -o json`); where it reports as it goes (a
`Reporter`), and the gate in front of each launch (an `Admission`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import anyio

from launcher.errors import ExitCode, FleetError


class Result(StrEnum):
    """What this run did for one planned session."""

    created = "created"
    adopted = "adopted"  # found by its identity tag after an ambiguous attempt or a crash
    failed = "failed"  # refused by the API (a 4xx): nothing was created
    gave_up = "gave_up"  # not sent (API unreachable) or 429s exhausted: nothing was created
    unknown = "unknown"  # ambiguous and not resolvable now: the next run looks again
    not_started = "not_started"  # stopped (Ctrl-C, breaker, auth) before it was sent


@dataclass
class ApplySummary:
    """The outcome of one apply run."""

    campaign: str
    planned: int
    already: int = 0  # launched before this run, unchanged
    changed: list[str] = field(default_factory=list)  # launched, manifest changed, not relaunched
    results: dict[str, Result] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # key -> why it failed / is unknown
    interrupted: bool = False
    aborted: FleetError | None = None
    elapsed: float = 0.0
    requests: int = 0
    rate_limited: int = 0
    final_rate: float = 0.0
    reconciled: int = 0  # planned keys found existing by the start-of-apply reconcile
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # key -> live session ids
    strays: int = 0  # campaign-tagged sessions matching no planned key
    observed_lag: float | None = None  # list lag measured in this run (seconds)

    def count(self, result: Result) -> int:
        return sum(1 for r in self.results.values() if r == result)

    @property
    def exit_code(self) -> ExitCode:
        if self.aborted is not None:
            return self.aborted.exit_code
        if self.interrupted:
            return ExitCode.interrupted
        if self.count(Result.unknown) or self.count(Result.not_started) or self.count(Result.gave_up):
            return ExitCode.unfinished  # not done yet: re-run to reconcile and resume
        if self.count(Result.failed):
            return ExitCode.failed
        return ExitCode.ok

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "planned": self.planned,
            "already_launched": self.already,
            "changed_not_relaunched": self.changed,
            "counts": {r.value: self.count(r) for r in Result},
            "failed": {k: self.errors.get(k, "") for k, r in self.results.items() if r == Result.failed},
            "unknown": {
                k: self.errors.get(k, "") for k, r in self.results.items() if r == Result.unknown
            },
            "interrupted": self.interrupted,
            "aborted": self.aborted.message if self.aborted else None,
            "elapsed_s": round(self.elapsed, 3),
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "final_rate": round(self.final_rate, 2),
            "reconciled": self.reconciled,
            "duplicates": self.duplicates,
            "strays": self.strays,
            "observed_lag_s": None if self.observed_lag is None else round(self.observed_lag, 3),
            "exit_code": int(self.exit_code),
        }


class Reporter(Protocol):
    """Where the executor reports progress (the CLI draws it; tests may collect it)."""

    def start(self, total: int) -> None: ...

    def advance(self, key: str, result: Result) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self) -> None: ...


class Admission(Protocol):
    """A gate in front of every launch (e.g. a ceiling on running sessions): the producer awaits
    `admit` before handing a session to a worker; `done` hears how each admitted one ended."""

    async def admit(self, key: str, stop: anyio.Event) -> bool:
        """Wait until `key` may launch; False when `stop` was set first (nothing launches)."""
        ...

    def done(self, key: str, result: Result) -> None: ...


class NullReporter:
    def start(self, total: int) -> None:
        pass

    def advance(self, key: str, result: Result) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
