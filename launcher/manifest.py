"""The manifest: its YAML loading (with line marks), its model (version 1), and its data files.

Everything a user writes is read here, and every problem comes back as a located `Problem`
(`file:line:col: field.path: message`), all of them at once, before anything else happens.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from launcher.errors import ConfigError, ManifestError, Problem

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_YAML_NODES = 2_000_000  # an alias bomb expands past this long before memory suffers
CAMPAIGN_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

Loc = tuple[str | int, ...]


# =========================================================================== YAML with marks


@dataclass
class Marks:
    """Where each value (and each mapping key) of a YAML document starts: path -> (line, col)."""

    file: str
    values: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        """The mark of `loc`, or of its nearest ancestor that has one."""
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            mark = self.values.get(loc[:end])
            if mark:
                return mark
        return None, None


class _Loader(yaml.SafeLoader):
    """Safe loader; dates stay strings (a manifest is text, and JSON has no dates)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ManifestError(
            [Problem(file, line, col, "", f"not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                     "save the file as UTF-8")]
        ) from None


def read_text(path: Path, *, limit: int, label: str | None = None) -> str:
    """Read a UTF-8 text file the manifest refers to, with a size cap and located errors."""
    name = label or str(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise ManifestError([Problem(name, None, None, "", f"file is {size:,} bytes; "
                                         f"the limit is {limit:,}", "split it into smaller files")])
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError([Problem(name, None, None, "", "file not found")]) from None
    except IsADirectoryError:
        raise ManifestError([Problem(name, None, None, "", "is a directory, not a file")]) from None
    except OSError as exc:
        raise ManifestError([Problem(name, None, None, "", f"cannot read: {exc.strerror}")]) from None
    return _decode(raw, name)


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse one YAML document into plain data plus the marks of every value.

    Refuses duplicate mapping keys and documents that expand past MAX_YAML_NODES (alias bombs).
    """
    marks = Marks(file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        msg = f"YAML syntax error: {exc.problem or exc.context}"
        raise ManifestError([Problem(file, line, col, "", msg)]) from None
    except yaml.YAMLError as exc:
        raise ManifestError([Problem(file, None, None, "", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    if node is None:
        return None, marks
    problems: list[Problem] = []
    budget = [MAX_YAML_NODES]

    def build(n: yaml.Node, loc: Loc) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise ManifestError([Problem(file, n.start_mark.line + 1, n.start_mark.column + 1, "",
                                         f"document expands to more than {MAX_YAML_NODES:,} "
                                         "values (an alias bomb?)", "avoid nested aliases")])
        marks.values.setdefault(loc, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, _ in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    kv = loader.construct_object(k)
                    if kv in seen:
                        problems.append(Problem(file, k.start_mark.line + 1,
                                                k.start_mark.column + 1, _dotted((*loc, kv)),
                                                f"duplicate key {kv!r} (first on line {seen[kv]})",
                                                "remove one of them"))
                    else:
                        seen[kv] = k.start_mark.line + 1
            loader.flatten_mapping(n)
            out: dict[Any, Any] = {}
            for k, v in n.value:
                kv = build_scalar_key(k, loc)
                marks.keys.setdefault((*loc, kv), (k.start_mark.line + 1, k.start_mark.column + 1))
                out[kv] = build(v, (*loc, kv))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [build(v, (*loc, i)) for i, v in enumerate(n.value)]
        return loader.construct_object(n)

    def build_scalar_key(k: yaml.Node, loc: Loc) -> Any:
        if not isinstance(k, yaml.ScalarNode):
            problems.append(Problem(file, k.start_mark.line + 1, k.start_mark.column + 1,
                                    _dotted(loc), "mapping keys must be plain scalars"))
            return f"<complex key at line {k.start_mark.line + 1}>"
        return loader.construct_object(k)

    data = build(node, ())
    if problems:
        raise ManifestError(problems)
    return data, marks


def read_yaml(path: Path, *, limit: int = MAX_MANIFEST_BYTES) -> tuple[Any, Marks]:
    """Read and parse a YAML file (manifests, YAML data files, simulator profiles)."""
    return parse_yaml(read_text(path, limit=limit), str(path))


# =========================================================================== the model


class EnvRef(BaseModel):
    """A value taken from an environment variable when sessions are launched; never stored."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(pattern=ENV_PATTERN, description="Name of the environment variable.")


class SessionSecret(BaseModel):
    """A per-session secret; its value must come from the environment."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Secret name (1..256 characters; may be a template).")
    value: EnvRef = Field(description="`{env: NAME}`: a literal value is refused.")
    sensitive: bool | str = Field(default=True, description="Hide the value in the session.")

    @field_validator("value", mode="before")
    @classmethod
    def _no_literals(cls, v: Any) -> Any:
        if isinstance(v, str | int | float):
            raise ValueError("a literal secret value is not allowed in a manifest; "
                             "write {env: NAME} and export NAME when you apply")
        return v


class FileRef(BaseModel):
    """A file, relative to the manifest."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1, description="Path relative to the manifest.")


TemplStr = str
"""A string rendered as a Jinja2 template (sandboxed, undefined variables are errors)."""


class SessionTemplate(BaseModel):
    """Create-session fields; every string (also inside lists) is a Jinja2 template."""

    model_config = ConfigDict(extra="forbid")

    prompt: TemplStr | None = Field(None, description="The task (a template).")
    prompt_file: str | None = Field(
        None, description="A template file (relative to the manifest) used instead of `prompt`."
    )
    title: TemplStr | None = Field(None, description="Session title.")
    repos: list[TemplStr] | None = Field(None, description="Repositories, `owner/repo`.")
    tags: list[TemplStr] | None = Field(
        None, description="Tags; defaults and session tags are unioned, plus 2 identity tags."
    )
    attachment_urls: list[TemplStr] | None = Field(None, description="Absolute URIs.")
    knowledge_ids: list[TemplStr] | None = Field(None, description="Knowledge note ids.")
    secret_ids: list[TemplStr] | None = Field(None, description="Org secret ids.")
    session_secrets: list[SessionSecret] | None = Field(
        None, description="Per-session secrets, values from the environment."
    )
    playbook_id: TemplStr | None = Field(None, description="Playbook id.")
    child_playbook_id: TemplStr | None = Field(None, description="Playbook for child sessions.")
    session_links: list[TemplStr] | None = Field(None, description="Sessions to use as context.")
    max_acu_limit: int | TemplStr | None = Field(
        None, description="Per-session ACU cap (a positive integer, or a template giving one)."
    )
    bypass_approval: bool | TemplStr | None = Field(None, description="Skip the approval gate.")
    create_as_user_id: TemplStr | None = Field(None, description="Create as this org member.")
    devin_mode: TemplStr | None = Field(
        None, description="normal, fast, lite, ultra or fusion (absent: the org default)."
    )
    platform: TemplStr | None = Field(None, description="VM platform label.")
    structured_output_schema: FileRef | dict[str, Any] | None = Field(
        None, description="Draft 7 JSON Schema: inline, or `{file: path}` (JSON or YAML)."
    )
    structured_output_required: bool | TemplStr | None = Field(
        None, description="The agent must deliver final structured output (API default true)."
    )
    resumable: bool | TemplStr | None = Field(None, description="Keep the VM for resuming.")

    @model_validator(mode="after")
    def _one_prompt(self) -> SessionTemplate:
        if self.prompt is not None and self.prompt_file is not None:
            raise ValueError("set either `prompt` or `prompt_file`, not both")
        return self


class Budget(BaseModel):
    """Limits checked at plan time: a campaign over budget is refused."""

    model_config = ConfigDict(extra="forbid")

    max_sessions: int | None = Field(None, gt=0, description="Most sessions the plan may hold.")
    max_total_acu: int | None = Field(
        None, gt=0, description="Most ACUs: the sum of max_acu_limit over the plan."
    )


class ForEach(BaseModel):
    """What a fleet expands over: exactly one of `file`, `items`, `matrix`."""

    model_config = ConfigDict(extra="forbid")

    file: str | None = Field(None, description="CSV, JSON, JSONL or YAML, relative to the manifest.")
    items: list[Any] | None = Field(None, description="Items inline.")
    matrix: dict[str, list[Any]] | None = Field(
        None,
        description="Axes (name: [values]); the cartesian product, with GitHub-Actions-style "
        "`include` and `exclude` lists of partial items.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> ForEach:
        given = [n for n in ("file", "items", "matrix") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `file`, `items` or `matrix`"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


class Fleet(BaseModel):
    """A templated group of sessions, one per item."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="Fleet name (letters, digits, _.-).")
    description: str | None = Field(None, description="What this fleet does.")
    for_each: ForEach = Field(description="The items to expand over.")
    key: str | None = Field(
        None,
        description="Template of each session's key (unique in the campaign, stable). "
        "Default: the item's values joined by '-'.",
    )
    session: SessionTemplate = Field(description="The session to create for each item.")


class Manifest(BaseModel):
    """A devin-fleet campaign manifest (version 1)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"$schema": "http://json-schema.org/draft-07/schema#"},
        title="devin-fleet manifest",
    )

    version: Literal[1] = Field(description="Manifest format version: 1.")
    campaign: str = Field(
        pattern=CAMPAIGN_PATTERN,
        description="Campaign name, [a-z0-9][a-z0-9-]{0,62}: names the ledger and identity tag.",
    )
    description: str | None = Field(None, description="What the campaign does.")
    vars: dict[str, Any] = Field(default_factory=dict, description="Values for templates: `vars`.")
    defaults: SessionTemplate = Field(
        default_factory=SessionTemplate, description="Create-session fields for every session."
    )
    budget: Budget = Field(default_factory=Budget, description="Plan-time limits.")
    fleets: list[Fleet] = Field(min_length=1, description="The fleets of sessions.")


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
    """A validated manifest with where it came from and the marks to locate later problems."""

    path: Path
    manifest: Manifest
    marks: Marks

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def label(self) -> str:
        return self.marks.file

    def problem(self, loc: Loc, message: str, hint: str | None = None) -> Problem:
        line, col = self.marks.find(loc)
        return Problem(self.label, line, col, _dotted(loc), message, hint)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model class that the field path `loc` points into."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return None
        if isinstance(part, int):
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = _find_model(info.annotation)
    return current


def _find_model(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
        for arg in typing.get_args(tp):
            found = _find_model(arg)
            if found is not None:
                return found
    return None


def _validation_problems(exc: ValidationError, marks: Marks) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[Loc, str]] = set()
    for err in exc.errors(include_url=False):
        # pydantic names the union member it tried ("str", "FileRef", "function-after[...]"):
        # those are not fields the user wrote.
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and (
            p[:1].isupper() or "[" in p or p in {"str", "int", "bool", "dict", "list"})))
        etype, msg, hint = err["type"], err["msg"], None
        if etype == "extra_forbidden":
            parent = _model_at(Manifest, loc[:-1])
            names = list(parent.model_fields) if parent else []
            close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = "unknown field"
            hint = f"did you mean {close[0]!r}?" if close else (
                f"allowed: {', '.join(names)}" if names else None)
            line, col = marks.find(loc, key=True)
        else:
            line, col = marks.find(loc)
            if loc == ("version",):
                msg = f"unsupported manifest version {err.get('input')!r}; this tool reads version 1"
            elif etype == "string_pattern_mismatch" and loc == ("campaign",):
                msg = f"bad campaign name {err.get('input')!r}"
                hint = "lowercase letters, digits and '-', starting with a letter or digit, ≤ 63 chars"
            elif etype == "missing":
                msg = "required field is missing"
            elif msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
        if (loc, msg) in seen:  # a union reports each member's failure: keep one line
            continue
        seen.add((loc, msg))
        problems.append(Problem(marks.file, line, col, _dotted(loc), msg, hint))
    return problems


def load_manifest(path: str | Path) -> LoadedManifest:
    """Read and validate a manifest's structure; raise ManifestError with every problem."""
    p = Path(path)
    data, marks = read_yaml(p)
    if not isinstance(data, dict):
        raise ManifestError([Problem(str(p), 1, 1, "", "a manifest must be a YAML mapping",
                                     "start from an example in manifests/")])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_validation_problems(exc, marks)) from None
    return LoadedManifest(p, manifest, marks)


