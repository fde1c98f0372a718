"""The manifest: its model (version 1), loading and validating it, and locating problems in it
(YAML and file reading live in `source`). Every problem comes back as a located `Problem`
(`file:line:col: field.path: message`), all of them at once, before anything else happens.

When the structure has problems, `load_manifest` still salvages what it can (unknown fields
dropped, fleets whose own definition is broken skipped) and hands it over with the problems in
an `IncompleteManifest`, so the planner can report the rest in the same run.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from launcher.errors import (
    EXPECTED_TYPES,
    ManifestError,
    Problem,
    describe_value,
    validation_errors,
    validation_message,
)
from launcher.spec.source import Loc, Marks, dotted_path, read_yaml

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


class Rollout(BaseModel):
    """Canary waves: `apply` launches a wave, follows it to final outcomes, checks the gate,
    then launches the next. Sessions are assigned to waves by the hash of their key (stable
    when items are reordered; a random sample, not the first rows of a file)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    waves: list[WaveSize] = Field(min_length=1)
    """Wave sizes in launch order, e.g. `[5, "20%", "rest"]`; sessions left over after the
    last size form a final wave of their own (as if `rest` were written)."""
    gate: Gate = Field(default_factory=Gate)
    """The check between waves."""

    @field_validator("waves", mode="after")
    @classmethod
    def _rest_last(cls, v: list[int | str]) -> list[int | str]:
        if "rest" in v[:-1]:
            raise ValueError('"rest" can only be the last wave')
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


# =========================================================================== loading


@dataclass(frozen=True)
class LoadedManifest:
    """A validated manifest with where it came from and the marks to locate later problems.

    `skipped_fleets` is only ever non-empty in the salvaged part of a manifest with problems
    (`IncompleteManifest.salvaged`): those fleets are stand-ins the planner passes over.
    """

    path: Path
    manifest: Manifest
    marks: Marks
    skipped_fleets: frozenset[int] = field(default=frozenset())

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def label(self) -> str:
        return self.marks.file

    def problem(self, loc: Loc, message: str, hint: str | None = None) -> Problem:
        line, col = self.marks.find(loc)
        return Problem(self.label, line, col, dotted_path(loc), message, hint)

    def file_label(self, rel: str) -> str:
        """How to name a file the manifest refers to: as a path from where we run."""
        return os.path.normpath(self.base_dir / rel)


def _unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and `X | None` down to the type that holds values."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            members = [a for a in typing.get_args(tp) if a is not NoneType]
            if len(members) == 1:
                tp = members[0]
                continue
        return tp


def _union_member(tp: Any, tag: str) -> Any:
    """The member of a union that pydantic names `tag` in an error location (or None)."""
    for member in typing.get_args(tp):
        names = {getattr(member, "__name__", "")}
        if typing.get_origin(member) is Annotated:
            names |= {m.tag for m in typing.get_args(member)[1:] if isinstance(m, Tag)}
            member = typing.get_args(member)[0]
        origin = typing.get_origin(member)
        if origin is not None:
            names.add(getattr(origin, "__name__", ""))
        if tag in names or tag.split("[", 1)[0] in names:
            return member
    return None


def _user_loc(loc: Loc) -> tuple[Loc, bool, type[BaseModel] | None]:
    """Drop the union-member names pydantic puts in error locations ("int", "str", "file").

    Returns the path as the user wrote it, whether it ends at a union member (the value had
    none of the union's types), and the model holding the path's last part (for typo hints).
    """
    tp: Any = Manifest
    out: list[str | int] = []
    at_member, holder = False, None
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
            tp, at_member = _union_member(tp, str(part)), True
            continue
        out.append(part)
        at_member, holder = False, tp
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            tp = info.annotation if info else None
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            tp = None
    is_model = isinstance(holder, type) and issubclass(holder, BaseModel)
    return tuple(out), at_member, holder if is_model else None


