"""Properties of the planner's pure core: matrix sizes, and keys that are unique and survive
reordering and insertion of items."""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.spec.build import build_plan
from launcher.spec.manifest import load_manifest
from launcher.spec.plan import Plan

SETTINGS = settings(max_examples=60, deadline=None)


def plan_from(manifest: dict[str, Any], files: dict[str, str] | None = None) -> Plan:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (files or {}).items():
            Path(tmp, name).write_text(text, encoding="utf-8")
        path = Path(tmp, "m.yaml")
        path.write_text(json.dumps(manifest), encoding="utf-8")  # JSON is YAML
        return build_plan(load_manifest(path), environ={})


def one_fleet(for_each: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    fleet: dict[str, Any] = {
        "name": "f",
        "for_each": for_each,
        "session": {"prompt": "do {{ item }}", "max_acu_limit": 2},
    }
    if key is not None:
        fleet["key"] = key
    return {"version": 1, "campaign": "prop", "fleets": [fleet]}


@st.composite
def matrices(draw: st.DrawFn) -> tuple[dict[str, list[Any]], int]:
    """A matrix with excludes (whole combinations) and includes that match no combination,
    and the number of items it must expand to."""
    names = draw(
        st.lists(st.sampled_from(["os", "py", "repo", "task"]), min_size=1, max_size=3, unique=True)
    )
    axes = {n: [f"{n}{i}" for i in range(draw(st.integers(1, 4)))] for n in names}
    combos = [dict(zip(names, values, strict=True)) for values in itertools.product(*axes.values())]
    exclude = draw(
        st.lists(st.sampled_from(combos), unique_by=lambda c: tuple(c.values()), max_size=len(combos))
    )
    n_include = draw(st.integers(0, 3))
    include = [
        {names[0]: f"new{j}", **{n: draw(st.sampled_from(axes[n])) for n in names[1:]}}
        for j in range(n_include)
    ]
    matrix: dict[str, list[Any]] = dict(axes)
    if exclude:
        matrix["exclude"] = exclude
    if include:
        matrix["include"] = include
    expected = math.prod(len(v) for v in axes.values()) - len(exclude) + n_include
    return matrix, expected


@SETTINGS
@given(matrices())
def test_matrix_size_is_product_minus_excludes_plus_includes(
    case: tuple[dict[str, list[Any]], int],
) -> None:
    matrix, expected = case
    if expected == 0:
        return  # everything excluded: an empty fleet, refused (tested elsewhere)
    plan = plan_from(one_fleet({"matrix": matrix}))
    assert len(plan) == expected
    assert len({s.key for s in plan.sessions}) == expected
    excluded = [tuple(e.values()) for e in matrix.get("exclude", [])]
    assert not any(
        tuple(s.item[n] for n in matrix if n not in ("include", "exclude")) in excluded
        for s in plan.sessions
    )


@SETTINGS
@given(matrices(), st.sampled_from(["lint", "tests"]))
def test_an_include_without_axis_values_extends_every_combination(
    case: tuple[dict[str, list[Any]], int], extra: str
) -> None:
    matrix, _ = case
    matrix = {k: v for k, v in matrix.items() if k not in ("include", "exclude")}
    plan = plan_from(one_fleet({"matrix": {**matrix, "include": [{"extra": extra}]}}))
    assert len(plan) == math.prod(len(v) for v in matrix.values())
    assert all(s.item["extra"] == extra for s in plan.sessions)


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/_.,", min_size=1, max_size=10)


@st.composite
def item_lists(draw: st.DrawFn) -> list[dict[str, Any]]:
    repos = draw(st.lists(NAMES, min_size=1, max_size=12, unique=True))
    return [
        {"repo": r, **({"acu": draw(st.integers(1, 9))} if draw(st.booleans()) else {})} for r in repos
    ]


def key_map(plan: Plan) -> dict[str, str]:
    keys = [s.key for s in plan.sessions]
    assert len(set(keys)) == len(keys)
    return {s.key: s.fingerprint for s in plan.sessions}


@SETTINGS
@given(item_lists(), st.data(), st.sampled_from([None, "{{ item.repo }}"]))
def test_inline_item_keys_survive_reordering(
    items: list[dict[str, Any]], data: st.DataObject, key: str | None
) -> None:
    shuffled = data.draw(st.permutations(items))
    first = key_map(plan_from(one_fleet({"items": items}, key)))
    again = key_map(plan_from(one_fleet({"items": shuffled}, key)))
    assert first == again and len(first) == len(items)


def as_csv(items: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=["repo", "acu"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(items)
    return out.getvalue()


@SETTINGS
@given(item_lists(), st.data())
def test_csv_row_keys_survive_reordering_and_insertion(
    items: list[dict[str, Any]], data: st.DataObject
) -> None:
    manifest = one_fleet({"file": "rows.csv"}, "{{ item.repo }}")
    manifest["fleets"][0]["session"]["max_acu_limit"] = "{{ item.acu | default(1) }}"
    first = key_map(plan_from(manifest, {"rows.csv": as_csv(items)}))
    shuffled = data.draw(st.permutations(items))
    at = data.draw(st.integers(0, len(items)))
    grown = [*shuffled[:at], {"repo": "inserted/row", "acu": 3}, *shuffled[at:]]
    if any(i["repo"] == "inserted/row" for i in items):
        return
    again = key_map(plan_from(manifest, {"rows.csv": as_csv(grown)}))
    assert {k: v for k, v in again.items() if k != "inserted/row"} == first
    assert "inserted/row" in again
