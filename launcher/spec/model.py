"""The manifest's model (version 1): what a user may write, with field docstrings that become
the JSON Schema text (`devin-fleet schema`); durations and wave sizes as the model reads them.
Loading and locating problems live in `manifest`."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from launcher.errors import (
    describe_value,
)

MAX_REPEATED = 20  # similar problems (one per CSV row, say) listed before a summary line
CAMPAIGN_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


# =========================================================================== the model


class EnvRef(BaseModel):
    """A value taken from an environment variable when sessions are launched; never stored."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    env: str = Field(pattern=ENV_PATTERN)
    """Name of the environment variable."""


class SessionSecret(BaseModel):
    """A per-session secret; its value must come from the environment."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    key: str
    """Secret name (1..256 characters; may be a template)."""
    value: EnvRef
    """`{env: NAME}`: a literal value is refused."""
    sensitive: bool | str = True
    """Hide the value in the session."""

    @field_validator("value", mode="before")
    @classmethod
    def _no_literals(cls, v: Any) -> Any:
        if isinstance(v, str | int | float):
            raise ValueError(
                "a literal secret value is not allowed in a manifest; "
                "write {env: NAME} and export NAME when you apply"
            )
        return v


class FileRef(BaseModel):
    """A file, relative to the manifest."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    file: str = Field(min_length=1)
    """Path relative to the manifest."""


def _schema_kind(v: Any) -> str:
    return "file" if isinstance(v, FileRef) or (isinstance(v, dict) and "file" in v) else "inline"


# A mapping with a `file` key is always a file reference (so `{file: x, typo: 1}` is refused,
# not taken for an inline schema); anything else is an inline schema.
SchemaRef = Annotated[
    Annotated[FileRef, Tag("file")]
    | Annotated[
        dict[str, Any],
        Tag("inline"),
        WithJsonSchema(
            {"type": "object", "not": {"required": ["file"]}, "description": "An inline schema."}
        ),
    ],
    Discriminator(_schema_kind),
]

TemplStr = str
"""A string rendered as a Jinja2 template (sandboxed, undefined variables are errors)."""


class SessionTemplate(BaseModel):
    """Create-session fields; every string (also inside lists) is a Jinja2 template."""

    # Non-string fields may be templates too: the rendered text is converted (an empty result
    # leaves the field out), then checked against the API's rules like everything else.

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    prompt: TemplStr | None = None
    """The task (a template)."""
    prompt_file: str | None = None
    """A template file (relative to the manifest) used instead of `prompt`."""
    title: TemplStr | None = None
    """Session title."""
    repos: list[TemplStr] | None = None
    """Repositories, `owner/repo`."""
    tags: list[TemplStr] | None = None
    """Tags; defaults and session tags are unioned, plus 2 identity tags (at most 50 in all)."""
    attachment_urls: list[TemplStr] | None = None
    """Absolute URIs."""
    knowledge_ids: list[TemplStr] | None = None
    """Knowledge note ids."""
    secret_ids: list[TemplStr] | None = None
    """Org secret ids."""
    session_secrets: list[SessionSecret] | None = None
    """Per-session secrets, values from the environment."""
    playbook_id: TemplStr | None = None
    """Playbook id."""
    child_playbook_id: TemplStr | None = None
    """Playbook for child sessions."""
    session_links: list[TemplStr] | None = None
    """Sessions to use as context."""
    max_acu_limit: int | TemplStr | None = None
    """Per-session ACU cap (a positive integer, or a template giving one)."""
    bypass_approval: bool | TemplStr | None = None
    """Skip the approval gate."""
    create_as_user_id: TemplStr | None = None
    """Create as this org member."""
    devin_mode: TemplStr | None = None
    """normal, fast, lite, ultra or fusion (absent: the org default)."""
    platform: TemplStr | None = None
    """VM platform label."""
    structured_output_schema: SchemaRef | None = None
    """Draft 7 JSON Schema: inline, or `{file: path}` (JSON or YAML)."""
    structured_output_required: bool | TemplStr | None = None
    """The agent must deliver final structured output (API default true)."""
    resumable: bool | TemplStr | None = None
    """Keep the VM for resuming."""

    @model_validator(mode="after")
    def _one_prompt(self) -> SessionTemplate:
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("set either `prompt` or `prompt_file`, not both")
        return self


