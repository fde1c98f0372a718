"""The manifest: safe YAML loading with line marks, the manifest's model (version 1), and the
reading of text files it names. Every problem comes back as a located `Problem`
(`file:line:col: field.path: message`), all of them at once, before anything else happens.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from launcher.errors import ManifestError, Problem

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_DATA_BYTES = 64 * 1024 * 1024
MAX_YAML_NODES = 2_000_000  # values in one document, aliases expanded
MAX_ALIAS_EXPANSION = 100_000  # values that aliases may add beyond what is written
MAX_DEPTH = 64
MAX_REPEATED = 20  # similar problems (one per CSV row, say) listed before a summary line
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
    block: set[Loc] = field(default_factory=set)  # `|` and `>` scalars: text starts a line below

    def find(self, loc: Loc, *, key: bool = False) -> tuple[int | None, int | None]:
        """The mark of `loc`, or of its nearest ancestor that has one."""
        if key and loc in self.keys:
            return self.keys[loc]
        for end in range(len(loc), -1, -1):
            mark = self.values.get(loc[:end])
            if mark:
                return mark
        return None, None


class _Loader(yaml.CSafeLoader):
    """Safe loader on libyaml's parser. Dates stay strings (JSON has none), and only true/false
    are booleans (YAML 1.2): `on`, `no`, `yes` stay strings, as keys and as values."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:timestamp", _BOOL)]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


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
        raise ManifestError([Problem(name, None, None, "", f"cannot read: {exc.strerror}")]
                            ) from None
    return _decode(raw, name)


def _at(file: str, mark: yaml.Mark | None, field: str, message: str,
        hint: str | None = None) -> Problem:
    line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
    return Problem(file, line, col, field, message, hint)


def _expansion(root: yaml.Node, file: str) -> None:
    """Refuse recursive aliases and documents whose aliases expand past the limits.

    Counted on the node graph (shared nodes once), before anything is built, so an alias bomb
    costs a few milliseconds instead of all the memory.
    """
    sizes: dict[int, int] = {}
    uses: dict[int, int] = {}
    active: set[int] = set()
    nodes: dict[int, yaml.Node] = {}

    def size(n: yaml.Node) -> int:
        k = id(n)
        if k in sizes:
            uses[k] += 1
            return sizes[k]
        if k in active:
            raise ManifestError([_at(file, n.start_mark, "", "recursive alias: a value contains "
                                     "itself", "remove the alias")])
        active.add(k)
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        total = 1 + sum(size(c) for c in children)
        active.discard(k)
        sizes[k], uses[k], nodes[k] = total, 1, n
        return total

    expanded = size(root)
    extra = expanded - len(sizes)
    if expanded > MAX_YAML_NODES or extra > MAX_ALIAS_EXPANSION:
        worst = max(sizes, key=lambda k: (uses[k] - 1) * sizes[k])
        raise ManifestError([_at(file, nodes[worst].start_mark, "",
                                 f"aliases expand the document to {expanded:,} values (an alias "
                                 f"bomb?); the limit is {MAX_ALIAS_EXPANSION:,} values more than "
                                 "written", "write the values out, or use fewer nested aliases")])


def parse_yaml(text: str, file: str) -> tuple[Any, Marks]:
    """Parse one YAML document into plain data plus the marks of every value.

    Refuses duplicate mapping keys, unknown tags, nesting deeper than MAX_DEPTH, and aliases
    that expand too far (alias bombs). Timestamps stay strings.
    """
    marks = Marks(file)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:  # libyaml counts the position in UTF-8 bytes
            pos = len(text.encode()[: exc.position].decode(errors="ignore"))
            line = text.count("\n", 0, pos) + 1
            col = pos - (text.rfind("\n", 0, pos) + 1) + 1
            raise ManifestError([Problem(file, line, col, "", f"control character "
                                         f"#x{exc.character:04x} is not allowed in YAML",
                                         "remove it")]) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = f"{exc.context}, {exc.problem}" if exc.context and exc.problem else (
                exc.problem or exc.context)
            raise ManifestError([_at(file, mark, "", f"YAML syntax error: {problem}")]) from None
        except yaml.YAMLError as exc:
            raise ManifestError([Problem(file, None, None, "", f"YAML error: {exc}")]) from None
        if node is None:
            return None, marks
        _expansion(node, file)
        problems: list[Problem] = []
        data = _Builder(loader, marks, problems).build(node, ())
    except yaml.MarkedYAMLError as exc:  # an unknown tag, a bad merge key
        raise ManifestError([_at(file, exc.problem_mark or exc.context_mark, "",
                                 f"YAML error: {exc.problem or exc.context}")]) from None
    except RecursionError:
        raise ManifestError([Problem(file, None, None, "", f"YAML nested more than {MAX_DEPTH} "
                                     "levels deep", "flatten the document")]) from None
    finally:
        loader.dispose()
    if problems:
        raise ManifestError(problems)
    return data, marks


