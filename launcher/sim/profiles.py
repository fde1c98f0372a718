"""Simulator profiles: how the simulated org behaves (outcomes, pace, faults, tokens, seed data).

A profile is a pydantic model (`extra="forbid"`, described fields), loaded from a built-in name
(`PROFILES`) or a JSON/YAML file by `load_profile`. Probabilities are per create request.
"""

from __future__ import annotations

import difflib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from launcher.api.models import StatusDetail
from launcher.errors import ConfigError, ManifestError, validation_lines
from launcher.spec.source import MAX_MANIFEST_BYTES, load_json_or_yaml


class Permission(StrEnum):
    """Service-user permissions the simulator checks (devin-api.md sections 1, 2 and 4)."""

    ManageOrgSessions = "ManageOrgSessions"
    ViewOrgSessions = "ViewOrgSessions"  # reads: get, list, messages, tags (v3 reference)
    ViewOrgMembership = "ViewOrgMembership"  # GET .../members/users
    ManageEnterpriseSettings = "ManageEnterpriseSettings"  # GET /v3/enterprise/.../tags
    ImpersonateOrgSessions = "ImpersonateOrgSessions"
    ReadAccountMeta = "ReadAccountMeta"
    ManageOrgSecrets = "ManageOrgSecrets"
    ManageAccountPlaybooks = "ManageAccountPlaybooks"
    ManageAccountKnowledge = "ManageAccountKnowledge"


class Fate(StrEnum):
    """How a session's work ends; drawn once per session from the profile weights."""

    finished = "finished"  # running/finished
    delivered = "delivered"  # running/waiting_for_user + open PR + valid structured_output
    needs_user = "needs_user"  # running/waiting_for_user, nothing delivered: a human must answer
    error = "error"  # status error
    suspended = "suspended"  # suspended with a limit detail
    invalid_output = "invalid_output"  # like delivered, but the output breaks the schema
    blocked = "blocked"  # like delivered, but the (valid) output reports that it could not


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Outcomes(_Strict):
    """Relative weights of session outcomes (need not sum to 1; an omitted one weighs 0)."""

    finished: float = Field(default=0.0, ge=0, description="Weight of running/finished.")
    delivered: float = Field(
        default=0.0,
        ge=0,
        description="Weight of running/waiting_for_user with an open PR and a structured_output "
        "that validates against the session's schema (no output without a schema).",
    )
    needs_user: float = Field(
        default=0.0, ge=0, description="Weight of running/waiting_for_user with no PR or output."
    )
    error: float = Field(default=0.0, ge=0, description="Weight of status `error`.")
    suspended: float = Field(
        default=0.0, ge=0, description="Weight of `suspended` with one of `suspend_details`."
    )
    invalid_output: float = Field(
        default=0.0,
        ge=0,
        description="Weight of waiting_for_user with a PR and a structured_output that does NOT "
        "validate against the schema (behaves like `delivered` when there is no schema).",
    )
    blocked: float = Field(
        default=0.0,
        ge=0,
        description="Weight of waiting_for_user with a PR and a valid structured_output that "
        "reports failure (the last enum value, false flags, a list entry: e.g. blockers), which a "
        "manifest's `success_when` rule should judge failed.",
    )

    @model_validator(mode="after")
    def _some_weight(self) -> Outcomes:
        if sum(self.weights().values()) <= 0:
            raise ValueError("at least one outcome weight must be positive")
        return self

    def weights(self) -> dict[Fate, float]:
        return {o: float(getattr(self, o.value)) for o in Fate}


