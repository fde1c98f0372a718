"""The error tree of devin-fleet: every error a user can see, with its context and a hint.

    FleetError                      base: message + hint, exit code 1
    ├── ManifestError               one or more Problems (file:line:col: field: message)
    ├── ConfigError                 missing/invalid settings (API key, org id, base URL, flags)
    ├── SecretError                 a session secret's environment variable is not set
    ├── LedgerError                 the ledger cannot be opened, read, written or migrated
    │   ├── LockedError             another run holds the campaign lock (exit 10)
    │   └── LockLostError           this apply lost the campaign lock mid-run (exit 9)
    ├── APIError                    a run-level failure talking to the API (unreachable, 5xx; exit 1)
    │   ├── AuthError               401/403 (exit 5)
    │   └── CircuitOpenError        too many consecutive ambiguous/5xx outcomes (exit 5)
    ├── CampaignRefusedError        a create refused for a campaign-wide reason (tag allow-list; exit 3)
    ├── RemoteCheckError            referenced ids (secrets, playbooks, knowledge) do not exist
    ├── PlanChangedError            `apply --plan`: the plan differs from the reviewed one
    ├── GitHubError                 the GitHub API refused or failed (`pr-comment`, `ci`)
    └── ConfirmationError           apply/cancel needs --yes when stdin is not a terminal

A failed *session* is data (recorded in the ledger), never one of these: only run-level
conditions raise. The CLI renders these without a traceback unless --debug.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


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
    failed = (
        3,
        "some sessions failed (apply: refused by the API, or stopped at the first refusal every "
        "session would share, such as a tag the org does not allow; status and `apply --wait`: "
        "failed outcomes)",
    )
    unfinished = (
        4,
        (
            "apply: some sessions not launched yet (outcome unknown, gave up on an unreachable "
            "API or a 429 storm, or stopped by `--timeout`): re-run to resume; status: some "
            "still running or not launched"
        ),
    )
    aborted = 5, "aborted: bad credentials (401/403) or the circuit breaker opened"
    needs_human = (
        6,
        "status (and `apply --wait`, which exits with `status`'s code): some sessions need a human",
    )
    gate_stopped = (
        7,
        "apply: a rollout gate stopped the campaign before its next wave (fix, then re-run; "
        "or `--skip-gate`)",
    )
    wait_timeout = (
        8,
        "apply `--wait` / `status --watch`: the timeout passed with sessions still running "
        "(re-run to keep following)",
    )
    lock_lost = (
        9,
        "apply: this run lost the campaign lock (paused past the lease, or taken over by "
        "another apply): it stopped sending at once; re-run when the other is done",
    )
    locked = (
        10,
        "apply/message: another run holds the campaign's lock (the message says who and since "
        "when); nothing was sent: re-run when it is done (apply can wait: `--lock-timeout`)",
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


def fleet_errors(exc: BaseException) -> list[FleetError]:
    """The FleetErrors `exc` stands for: itself, or every leaf of an exception group (task
    groups wrap what their tasks raise) when all its leaves are FleetErrors; else none (a
    group holding anything else is a bug, shown with its traceback)."""
    if isinstance(exc, FleetError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        leaves = [e for sub in exc.exceptions for e in fleet_errors(sub)]
        if leaves and len(leaves) == _count_leaves(exc):
            return leaves
    return []


def _count_leaves(exc: BaseException) -> int:
    return len(leaves(exc))


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions `exc` stands for: itself, or every leaf of an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return [e for sub in exc.exceptions for e in leaves(sub)]
    return [exc]


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

    def __init__(self, problems: list[Problem], *, nothing_sent: bool = True) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        tail = "; nothing was sent" if nothing_sent else ""
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the manifest{tail}")

    def render(self) -> str:
        lines = [p.render() for p in self.problems]
        lines.append(f"error: {self.message}")
        return "\n".join(lines)


class ConfigError(FleetError):
    """A setting is missing or invalid (API key, org id, base URL, option values).

    An invalid library option carries its name (`option`, e.g. "rate") and what is wrong with
    it (`problem`): the library never names a command-line flag; the CLI maps `option` to its
    flag."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        option: str | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.option = option
        self.problem = problem

    @classmethod
    def invalid(cls, option: str, problem: str, value: object) -> ConfigError:
        """`option` holds `value`, which `problem` (e.g. "must be positive")."""
        return cls(f"{option} {problem} (got {value!r})", option=option, problem=problem)


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

    exit_code = ExitCode.locked

    def __init__(self, campaign: str, owner: str, since: float, path: str) -> None:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(since))
        super().__init__(
            f"campaign {campaign!r} is locked by {owner} (since {when})",
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


class CampaignRefusedError(FleetError):
    """A create was refused for a reason every session of the campaign shares (a tag the org's
    allow-list lacks, an unknown platform or user): launching stopped (exit 3)."""

    exit_code = ExitCode.failed


class RemoteCheckError(FleetError):
    """Ids referenced by the manifest do not exist in the org, or tags it sends are not allowed."""

    def __init__(self, problems: list[Problem], notes: Sequence[str] = ()) -> None:
        self.problems = problems
        self.notes = list(notes)  # what could not be checked, and why
        what = "referenced id(s) not found in the org"
        if any("allowed session tags" in p.message for p in problems):
            what = "problem(s) found by the remote check"
        super().__init__(f"{len(problems)} {what}; nothing was sent")

    def render(self) -> str:
        notes = [n if n.startswith("note: ") else f"warning: {n}" for n in self.notes]
        return "\n".join([p.render() for p in self.problems] + notes + [f"error: {self.message}"])


class SelectorError(FleetError):
    """A relaunch selector matches nothing (a usage error: nothing was sent). Like an invalid
    option (ConfigError), it says which option (`relaunch`) and what is wrong (`problem`)."""

    exit_code = ExitCode.usage

    def __init__(self, problem: str, *, hint: str | None = None) -> None:
        super().__init__(f"relaunch selector {problem}", hint=hint)
        self.option = "relaunch"
        self.problem = problem


class PlanChangedError(FleetError):
    """`apply --plan`: the manifest plans something other than what was reviewed; nothing sent."""

    def __init__(self, message: str, *, differ: Sequence[str] = (), hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.differ = list(differ)


class GitHubError(FleetError):
    """The GitHub API refused a request or could not be reached (never carries the token)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        read_only: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.read_only = read_only  # 403 "Resource not accessible by integration": a fork's PR


class ConfirmationError(FleetError):
    """A destructive or spending command needs confirmation and there is no terminal."""


class LockLostError(LedgerError):
    """This apply lost the campaign lease (paused past its TTL, or taken over): it stopped."""

    exit_code = ExitCode.lock_lost

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


# --------------------------------------------------------------------------- redaction
# Secrets (the API token, session-secret values) reach texts in more than one encoding: raw, as
# JSON escapes it (quotes, non-ASCII as \uXXXX), as Python's repr of the str or of its bytes
# (an httpx/h11 "Illegal header value b'...'"), percent-encoded in a URL. Every form is replaced,
# and always before a text is cut short (a cut can leave a prefix no replace would match).

REDACTED = "***"


def secret_forms(value: str) -> set[str]:
    """Every form `value` may take inside an error text (3 characters or more)."""
    from urllib.parse import quote

    forms = {value, value.strip(), repr(value)[1:-1], value.encode("unicode_escape").decode()}
    forms |= {json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
    forms |= {repr(value.encode("utf-8", "surrogateescape"))[2:-1], quote(value, safe="")}
    return {f for f in forms if len(f) >= 3}


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every form of every secret replaced by `***` (longest first)."""
    forms = sorted({f for v in secrets if v for f in secret_forms(v)}, key=len, reverse=True)
    for form in forms:
        text = text.replace(form, REDACTED)
    return text


def shorten(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (call it on redacted text only)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- validation errors
# The one renderer of pydantic ValidationErrors (manifest problems, simulator profiles, API
# objects): short sentences with the offending value, no pydantic jargon or URLs. Callers
# locate the lines (the manifest adds file:line:col from its YAML marks).

EXPECTED_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "string_type": "a string",
    "bool_type": "true/false",
    "bool_parsing": "true/false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def dotted_path(loc: Sequence[str | int]) -> str:
    """`("fleets", 0, "session", "repos")` -> `fleets[0].session.repos`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def describe_value(value: Any) -> str:
    """A value as a message shows it: short repr of scalars, the kind of anything else."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return (
        "a mapping"
        if isinstance(value, dict)
        else ("a list" if isinstance(value, list) else type(value).__name__)
    )


_BOUNDS = {
    "less_than_equal": "at most",
    "less_than": "less than",
    "greater_than_equal": "at least",
    "greater_than": "greater than",
}


def _num(ctx: Mapping[str, Any]) -> str:
    bound = next(iter(ctx.values()), "?")
    return str(int(bound)) if isinstance(bound, float) and bound.is_integer() else str(bound)


def validation_message(err: Mapping[str, Any]) -> str:
    """One pydantic error (from `errors(include_url=False)`) as a short sentence."""
    etype, msg, value = err["type"], err["msg"], err.get("input")
    if etype == "missing":
        return "required field is missing"
    if etype == "extra_forbidden":
        return "unknown field"
    if etype in EXPECTED_TYPES:
        return f"expected {EXPECTED_TYPES[etype]}; got {describe_value(value)}"
    if etype == "string_pattern_mismatch" and tuple(err["loc"]) == ("campaign",):
        return f"bad campaign name {describe_value(value)}"
    if etype == "string_pattern_mismatch":
        return f"{describe_value(value)} does not match {err['ctx']['pattern']}"
    if etype in _BOUNDS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"must be {_BOUNDS[etype]} {_num(err['ctx'])}; got {describe_value(value)}"
    if etype in ("literal_error", "enum") and "expected" in err.get("ctx", {}):
        return f"expected one of {err['ctx']['expected']}; got {describe_value(value)}"
    if etype == "too_short" and isinstance(value, list) and not value:
        return f"needs at least {err['ctx']['min_length']} entry; got none"
    text = str(msg).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if isinstance(value, str | int | float) and etype not in ("value_error", "assertion_error"):
        text += f" (got {describe_value(value)})"
    return text


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's error list without documentation URLs (the one call of `.errors()`)."""
    return [dict(e) for e in exc.errors(include_url=False)]


def validation_lines(exc: ValidationError) -> list[str]:
    """Every error of `exc` as `field.path: message` (`(root)` for the object itself)."""
    return [
        f"{dotted_path(e['loc']) or '(root)'}: {validation_message(e)}" for e in validation_errors(exc)
    ]