_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class _Builder:
    """Builds plain data from a composed node graph, recording marks and key problems."""

    def __init__(self, loader: _Loader, marks: Marks, problems: list[Problem]) -> None:
        self.loader, self.marks, self.problems = loader, marks, problems

    def build(self, n: yaml.Node, loc: Loc) -> Any:
        file = self.marks.file
        if len(loc) > MAX_DEPTH:
            raise ManifestError([_at(file, n.start_mark, dotted_path(loc[:MAX_DEPTH]),
                                     f"nested more than {MAX_DEPTH} levels deep")])
        self.marks.values.setdefault(loc, (n.start_mark.line + 1, n.start_mark.column + 1))
        if isinstance(n, yaml.ScalarNode):
            if n.style in ("|", ">"):
                self.marks.block.add(loc)
            value = self.loader.construct_object(n)
            if not isinstance(value, str | int | float | NoneType):  # bool is an int
                self.problems.append(_at(file, n.start_mark, dotted_path(loc),
                                         f"YAML tag {n.tag!r} gives a value JSON cannot hold",
                                         "quote the value"))
            return value
        if n.tag not in (_SEQ, _MAP):  # `!!python/...`, `!!set`, `!foo`: not plain data
            self.problems.append(_at(file, n.start_mark, dotted_path(loc),
                                     f"unsupported YAML tag {n.tag!r}", "remove the tag"))
            return None
        if isinstance(n, yaml.SequenceNode):
            return [self.build(v, (*loc, i)) for i, v in enumerate(n.value)]
        assert isinstance(n, yaml.MappingNode)
        seen: dict[Any, int] = {}
        for k, _ in n.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                kv = self.loader.construct_object(k)
                if kv in seen:
                    self.problems.append(_at(file, k.start_mark, dotted_path((*loc, kv)),
                                             f"duplicate key {kv!r} (first on line {seen[kv]})",
                                             "remove one of them"))
                else:
                    seen[kv] = k.start_mark.line + 1
        self.loader.flatten_mapping(n)
        out: dict[Any, Any] = {}
        for k, v in n.value:
            if not isinstance(k, yaml.ScalarNode):
                self.problems.append(_at(file, k.start_mark, dotted_path(loc),
                                         "mapping keys must be plain scalars"))
                continue
            kv = self.loader.construct_object(k)
            if isinstance(kv, list | dict | set):  # e.g. `!!set` keys: not hashable data
                kv = str(kv)
            self.marks.keys.setdefault((*loc, kv), (k.start_mark.line + 1, k.start_mark.column + 1))
            out[kv] = self.build(v, (*loc, kv))
        return out


def read_yaml(path: Path, *, limit: int = MAX_MANIFEST_BYTES) -> tuple[Any, Marks]:
    """Read and parse a YAML file (manifests, YAML data files, simulator profiles)."""
    return parse_yaml(read_text(path, limit=limit), str(path))


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
            raise ValueError("a literal secret value is not allowed in a manifest; "
                             "write {env: NAME} and export NAME when you apply")
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
    | Annotated[dict[str, Any], Tag("inline"), WithJsonSchema(
        {"type": "object", "not": {"required": ["file"]}, "description": "An inline schema."})],
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
            raise ValueError("give exactly one of `file`, `items` or `matrix`"
                             + (f" (got {', '.join(given)})" if given else ""))
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
        return Problem(self.label, line, col, dotted_path(loc), message, hint)

    def file_label(self, rel: str) -> str:
        """How to name a file the manifest refers to: as a path from where we run."""
        return os.path.normpath(self.base_dir / rel)


