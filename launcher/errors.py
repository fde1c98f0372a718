"""The error tree of devin-fleet: every error a user can see, with its context and a hint.

    FleetError                      base: message + hint, exit code 1
    ├── ManifestError               one or more Problems (file:line:col: field: message)
    ├── ConfigError                 missing/invalid settings (API key, org id, base URL, flags)
    ├── SecretError                 a session secret's environment variable is not set
    ├── LedgerError                 the ledger cannot be opened, read, written or migrated
    │   ├── LockedError             another apply holds the campaign lock
    │   └── LockLostError           this apply lost the campaign lock mid-run (exit 7)
    ├── APIError                    a run-level failure talking to the API (exit 1)
    │   ├── AuthError               401/403: every request would fail the same way (exit 5)
    │   └── CircuitOpenError        too many consecutive ambiguous/5xx outcomes (exit 5)
    ├── RemoteCheckError            referenced ids (secrets, playbooks, knowledge) do not exist
    └── ConfirmationError           apply/cancel needs --yes when stdin is not a terminal

A failed *session* is data (recorded in the ledger), never one of these: only run-level
conditions raise. The CLI renders these without a traceback unless --debug.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExitCode(IntEnum):
    """Every exit code devin-fleet uses; the README's table is checked against this."""

    meaning: str

    def __new__(cls, value: int, meaning: str) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member

    ok = 0, "success (apply: every selected session launched; status: all succeeded)"
    error = 1, "error: invalid manifest, configuration, ledger, unreachable API, or remote check"
    changes = 2, "`plan --detailed-exitcode`: changes pending"
    failed = 3, "some sessions failed (apply: refused by the API; status: failed outcomes)"
    unfinished = (
        4,
        (
            "apply: some sessions not launched yet (outcome unknown, gave up on an unreachable "
            "API or a 429 storm, or stopped by `--timeout`): re-run to resume; status: some "
            "still running or not launched"
        ),
    )
    aborted = 5, "aborted: bad credentials (401/403) or the circuit breaker opened"
    needs_human = 6, "status: some sessions need a human"
    lock_lost = (
        7,
        "apply: this run lost the campaign lock (paused past the lease, or taken over by "
        "another apply): it stopped sending at once; re-run when the other is done",
    )
    usage = 64, "usage error (bad command-line options)"
    interrupted = 130, "interrupted (Ctrl-C); re-run to resume"


class FleetError(Exception):
    """Base of every error devin-fleet reports to a user."""

    exit_code: ExitCode = ExitCode.error

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest, located as precisely as we can."""

    file: str
    line: int | None
    col: int | None
    field: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        head = f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        if self.hint:
            head += f" (hint: {self.hint})"
        return head


class ManifestError(FleetError):
    """A manifest (or a file it references) is invalid; nothing was sent."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the manifest; nothing was sent")

    def render(self) -> str:
        lines = [p.render() for p in self.problems]
        lines.append(f"error: {self.message}")
        return "\n".join(lines)


class ConfigError(FleetError):
    """A setting is missing or invalid (API key, org id, base URL, option values)."""


class SecretError(FleetError):
    """Session secrets reference environment variables that are not set."""

    def __init__(self, names: list[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(
            "environment variable(s) for session secrets not set: " + ", ".join(self.names),
            hint="export them before apply; their values are never written anywhere",
        )


class LedgerError(FleetError):
    """The ledger cannot be opened, read, written or migrated."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.path = path


class LockedError(LedgerError):
    """Another process holds the campaign's lock."""

    def __init__(self, campaign: str, owner: str, since: float, path: str) -> None:
        super().__init__(
            f"campaign {campaign!r} is locked by {owner} (since {since:.0f})",
            path=path,
            hint=f"wait for it to finish; if that process is gone, run "
            f"`devin-fleet unlock MANIFEST` (ledger {path})",
        )
        self.campaign = campaign
        self.owner = owner
        self.since = since


class APIError(FleetError):
    """A run-level failure while talking to the API (unreachable, 5xx, unreadable answers)."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class AuthError(APIError):
    """401/403: the token is missing, wrong, or lacks a permission."""

    exit_code = ExitCode.aborted


class CircuitOpenError(APIError):
    """The API failed ambiguously too many times in a row; launching stopped."""

    exit_code = ExitCode.aborted


class RemoteCheckError(FleetError):
    """Ids referenced by the manifest do not exist in the org."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} referenced id(s) not found in the org; nothing was sent")

    def render(self) -> str:
        return "\n".join([p.render() for p in self.problems] + [f"error: {self.message}"])


class ConfirmationError(FleetError):
    """A destructive or spending command needs confirmation and there is no terminal."""


class LockLostError(LedgerError):
    """This apply lost the campaign lease (paused past its TTL, or taken over): it stopped."""

    exit_code = ExitCode.lock_lost

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