class Budget(BaseModel):
    """Limits checked at plan time: a campaign over budget is refused."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_sessions: int | None = Field(default=None, gt=0, strict=True)
    """Most sessions the plan may hold."""
    max_total_acu: int | None = Field(default=None, gt=0, strict=True)
    """Most ACUs: the sum of max_acu_limit over the plan."""
    max_running: int | None = Field(default=None, gt=0, strict=True)
    """Most of the campaign's sessions running at once: `apply` holds new launches while this
    many are not final yet (`--max-running` overrides)."""


DURATION_PATTERN = r"^\s*(\d+(\.\d+)?\s*[smhd]\s*)+$"
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds in a duration: a positive number of seconds, or `90s`, `30m`, `2h`, `1h30m`, `1d`."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration such as 90s, 30m or 2h; got {describe_value(value)}")
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        value = float(value)  # seconds, as text (a command-line value)
    if isinstance(value, str):
        if not re.fullmatch(DURATION_PATTERN, value):
            raise ValueError(f"bad duration {value!r}: write seconds, or e.g. 90s, 30m, 2h, 1h30m")
        value = sum(float(n) * _UNIT[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)\s*([smhd])", value))
    if not value > 0:
        raise ValueError(f"a duration must be positive; got {value}")
    return float(value)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "Seconds, or a duration such as 90s, 30m, 2h, 1h30m, 1d.",
        }
    ),
]
WAVE_PATTERN = r"^(\d+(\.\d+)?%|rest)$"


def _wave_size(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"a wave needs at least 1 session; got {value}")
        return value
    if isinstance(value, str) and re.fullmatch(WAVE_PATTERN, value):
        if value != "rest" and not 0 < float(value[:-1]) <= 100:
            raise ValueError(f"a percentage must be in (0, 100]; got {value!r}")
        return value
    raise ValueError(
        f'expected a count, a percentage such as "20%", or "rest"; got {describe_value(value)}'
    )


WaveSize = Annotated[
    int | str,
    BeforeValidator(_wave_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": WAVE_PATTERN},
            ],
            "description": 'Sessions in the wave: a count, a percentage of the plan ("20%"), or "rest".',
        }
    ),
]


class Gate(BaseModel):
    """What a wave must show before the next one launches (checked when its sessions are final,
    or when `wait_timeout` passes: then the rollout stops, and a re-run keeps following)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    min_success_rate: float = Field(default=1.0, ge=0, le=1)
    """Least share of the wave's sessions that succeeded (cancelled ones are left out of the
    count); default 1.0: every one."""
    max_failed: int | None = Field(default=None, ge=0, strict=True)
    """Most failed sessions in the wave (failed outcomes, including creates the API refused)."""
    max_needs_human: int | None = Field(default=None, ge=0, strict=True)
    """Most sessions in the wave waiting for a human."""
    wait_timeout: Duration | None = None
    """How long to follow a wave before giving up on it, in seconds or as `2h`, `30m`
    (default: `--wait-timeout`, else no limit)."""


class NamedWave(BaseModel):
    """A wave chosen by its members rather than its size (a canary on your own low-risk
    services): `keys` (keys or key globs) or `when` (an expression over `item`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    keys: list[str] | None = Field(default=None, min_length=1)
    """The wave's keys, or key globs such as `acme/billing-*`."""
    when: str | None = Field(default=None, min_length=1)
    """An expression over the item, e.g. `item.risk == 'low'`: the sessions whose item meets it."""

    @model_validator(mode="after")
    def _one_way(self) -> NamedWave:
        if (self.keys is None) == (self.when is None):
            raise ValueError("a named wave takes `keys` or `when` (one of them)")
        return self


def _wave_kind(value: Any) -> str:
    return "named" if isinstance(value, dict | NamedWave) else "size"


WaveSpec = Annotated[
    Annotated[WaveSize, Tag("size")] | Annotated[NamedWave, Tag("named")],
    Discriminator(_wave_kind),
]


