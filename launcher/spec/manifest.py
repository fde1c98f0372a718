"""The manifest: loading and validating it (its model lives in `model`), and locating problems
in it (YAML and file reading live in `source`). Every problem comes back as a located `Problem`
(`file:line:col: field.path: message`), all of them at once, before anything else happens.

When the structure has problems, `load_manifest` still salvages what it can (unknown fields
dropped, fleets whose own definition is broken skipped) and hands it over with the problems in
an `IncompleteManifest`, so the planner can report the rest in the same run.
"""

from __future__ import annotations

import copy
import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Tag,
    ValidationError,
)

from launcher.errors import (
    EXPECTED_TYPES,
    ManifestError,
    Problem,
    describe_value,
    validation_errors,
    validation_message,
)
from launcher.spec.model import MAX_REPEATED, Manifest
from launcher.spec.source import Loc, Marks, dotted_path, read_yaml

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


class Problems:
    """Collects problems, once each: the same problem on many items is one line with a count,
    and past MAX_REPEATED different problems at one field the rest are counted."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int | None, int | None, str, str], list[Any]] = {}
        self._per_field: dict[tuple[str, int | None, str], int] = {}

    def add(self, problem: Problem, origin: str | None = None) -> None:
        k = (problem.file, problem.line, problem.col, problem.field, problem.message)
        if k in self._seen:
            self._seen[k][1] += 1
            return
        where = (problem.file, problem.line, problem.field)
        self._per_field[where] = n = self._per_field.get(where, 0) + 1
        if n <= MAX_REPEATED:
            self._seen[k] = [problem, 0, origin]

    def extend(self, problems: list[Problem]) -> None:
        for p in problems:
            self.add(p)

    def __bool__(self) -> bool:
        return bool(self._seen)

    def problems(self) -> list[Problem]:
        out = []
        for problem, more, origin in self._seen.values():
            msg = problem.message
            if origin:
                msg += f" [item {origin}" + (f", and {more:,} more item(s)]" if more else "]")
            out.append(
                Problem(problem.file, problem.line, problem.col, problem.field, msg, problem.hint)
            )
        for (file, line, field_), n in self._per_field.items():
            if n > MAX_REPEATED:
                first = next(
                    p
                    for p, _, _ in self._seen.values()
                    if (p.file, p.line, p.field) == (file, line, field_)
                )
                out.append(
                    Problem(
                        file,
                        line,
                        first.col,
                        field_,
                        f"and {n - MAX_REPEATED:,} more different problem(s) here, in other items",
                    )
                )
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
    finds the problems of everything else (`launcher.spec.build.plan_manifest` does both).
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