# =========================================================================== data files


@dataclass(frozen=True)
class Item:
    """One item a fleet expands over, with where it came from (for error messages)."""

    value: Any
    origin: str  # "data/services.csv:5", "manifest.yaml:12:9", or "matrix"


def read_items(loaded: LoadedManifest, fleet_index: int) -> list[Item]:
    """The items of one fleet: from its data file, inline list or matrix."""
    fe = loaded.manifest.fleets[fleet_index].for_each
    loc: Loc = ("fleets", fleet_index, "for_each")
    if fe.items is not None:
        return [_inline_item(loaded, (*loc, "items", i), v) for i, v in enumerate(fe.items)]
    if fe.matrix is not None:
        return [Item(v, "matrix") for v in expand_matrix(fe.matrix, loaded, (*loc, "matrix"))]
    assert fe.file is not None
    return list(_read_data_file(loaded, fe.file, (*loc, "file")))


def _inline_item(loaded: LoadedManifest, loc: Loc, value: Any) -> Item:
    line, col = loaded.marks.find(loc)
    return Item(value, f"{loaded.label}:{line}:{col}")


def expand_matrix(matrix: dict[str, list[Any]], loaded: LoadedManifest, loc: Loc) -> list[dict[str, Any]]:
    """GitHub-Actions semantics: product of axes, minus `exclude` matches, plus `include`.

    An `include` entry that only adds new keys to existing combinations extends them (when all
    its original-axis values match); otherwise it is appended as a combination of its own.
    """
    include = matrix.get("include", [])
    exclude = matrix.get("exclude", [])
    problems = []
    for name, entries in (("include", include), ("exclude", exclude)):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict):
                problems.append(loaded.problem((*loc, name, i), f"each {name} entry must be a mapping"))
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    for k, values in axes.items():
        if not values:
            problems.append(loaded.problem((*loc, k), "matrix axis has no values"))
    for i, entry in enumerate(exclude):
        if isinstance(entry, dict) and (unknown := set(entry) - set(axes)):
            problems.append(loaded.problem((*loc, "exclude", i),
                                           f"exclude names unknown axis {sorted(unknown)[0]!r}",
                                           f"axes: {', '.join(axes)}"))
    if problems:
        raise ManifestError(problems)
    combos: list[dict[str, Any]] = [{}] if axes else []
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    combos = [c for c in combos if not any(all(c.get(k) == v for k, v in e.items())
                                           for e in exclude)]
    base_keys = set(axes)
    extra: list[dict[str, Any]] = []
    for entry in include:
        matched = False
        for c in combos:
            if all(c[k] == v for k, v in entry.items() if k in base_keys):
                c.update({k: v for k, v in entry.items() if k not in base_keys})
                matched = True
        if not matched:
            extra.append(dict(entry))
    return combos + extra