class Lifecycle(_Strict):
    """Phase lengths in simulated seconds (divided by `time_scale` in real time) and ACU pace."""

    new_seconds: float = Field(default=5.0, ge=0, description="Time in `new`.")
    claimed_seconds: float = Field(default=10.0, ge=0, description="Time in `claimed`.")
    working_seconds_min: float = Field(
        default=90.0, ge=0, description="Shortest time in running/working before the outcome."
    )
    working_seconds_max: float = Field(
        default=240.0, ge=0, description="Longest time in running/working before the outcome."
    )
    resuming_seconds: float = Field(
        default=10.0, ge=0, description="Time in `resuming` after a message to a suspended session."
    )
    acus_per_hour: float = Field(
        default=6.0, ge=0, description="ACUs consumed per simulated hour while working."
    )
    default_max_acu: float = Field(
        default=10.0,
        gt=0,
        description="[guess] ACU cap when the request sets no max_acu_limit (10); reaching the "
        "cap suspends the session with usage_limit_exceeded.",
    )
    suspend_details: list[StatusDetail] = Field(
        default_factory=lambda: [
            StatusDetail.usage_limit_exceeded,
            StatusDetail.out_of_credits,
            StatusDetail.org_usage_limit_exceeded,
        ],
        min_length=1,
        description="status_detail values drawn for the `suspended` outcome.",
    )
    early_output: bool = Field(
        default=True,
        description="Fill structured_output halfway through working, as live sessions update it "
        "like a notepad (clients must wait for the end state before reading it as final).",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Lifecycle:
        if self.working_seconds_max < self.working_seconds_min:
            raise ValueError("working_seconds_max must be >= working_seconds_min")
        return self


class RetryAfterFormat(StrEnum):
    """How a 429's `Retry-After` is written (RFC 9110 allows both)."""

    seconds = "seconds"  # delta-seconds, rounded up, never 0
    http_date = "http-date"  # an IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`


class RateLimitHeaders(StrEnum):
    """Which family of rate-limit headers the simulator sends with every create answer."""

    none = "none"
    ratelimit = "ratelimit"  # RateLimit-Limit / -Remaining / -Reset (+ RateLimit-Policy q;w)
    ietf = "ietf"  # structured fields: RateLimit: "creates";r=..;t=..  RateLimit-Policy: ..;q;w
    x_ratelimit = "x-ratelimit"  # X-RateLimit-Limit / -Remaining / -Reset (epoch seconds)


class RateLimit(_Strict):
    """A token bucket on creates: `burst` at once, refilled at `rate` per real second."""

    rate: float = Field(gt=0, description="Creates admitted per real second, sustained.")
    burst: int = Field(ge=1, description="Creates admitted back to back from a full bucket.")
    retry_after: bool = Field(default=True, description="Send `Retry-After` with each 429.")
    retry_after_format: RetryAfterFormat = Field(
        default=RetryAfterFormat.seconds,
        description="`seconds` (whole seconds, rounded up, never 0) or `http-date` (the moment "
        "a token is back, as an HTTP date: 1-second resolution).",
    )
    headers: RateLimitHeaders = Field(
        default=RateLimitHeaders.none,
        description="Rate-limit headers sent with every create answer (200 and 429): `none`, "
        "`ratelimit` (RateLimit-Limit/-Remaining/-Reset and RateLimit-Policy), `ietf` (the "
        "structured `RateLimit` and `RateLimit-Policy` fields) or `x-ratelimit` "
        "(X-RateLimit-Limit/-Remaining/-Reset, reset as Unix seconds). The quota is the "
        "sustained rate over a window of `w` whole seconds; remaining is the bucket's whole "
        "tokens.",
    )


class Faults(_Strict):
    """Injected faults; each decision is deterministic under the server's seed."""

    rate_limit: RateLimit | None = Field(default=None, description="Rate limit on creates.")
    message_rate_limit: RateLimit | None = Field(
        default=None,
        description="Rate limit on sending messages (`POST .../messages`), a bucket of its own.",
    )
    latency_seconds: float = Field(
        default=0.0, ge=0, description="Added to every API response (real seconds)."
    )
    latency_jitter_seconds: float = Field(
        default=0.0, ge=0, description="Uniform extra latency in [0, jitter] (real seconds)."
    )
    error_before_create: float = Field(
        default=0.0, ge=0, le=1, description="P(500 before anything is created)."
    )
    error_after_create: float = Field(
        default=0.0, ge=0, le=1, description="P(500 after the session was created)."
    )
    drop_after_create: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="P(connection reset with no HTTP response after the session was created).",
    )
    delay_after_create: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="P(the 200 is held `delay_seconds` after creating, past a client's timeout).",
    )
    delay_seconds: float = Field(
        default=15.0, ge=0, description="How long a delayed create response is held (real s)."
    )
    list_lag_seconds: float = Field(
        default=0.0,
        ge=0,
        description="[guess] A new session shows up in list results only this long after "
        "creation (real seconds); get by id works at once.",
    )

    @model_validator(mode="after")
    def _total(self) -> Faults:
        after = self.error_after_create + self.drop_after_create + self.delay_after_create
        if after > 1:
            raise ValueError("error_after_create + drop_after_create + delay_after_create > 1")
        return self


class ListOrder(StrEnum):
    """The order of session lists (undocumented: the published reference says nothing)."""

    newest_first = "newest_first"
    oldest_first = "oldest_first"