def dotted_path(loc: Loc) -> str:
    """`("fleets", 0, "session", "repos")` -> `fleets[0].session.repos`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


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


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "string_type": "a string", "bool_type": "true/false", "bool_parsing": "true/false",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "list_type": "a list",
}


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return "a mapping" if isinstance(value, dict) else (
        "a list" if isinstance(value, list) else type(value).__name__)


def _validation_problems(exc: ValidationError, marks: Marks) -> list[Problem]:
    """One located line per problem; a union's per-member failures become one line."""
    merged: dict[Loc, tuple[list[str], Any]] = {}
    problems: list[Problem] = []
    for err in exc.errors(include_url=False):
        loc, at_member, holder = _user_loc(tuple(err["loc"]))
        if at_member and err["type"] in _EXPECTED:
            merged.setdefault(loc, ([], err.get("input")))[0].append(_EXPECTED[err["type"]])
        else:
            problems.append(_one_problem(loc, err, holder, marks))
    for loc, (expected, value) in merged.items():
        line, col = marks.find(loc)
        what = " or ".join(dict.fromkeys("a template string" if e == "a string" else e
                                         for e in expected))
        if loc[-1:] == ("structured_output_schema",):
            what = "an inline schema (a mapping) or {file: path}"
        problems.append(Problem(marks.file, line, col, dotted_path(loc),
                                f"expected {what}; got {_describe(value)}"))
    unique = {(p.line, p.col, p.field, p.message): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.line or 0, p.col or 0, p.field))


def _one_problem(loc: Loc, err: Mapping[str, Any], holder: type[BaseModel] | None,
                 marks: Marks) -> Problem:
    if err["type"] == "extra_forbidden":
        names = list(holder.model_fields) if holder else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else (
            f"allowed: {', '.join(names)}" if names else None)
        line, col = marks.find(loc, key=True)
        return Problem(marks.file, line, col, dotted_path(loc), "unknown field", hint)
    line, col = marks.find(loc)
    hint = None
    if err["type"] == "string_pattern_mismatch" and loc == ("campaign",):
        hint = "lowercase letters, digits and '-', starting with a letter or digit, ≤ 63 chars"
    elif err["type"] == "string_type" and isinstance(err.get("input"), int | float):
        hint = "quote it to make it a string"
    return Problem(marks.file, line, col, dotted_path(loc), error_message(err), hint)


def error_message(err: Mapping[str, Any]) -> str:
    """A pydantic error as a short sentence, with the offending value (no pydantic jargon)."""
    etype, msg, value = err["type"], err["msg"], err.get("input")
    if etype == "missing":
        return "required field is missing"
    if etype in _EXPECTED:
        return f"expected {_EXPECTED[etype]}; got {_describe(value)}"
    if etype == "string_pattern_mismatch" and tuple(err["loc"]) == ("campaign",):
        return f"bad campaign name {_describe(value)}"
    if etype == "string_pattern_mismatch":
        return f"{_describe(value)} does not match {err['ctx']['pattern']}"
    if etype == "too_short" and isinstance(value, list) and not value:
        return f"needs at least {err['ctx']['min_length']} entry; got none"
    text = str(msg).removeprefix("Value error, ")
    if isinstance(value, str | int | float) and etype not in ("value_error", "assertion_error"):
        text += f" (got {_describe(value)})"
    return text


def load_manifest(path: str | Path) -> LoadedManifest:
    """Read and validate a manifest's structure; raise ManifestError with every problem."""
    p = Path(path)
    data, marks = read_yaml(p)
    if not isinstance(data, dict):
        raise ManifestError([Problem(str(p), 1, 1, "", "a manifest must be a YAML mapping",
                                     "start from an example in manifests/")])
    if "version" in data and (type(data["version"]) is not int or data["version"] != 1):
        # another format (or not a number): its fields mean nothing here, so report only this
        line, col = marks.find(("version",))
        raise ManifestError([Problem(str(p), line, col, "version", "unsupported manifest version "
                                     f"{_describe(data['version'])}; this tool reads version 1",
                                     "write `version: 1`")])
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise ManifestError(_validation_problems(exc, marks)) from None
    loaded = LoadedManifest(p, manifest, marks)
    first: dict[str, int] = {}
    problems = []
    for i, fleet in enumerate(manifest.fleets):
        if fleet.name in first:
            problems.append(loaded.problem(("fleets", i, "name"), f"duplicate fleet name "
                                           f"{fleet.name!r} (first: fleets[{first[fleet.name]}])",
                                           "fleet names must be unique in a campaign"))
        first.setdefault(fleet.name, i)
    if problems:
        raise ManifestError(problems)
    return loaded


# =========================================================================== files it names


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
