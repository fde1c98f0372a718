"""The items a fleet expands over: data files (CSV, JSON, JSONL, YAML), inline lists, and
matrices with GitHub-Actions-style include/exclude; each item knows where it came from."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.errors import ManifestError, Problem
from launcher.spec.manifest import LoadedManifest
from launcher.spec.model import MAX_REPEATED
from launcher.spec.source import MAX_DATA_BYTES, Loc, parse_yaml, read_text


def _scalar(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def read_items(loaded: LoadedManifest, fleet_index: int) -> list[Item]:
    """The items of one fleet: from its data file, inline list or matrix."""
    fe = loaded.manifest.fleets[fleet_index].for_each
    loc: Loc = ("fleets", fleet_index, "for_each")
    if fe.items is not None:
        return [
            Item(v, "{}:{}:{}".format(loaded.label, *loaded.marks.find((*loc, "items", i))))
            for i, v in enumerate(fe.items)
        ]
    if fe.matrix is not None:
        return [
            Item(v, "matrix {" + ", ".join(f"{k}={_scalar(x)}" for k, x in v.items()) + "}")
            for v in expand_matrix(fe.matrix, loaded, (*loc, "matrix"))
        ]
    assert fe.file is not None
    return read_data_file(loaded, fe.file, (*loc, "file"))


@dataclass(frozen=True)
class Item:
    """One item a fleet expands over, with where it came from (for error messages)."""

    value: Any
    origin: str  # "data/services.csv:5", "manifest.yaml:12:9", or "matrix {os=linux}"


def read_data_file(loaded: LoadedManifest, rel: str, loc: Loc) -> list[Item]:
    """The items of a CSV, JSON (an array), JSONL or YAML (a list) file beside the manifest.

    A CSV row is a mapping of the header's names to its cells; an empty cell is left out, so
    that `default()` applies to it in templates.
    """
    path = loaded.base_dir / rel
    label = loaded.file_label(rel)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".jsonl", ".ndjson", ".yaml", ".yml"):
        raise ManifestError(
            [
                loaded.problem(
                    loc,
                    f"unsupported data file type {suffix or '(none)'!r}",
                    "use .csv, .json, .jsonl or .yaml",
                )
            ]
        )
    try:
        text = read_text(path, limit=MAX_DATA_BYTES, label=label)
    except ManifestError as exc:
        p = exc.problems[0]
        if p.line is None:  # not found / too large: point at the manifest line
            raise ManifestError([loaded.problem(loc, f"{label}: {p.message}", p.hint)]) from None
        raise
    if suffix == ".csv":
        return _csv_items(text, label)
    if suffix in (".jsonl", ".ndjson"):
        items = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    items.append(Item(json.loads(line), f"{label}:{n}"))
                except json.JSONDecodeError as exc:
                    raise ManifestError(
                        [Problem(label, n, exc.colno, "", f"invalid JSON: {exc.msg}")]
                    ) from None
        return items
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(
                [Problem(label, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]
            ) from None
        if not isinstance(data, list):
            raise ManifestError(
                [Problem(label, 1, 1, "", "a JSON data file must hold an array of items")]
            )
        return [Item(v, f"{label}[{i}]") for i, v in enumerate(data)]
    data, marks = parse_yaml(text, label)
    if not isinstance(data, list):
        raise ManifestError([Problem(label, 1, 1, "", "a YAML data file must hold a list of items")])
    return [Item(v, "{}:{}:{}".format(label, *marks.find((i,)))) for i, v in enumerate(data)]


def _csv_items(text: str, label: str) -> list[Item]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return []
    except csv.Error as exc:
        raise ManifestError([Problem(label, 1, 1, "", f"CSV error: {exc}")]) from None
    problems = []
    if any(not h for h in header):
        problems.append(
            Problem(label, 1, header.index("") + 1, "", "CSV header has an empty column name")
        )
    if dupes := sorted({h for h in header if header.count(h) > 1}):
        problems.append(Problem(label, 1, 1, "", f"CSV header repeats column {dupes[0]!r}"))
    if problems:
        raise ManifestError(problems)
    items: list[Item] = []
    bad_rows: list[int] = []
    width = len(header)
    start = reader.line_num + 1
    try:
        for row in reader:
            n, start = start, reader.line_num + 1  # a quoted cell may span lines: report the first
            if len(row) == width:
                # An empty cell counts as absent, so `default()` applies in templates.
                value = {h: v for h, v in zip(header, row, strict=True) if v != ""}
                items.append(Item(value, f"{label}:{n}"))
            elif row and not (len(row) == 1 and not row[0].strip()):  # blank lines are skipped
                bad_rows.append(n)
                if len(bad_rows) <= MAX_REPEATED:
                    problems.append(
                        Problem(
                            label,
                            n,
                            1,
                            "",
                            f"row has {len(row)} column(s); the header has {width} "
                            f"({', '.join(header)})",
                            "quote cells that contain commas"
                            if len(row) > width
                            else "add the missing cells (leave a cell empty for none)",
                        )
                    )
    except csv.Error as exc:
        problems.append(Problem(label, reader.line_num, 1, "", f"CSV error: {exc}"))
    if len(bad_rows) > MAX_REPEATED:
        more = bad_rows[MAX_REPEATED:]
        problems.append(
            Problem(
                label,
                more[0],
                1,
                "",
                f"and {len(more):,} more row(s) with the "
                f"wrong number of columns (lines {more[0]}..{more[-1]})",
            )
        )
    if problems:
        raise ManifestError(problems)
    return items


def expand_matrix(
    matrix: Mapping[str, list[Any]], loaded: LoadedManifest, loc: Loc
) -> list[dict[str, Any]]:
    """GitHub-Actions semantics: product of the axes, minus `exclude` matches, plus `include`.

    An `include` entry extends every combination whose original-axis values it matches (it may
    overwrite values added by an earlier include, never an axis value); an entry that matches
    none becomes a combination of its own.
    """
    include = matrix.get("include", [])
    exclude = matrix.get("exclude", [])
    axes = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    problems = []
    for name, entries in (("include", include), ("exclude", exclude)):
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not entry:
                problems.append(
                    loaded.problem((*loc, name, i), f"each {name} entry must be a non-empty mapping")
                )
    for k, values in axes.items():
        if not values:
            problems.append(loaded.problem((*loc, k), f"matrix axis {k!r} has no values"))
    for i, entry in enumerate(exclude):
        if isinstance(entry, dict) and (unknown := sorted(set(entry) - set(axes), key=str)):
            problems.append(
                loaded.problem(
                    (*loc, "exclude", i),
                    f"exclude names unknown axis {unknown[0]!r}",
                    f"axes: {', '.join(axes)}",
                )
            )
    if problems:
        raise ManifestError(problems)
    combos: list[dict[str, Any]] = [{}] if axes else []
    for name, values in axes.items():
        combos = [{**c, name: v} for c in combos for v in values]
    combos = [c for c in combos if not any(all(c[k] == v for k, v in e.items()) for e in exclude)]
    extra: list[dict[str, Any]] = []
    for entry in include:
        matched = False
        for c in combos:
            if all(c[k] == v for k, v in entry.items() if k in axes):
                c.update({k: v for k, v in entry.items() if k not in axes})
                matched = True
        if not matched:
            extra.append(dict(entry))
    return combos + extra