class Guesses(_Strict):
    """Behaviours the published v3 reference does not state: each a named knob, so a test can
    pin either possibility. Defaults: what the simulator always did (no documented answer)."""

    list_order: ListOrder = Field(
        default=ListOrder.newest_first,
        description="[guess] Order of GET /sessions pages: newest_first or oldest_first.",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="[guess] A request body past this many bytes gets 413 (1 MiB).",
    )
    unknown_body_fields: bool = Field(
        default=False,
        description="[guess] Accept (and ignore) unknown create-body fields; false: 422, as v1 "
        "was seen to do.",
    )
    manage_implies_view: bool = Field(
        default=True,
        description="[guess] A token with ManageOrgSessions may also read sessions (the "
        "reference names ViewOrgSessions for reads; roles usually bundle both).",
    )
    ended_session_message_status: int | None = Field(
        default=400,
        ge=400,
        le=499,
        description="[guess] Status of a message sent to a session that has ended (null: "
        "accepted and recorded).",
    )
    unknown_member_status: int = Field(
        default=400,
        ge=400,
        le=499,
        description="[guess] Status of a create_as_user_id / message_as_user_id that names no "
        "org member.",
    )


class TokenSpec(_Strict):
    """An extra service-user token, usually with fewer permissions than the main one."""

    token: str = Field(min_length=1, description="The bearer token value.")
    permissions: list[Permission] = Field(description="What this token may do.")
    name: str = Field(default="limited", description="Service user name shown by /v3/self.")


class SecretSpec(_Strict):
    """An org secret (only the key exists in the simulator: there are no values)."""

    secret_id: str = Field(pattern=r"^secret-", description="Id, `secret-...`.")
    key: str = Field(description="Secret name.")


class PlaybookSpec(_Strict):
    """An account playbook."""

    playbook_id: str = Field(pattern=r"^playbook-", description="Id, `playbook-...`.")
    title: str = Field(description="Playbook title.")
    body: str = Field(default="", description="Playbook text.")


class NoteSpec(_Strict):
    """A knowledge note."""

    note_id: str = Field(pattern=r"^note-", description="Id, `note-...`.")
    name: str = Field(description="Note name.")
    body: str = Field(default="", description="Note text.")
    trigger: str = Field(default="", description="When the note applies.")


class Profile(_Strict):
    """Everything that makes one simulated org behave the way it does."""

    name: str = Field(default="custom", description="Profile name (file stem when absent).")
    description: str = Field(default="", description="One line on what the profile is for.")
    platforms: list[str] = Field(
        default_factory=lambda: ["linux", "windows"],
        description="The org's VM platform labels; `default` is always accepted too.",
    )
    members: list[str] = Field(
        default_factory=lambda: ["user-sim-alice", "user-sim-bob"],
        description="Org members that create_as_user_id may name.",
    )
    outcomes: Outcomes = Field(
        default_factory=lambda: Outcomes(delivered=0.8, finished=0.2),
        description="Fate weights (default: 80% delivered, 20% finished).",
    )
    lifecycle: Lifecycle = Field(default_factory=Lifecycle, description="Phase lengths, ACUs.")
    faults: Faults = Field(default_factory=Faults, description="Injected faults.")
    tokens: list[TokenSpec] = Field(
        default_factory=list, description="Extra tokens besides the main (all-permission) one."
    )
    secrets: list[SecretSpec] = Field(default_factory=list, description="Org secrets (keys).")
    playbooks: list[PlaybookSpec] = Field(default_factory=list, description="Playbooks.")
    knowledge_notes: list[NoteSpec] = Field(default_factory=list, description="Knowledge notes.")
    allowed_tags: list[str] | None = Field(
        default=None,
        description="Session-tag validation (an enterprise setting): null = off (GET "
        "/v3/enterprise/organizations/{org_id}/tags answers 403); a list = the allowed tags "
        "(that endpoint lists them; a create with any other tag gets 422).",
    )
    guesses: Guesses = Field(
        default_factory=Guesses, description="Undocumented behaviours, as named knobs."
    )


# --------------------------------------------------------------------------- built-ins

LIMITED_TOKEN = "cog_sim_limited_sessions_only"