def _validation_problems(exc: ValidationError, marks: Marks) -> list[Problem]:
    """One located line per problem; a union's per-member failures become one line."""
    merged: dict[Loc, tuple[list[str], Any]] = {}
    problems: list[Problem] = []
    for err in validation_errors(exc):
        loc, at_member, holder = _user_loc(tuple(err["loc"]))
        if at_member and err["type"] in EXPECTED_TYPES:
            merged.setdefault(loc, ([], err.get("input")))[0].append(EXPECTED_TYPES[err["type"]])
        else:
            problems.append(_one_problem(loc, err, holder, marks))
    for loc, (expected, value) in merged.items():
        line, col = marks.find(loc)
        what = " or ".join(
            dict.fromkeys("a template string" if e == "a string" else e for e in expected)
        )
        if loc[-1:] == ("structured_output_schema",):
            what = "an inline schema (a mapping) or {file: path}"
        problems.append(
            Problem(
                marks.file, line, col, dotted_path(loc), f"expected {what}; got {describe_value(value)}"
            )
        )
    unique = {(p.line, p.col, p.field, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.line or 0, p.col or 0, p.field))


def _one_problem(
    loc: Loc, err: Mapping[str, Any], holder: type[BaseModel] | None, marks: Marks
) -> Problem:
    if err["type"] == "extra_forbidden":
        names = list(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
        hint = (
            f"did you mean {close[0]!r}?"
            if close
            else (f"allowed: {', '.join(names)}" if names else None)
        )
        line, col = marks.find(loc, key=True)
        return Problem(marks.file, line, col, dotted_path(loc), "unknown field", hint)
    line, col = marks.find(loc)
    hint = None
    if err["type"] == "string_pattern_mismatch" and loc == ("campaign",):
        hint = "lowercase letters, digits and '-', starting with a letter or digit, ≤ 63 chars"
    elif err["type"] == "string_type" and isinstance(err.get("input"), int | float):
        hint = "quote it to make it a string"
    elif loc[-1:] == ("min_success_rate",):
        hint = "a fraction of the wave's sessions, from 0 to 1: write 0.75 for 75%"
    return Problem(marks.file, line, col, dotted_path(loc), validation_message(err), hint)


class IncompleteManifest(ManifestError):
    """Problems in the manifest's structure, with the part that could still be read.

    `salvaged` (None when nothing can be planned) is the manifest without its unknown fields,
    with each fleet whose own definition is broken replaced by a stand-in to skip: planning it
    finds the problems of everything else (`launcher.spec.plan.plan_manifest` does both).
    """

    def __init__(self, problems: list[Problem], salvaged: LoadedManifest | None) -> None:
        super().__init__(problems)
        self.salvaged = salvaged


# Stands in for a broken fleet so the other fleets keep their index (their problems' locations).
_STAND_IN_FLEET: dict[str, Any] = {"name": "skipped", "for_each": {"items": []}, "session": {}}
_SALVAGE_ROUNDS = 8  # dropping fields can uncover checks that had not run (model validators)
_PLACEHOLDER_CAMPAIGN = "invalid-campaign"


def _drop(data: Any, loc: Loc) -> bool:
    """Delete the mapping key at `loc` (an unknown field); False when it is not there."""
    node = data
    for part in loc[:-1]:
        found = (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        )
        if not found:
            return False
        node = node[part]
    if isinstance(node, dict) and loc and loc[-1] in node:
        del node[loc[-1]]
        return True
    return False


_PLACEHOLDER_PROMPT = "(prompt not checked: see the problem at its field)"


def _neutralize(data: dict[str, Any], loc: Loc) -> bool:
    """Take one broken session field out (a wrong type under `defaults` or a fleet's
    `session`), so the rest of the fleet is still rendered and checked: a broken prompt becomes
    a placeholder (else "no prompt" would be a second, false problem); any other field goes.
    False when `loc` is not such a field."""
    holder: Any
    if len(loc) >= 2 and loc[0] == "defaults" and isinstance(loc[1], str):
        holder, name = data.get("defaults"), loc[1]
    elif len(loc) >= 4 and loc[0] == "fleets" and loc[2] == "session" and isinstance(loc[3], str):
        fleets = data.get("fleets")
        if not isinstance(fleets, list) or not isinstance(loc[1], int) or loc[1] >= len(fleets):
            return False
        holder, name = (fleets[loc[1]] or {}).get("session"), loc[3]
    elif len(loc) == 3 and loc[0] == "fleets" and loc[2] == "success_when":
        fleets, i = data.get("fleets"), loc[1]
        ok = isinstance(fleets, list) and isinstance(i, int) and 0 <= i < len(fleets)
        holder, name = (fleets[i] if ok and fleets is not None else None), "success_when"
    else:
        return False
    if not isinstance(holder, dict) or name not in holder:
        return False
    if name in ("prompt", "prompt_file"):
        holder.pop("prompt_file", None)
        holder["prompt"] = _PLACEHOLDER_PROMPT
    else:
        del holder[name]
    return True


def _prune(data: dict[str, Any], exc: ValidationError, skipped: set[int]) -> bool:
    """Make `data` valid where `exc` says it is not, without inventing meaning: unknown fields
    go, a fleet with any other problem is replaced by a stand-in (and noted in `skipped`).
    False when what is broken is something every fleet depends on (defaults, vars, fleets)."""
    for err in validation_errors(exc):
        loc, _, _ = _user_loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden" and _drop(data, loc):
            continue
        head = loc[0] if loc else None
        if _neutralize(data, loc):
            continue
        if head == "fleets" and len(loc) >= 2 and isinstance(loc[1], int):
            fleets = data.get("fleets")
            if not isinstance(fleets, list) or not 0 <= loc[1] < len(fleets):
                return False
            fleets[loc[1]] = copy.deepcopy(_STAND_IN_FLEET)
            skipped.add(loc[1])
        elif head == "campaign":  # only names the ledger and tags: any valid name will do
            data["campaign"] = _PLACEHOLDER_CAMPAIGN
        elif head == "version":  # missing (another value is refused before validation)
            data["version"] = 1
        elif head in ("budget", "description", "rollout"):  # checked apart from the sessions
            data.pop(head, None)
        else:
            return False
    return True


def _salvage(
    data: dict[str, Any], exc: ValidationError, marks: Marks
) -> tuple[list[Problem], Manifest | None, frozenset[int]]:
    """Every structural problem, and the manifest without what they touch (None: nothing to
    plan)."""
    problems = _validation_problems(exc, marks)
    work = copy.deepcopy(data)
    skipped: set[int] = set()
    for _ in range(_SALVAGE_ROUNDS):
        if not _prune(work, exc, skipped):
            return problems, None, frozenset()
        try:
            return problems, Manifest.model_validate(work), frozenset(skipped)
        except ValidationError as again:
            exc = again
            problems += [p for p in _validation_problems(again, marks) if p not in problems]
    return problems, None, frozenset()


def _duplicate_fleets(loaded: LoadedManifest) -> list[Problem]:
    first: dict[str, int] = {}
    problems = []
    for i, fleet in enumerate(loaded.manifest.fleets):
        if i in loaded.skipped_fleets:
            continue
        if fleet.name in first:
            problems.append(
                loaded.problem(
                    ("fleets", i, "name"),
                    f"duplicate fleet name {fleet.name!r} (first: fleets[{first[fleet.name]}])",
                    "fleet names must be unique in a campaign",
                )
            )
        first.setdefault(fleet.name, i)
    return problems


def _in_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.col or 0, p.field))