class Rollout(BaseModel):
    """Canary waves: `apply` launches a wave, follows it to final outcomes, checks the gate,
    then launches the next. The first waves may be named by their members (`keys`, `when`);
    the others are sizes, filled with the sessions left, ranked by the hash of their key
    (stable when items are reordered; a random sample, not the first rows of a file)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    waves: list[WaveSpec] = Field(min_length=1)
    """Waves in launch order: named ones first (`{keys: [acme/docs, "acme/internal-*"]}`,
    `{when: "item.risk == 'low'"}`; a key goes to the first that names it), then sizes, e.g.
    `[5, "20%", "rest"]` (a percentage is of the whole plan); sessions left over after the last
    wave form a final wave of their own (as if `rest` were written)."""
    gate: Gate = Field(default_factory=Gate)
    """The check between waves."""

    @field_validator("waves", mode="after")
    @classmethod
    def _rest_last(cls, v: list[int | str | NamedWave]) -> list[int | str | NamedWave]:
        if "rest" in v[:-1]:
            raise ValueError('"rest" can only be the last wave')
        kinds = [isinstance(w, NamedWave) for w in v]
        if kinds != sorted(kinds, reverse=True):
            raise ValueError("named waves (keys, when) come before the sized ones")
        return v


class ForEach(BaseModel):
    """What a fleet expands over: exactly one of `file`, `items`, `matrix`."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    file: str | None = None
    """CSV, JSON, JSONL or YAML, relative to the manifest."""
    items: list[Any] | None = None
    """Items inline."""
    matrix: dict[str, list[Any]] | None = None
    """Axes (name: [values]): their product, with GitHub-Actions-style `include`/`exclude` lists."""

    @model_validator(mode="after")
    def _exactly_one(self) -> ForEach:
        given = [n for n in ("file", "items", "matrix") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of `file`, `items` or `matrix`"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class Fleet(BaseModel):
    """A templated group of sessions, one per item."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = Field(pattern=NAME_PATTERN)
    """Fleet name (letters, digits, _.-)."""
    description: str | None = None
    """What this fleet does."""
    for_each: ForEach
    """The items to expand over."""
    key: str | None = None
    """Template of each session's key: unique, stable (no `index`); default: values joined by '-'."""
    session: SessionTemplate
    """The session to create for each item."""
    success_when: str | None = Field(default=None, min_length=1)
    """This fleet's success rule (overrides the campaign's `success_when`)."""


class Manifest(BaseModel):
    """A devin-fleet campaign manifest (version 1)."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"$schema": "http://json-schema.org/draft-07/schema#"},
        title="devin-fleet manifest",
    )

    version: Literal[1]
    """Manifest format version: 1."""
    campaign: str = Field(pattern=CAMPAIGN_PATTERN)
    """Campaign name, [a-z0-9][a-z0-9-]{0,62}: names the ledger and identity tag."""
    description: str | None = None
    """What the campaign does."""
    vars: dict[str, Any] = Field(default_factory=dict)
    """Values for templates: `vars`."""
    defaults: SessionTemplate = Field(default_factory=SessionTemplate)
    """Create-session fields for every session."""
    budget: Budget = Field(default_factory=Budget)
    """Plan-time limits."""
    success_when: str | None = Field(default=None, min_length=1)
    """Success rule: an expression over `output`, `pull_requests`, `status`, `status_detail`,
    `item` (e.g. `output.migrated and not output.blockers`) that decides succeeded vs failed
    for sessions that delivered."""
    rollout: Rollout | None = None
    """Canary waves with a gate between them (absent: everything launches in one wave)."""
    identity: Literal["tags", "title"] = "tags"
    """How each session carries its identity: `tags` (fleet-key/fleet-fp/fleet-attempt tags) or
    `title` (only `fleet:<campaign>` is sent; the identity is a `[fleet <hex> fp <hex>]` title
    suffix), for orgs whose session-tag allow-list cannot hold one tag per session."""
    fleets: list[Fleet] = Field(min_length=1)
    """The fleets of sessions."""


def manifest_json_schema() -> dict[str, Any]:
    """The manifest's JSON Schema (draft-07), for editors and `devin-fleet schema`."""
    schema = Manifest.model_json_schema(ref_template="#/definitions/{model}")
    defs = schema.pop("$defs", {})
    out: dict[str, Any] = {"$schema": "http://json-schema.org/draft-07/schema#"}
    out.update({k: v for k, v in schema.items() if k != "$schema"})
    out["definitions"] = defs
    return out