_SEED_DATA: dict[str, Any] = {
    "tokens": [
        {
            "token": LIMITED_TOKEN,
            "name": "sessions-only",
            "permissions": ["ManageOrgSessions", "ReadAccountMeta"],
        }
    ],
    "secrets": [
        {"secret_id": "secret-sim-github-token", "key": "GITHUB_TOKEN"},
        {"secret_id": "secret-sim-npm-token", "key": "NPM_TOKEN"},
        # The ids the example campaigns in manifests/ reference, so they rehearse cleanly.
        {"secret_id": "secret-gh", "key": "GH_TOKEN"},
    ],
    "playbooks": [
        {"playbook_id": "playbook-sim-fix-tests", "title": "Fix failing tests"},
        {"playbook_id": "playbook-sim-upgrade-deps", "title": "Upgrade dependencies"},
        {"playbook_id": "playbook-dependency-bump", "title": "Bump a dependency safely"},
    ],
    "knowledge_notes": [
        {"note_id": "note-sim-style", "name": "Code style", "trigger": "writing code"},
        {"note_id": "note-sim-ci", "name": "CI setup", "trigger": "touching CI"},
        {"note_id": "note-release-process", "name": "Release process", "trigger": "releasing"},
        {
            "note_id": "note-dependency-policy",
            "name": "Dependency policy",
            "trigger": "changing dependencies",
        },
    ],
}

_MIXED_OUTCOMES = {
    "delivered": 0.5,
    "finished": 0.15,
    "needs_user": 0.12,
    "error": 0.08,
    "suspended": 0.08,
    "invalid_output": 0.07,
    "blocked": 0.06,
}

_BUILTIN: dict[str, dict[str, Any]] = {
    "clean": {
        "description": "No faults; every session succeeds (PR + valid output, or finished).",
        "outcomes": {"delivered": 0.8, "finished": 0.2},
    },
    "mixed": {
        "description": "No faults; every session outcome appears (needs_user, error, ...).",
        "outcomes": _MIXED_OUTCOMES,
    },
    "ratelimited": {
        "description": "Creates limited to 20/s with a burst of 20; 429 carries Retry-After.",
        "outcomes": {"delivered": 0.8, "finished": 0.2},
        "faults": {"rate_limit": {"rate": 20, "burst": 20, "retry_after": True}},
    },
    "flaky": {
        "description": "Moderate faults around creates, some latency; a retrying client finishes.",
        "outcomes": _MIXED_OUTCOMES,
        "faults": {
            "latency_seconds": 0.01,
            "latency_jitter_seconds": 0.04,
            "error_before_create": 0.1,
            "error_after_create": 0.05,
            "drop_after_create": 0.05,
            "delay_after_create": 0.05,
            "delay_seconds": 15,
            "list_lag_seconds": 0.5,
        },
    },
    "hostile": {
        "description": "All faults at once: rate limit without Retry-After, latency, 500s before "
        "and after creating, dropped connections, delayed responses, list lag.",
        "outcomes": _MIXED_OUTCOMES,
        "faults": {
            "rate_limit": {"rate": 10, "burst": 3, "retry_after": False},
            "latency_seconds": 0.02,
            "latency_jitter_seconds": 0.08,
            "error_before_create": 0.1,
            "error_after_create": 0.08,
            "drop_after_create": 0.08,
            "delay_after_create": 0.05,
            "delay_seconds": 15,
            "list_lag_seconds": 2.0,
        },
    },
}

PROFILES: tuple[str, ...] = tuple(_BUILTIN)


def builtin_profile(name: str) -> Profile:
    """A fresh copy of the built-in profile `name` (KeyError when there is none)."""
    return Profile.model_validate({"name": name, **_SEED_DATA, **_BUILTIN[name]})


def load_profile(name_or_path: str) -> Profile:
    """A built-in profile by name, or a profile read from a .json/.yaml/.yml file."""
    if name_or_path in _BUILTIN:
        return builtin_profile(name_or_path)
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        close = difflib.get_close_matches(name_or_path, PROFILES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown simulator profile {name_or_path!r}",
            hint=f"{hint}use one of {', '.join(PROFILES)}, or a path to a .json/.yaml file",
        )
    # The manifest module is the one home of YAML: safe loading, located errors, size cap.
    try:
        data = load_json_or_yaml(path, str(path), MAX_MANIFEST_BYTES)
    except ManifestError as exc:
        raise ConfigError("invalid simulator profile: " + exc.problems[0].render()) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a simulator profile must be a mapping at the top level")
    data.setdefault("name", path.stem)
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid simulator profile {path}:\n"
            + "\n".join(f"{path}: {line}" for line in validation_lines(exc)),
            hint="see launcher.sim.Profile for the fields and their meaning",
        ) from exc