def load_manifest(path: str | Path) -> LoadedManifest:
    """Read and validate a manifest's structure; raise ManifestError with every problem
    (an `IncompleteManifest`, with what could be salvaged, when the YAML itself was read)."""
    p = Path(path)
    data, marks = read_yaml(p)
    if not isinstance(data, dict):
        raise ManifestError(
            [
                Problem(
                    str(p),
                    1,
                    1,
                    "",
                    "a manifest must be a YAML mapping",
                    "start from an example in manifests/",
                )
            ]
        )
    if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
        # another format (or not a number): its fields mean nothing here, so report only this
        line, col = marks.find(("version",))
        raise ManifestError(
            [
                Problem(
                    str(p),
                    line,
                    col,
                    "version",
                    "unsupported manifest version "
                    f"{describe_value(data['version'])}; this tool reads version 1",
                    "write `version: 1`",
                )
            ]
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        problems, salvaged, skipped = _salvage(data, exc, marks)
        partial = LoadedManifest(p, salvaged, marks, skipped) if salvaged is not None else None
        if partial is not None:
            problems += _duplicate_fleets(partial)
        raise IncompleteManifest(_in_order(problems), partial) from None
    loaded = LoadedManifest(p, manifest, marks)
    if problems := _duplicate_fleets(loaded):
        raise IncompleteManifest(problems, loaded)
    return loaded


# =========================================================================== files it names


def resolve_file(loaded: LoadedManifest, rel: str) -> Path:
    """A path the manifest names, relative to the manifest's folder."""
    return loaded.base_dir / rel