def _read_data_file(loaded: LoadedManifest, rel: str, loc: Loc) -> Iterator[Item]:
    path = (loaded.base_dir / rel)
    label = rel if not Path(rel).is_absolute() else str(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".ndjson", ".yaml", ".yml"):
        raise ManifestError([loaded.problem(loc, f"unsupported data file type {suffix or '(none)'!r}",
                                            "use .csv, .json, .jsonl or .yaml")])
    try:
        text = read_text(path, limit=MAX_DATA_BYTES, label=label)
    except ManifestError as exc:
        p = exc.problems[0]
        if p.line is None:  # not found / too large: point at the manifest line too
            raise ManifestError([loaded.problem(loc, f"{label}: {p.message}", p.hint)]) from None
        raise
    if suffix == ".csv":
        yield from _csv_items(text, label)
    elif suffix in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield Item(json.loads(line), f"{label}:{n}")
                except json.JSONDecodeError as exc:
                    raise ManifestError([Problem(label, n, exc.colno, "", f"invalid JSON: {exc.msg}")]) from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError([Problem(label, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]) from None
        if not isinstance(data, list):
            raise ManifestError([Problem(label, 1, 1, "", "a JSON data file must hold an array of items")])
        yield from (Item(v, f"{label}[{i}]") for i, v in enumerate(data))
    else:
        data, marks = parse_yaml(text, label)
        if not isinstance(data, list):
            raise ManifestError([Problem(label, 1, 1, "", "a YAML data file must hold a list of items")])
        for i, v in enumerate(data):
            line, col = marks.find((i,))
            yield Item(v, f"{label}:{line}:{col}")


def _csv_items(text: str, label: str) -> Iterator[Item]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ManifestError([Problem(label, 1, 1, "", f"CSV error: {exc}")]) from None
    header = [h.strip() for h in header]
    problems = []
    if any(not h for h in header):
        problems.append(Problem(label, 1, 1, "", "CSV header has an empty column name"))
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        problems.append(Problem(label, 1, 1, "", f"CSV header repeats column {dupes[0]!r}"))
    if problems:
        raise ManifestError(problems)
    try:
        for row in reader:
            n = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                problems.append(Problem(label, n, 1, "", f"row has {len(row)} columns; "
                                        f"the header has {len(header)} ({', '.join(header)})",
                                        "quote cells that contain commas"))
                continue
            # An empty cell counts as absent, so `default()` applies in templates.
            yield Item({h: v for h, v in zip(header, row, strict=True) if v != ""}, f"{label}:{n}")
    except csv.Error as exc:
        problems.append(Problem(label, reader.line_num, 1, "", f"CSV error: {exc}"))
    if problems:
        raise ManifestError(problems)


def resolve_file(loaded: LoadedManifest, rel: str) -> Path:
    """A path the manifest names, relative to the manifest's folder."""
    return loaded.base_dir / rel


def load_json_or_yaml(path: Path, label: str, limit: int) -> Any:
    """A JSON or YAML document (schemas referenced with `{file: ...}`)."""
    text = read_text(path, limit=limit, label=label)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError([Problem(label, exc.lineno, exc.colno, "",
                                         f"invalid JSON: {exc.msg}")]) from None
    return parse_yaml(text, label)[0]


def load_profile_data(path: Path) -> Any:
    """Plain data from a JSON/YAML settings file (simulator profiles); ConfigError if unreadable."""
    try:
        return load_json_or_yaml(path, str(path), MAX_MANIFEST_BYTES)
    except ManifestError as exc:
        raise ConfigError(exc.problems[0].render()) from None
