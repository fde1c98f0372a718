"""Structured outputs for simulated sessions: instances generated from a Draft 7 schema.

`valid_instance` builds a value that validates (checked with `launcher.api.models.output_errors`),
shaped like what a session reports: `success` (the first enum value, true flags, lists no longer
than required: a delivered session that did the job), `blocked` (the last enum value, false
flags, at least one list entry: a session that delivered a report of why it could not), or
`random`;
`invalid_instance` breaks one so a client's own validation can be exercised. Supported: type,
properties, required, additionalProperties, items (schema or tuple), min/maxItems, uniqueItems,
string min/maxLength and a few formats, integer/number bounds and multipleOf, boolean, null, enum,
const, allOf/anyOf/oneOf (first branch), local `#/...` `$ref`. Not supported: `pattern` (tried
with a few stock strings), if/then/else, dependencies, not: the result is then best effort and
`valid_instance` reports it as not valid.
"""

from __future__ import annotations

import copy
import random
import re
from typing import Any, Literal
from urllib.parse import unquote

from launcher.api.models import output_errors

_WORDS = ("alpha", "bravo", "fix", "tests", "refactor", "module", "update", "docs", "build")
_PATTERN_TRIES = ("a", "abc", "A1", "x-1", "123", "a1b2c3", "ABC-123", "v1.0.0", "main")
_MAX_DEPTH = 12


Reports = Literal["success", "blocked", "random"]


class _Generator:
    def __init__(self, root: dict[str, Any], rng: random.Random, reports: Reports) -> None:
        self.root = root
        self.rng = rng
        self.reports = reports

    def resolve(self, ref: str) -> Any:
        node: Any = self.root
        for raw in ref.lstrip("#").split("/")[1:]:
            part = unquote(raw).replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    def gen(self, schema: Any, depth: int = 0) -> Any:
        if schema is True or not isinstance(schema, dict) or depth > _MAX_DEPTH:
            return "x" if schema is not False else None
        if "$ref" in schema:  # Draft 7: siblings of $ref are ignored
            return self.gen(self.resolve(str(schema["$ref"])), depth + 1)
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema and schema["enum"]:
            pick = {"success": 0, "blocked": -1}.get(self.reports)
            options = schema["enum"]
            return copy.deepcopy(self.rng.choice(options) if pick is None else options[pick])
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                sub = self.resolve(sub["$ref"]) if isinstance(sub, dict) and "$ref" in sub else sub
                if isinstance(sub, dict):
                    merged = _merge(merged, sub)
            return self.gen(merged, depth + 1)
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                rest = {k: v for k, v in schema.items() if k != key}
                return self.gen(_merge(rest, schema[key][0]), depth + 1)
        kind = _type_of(schema)
        if kind == "object":
            return self.gen_object(schema, depth)
        if kind == "array":
            return self.gen_array(schema, depth)
        if kind == "integer":
            return self.gen_integer(schema)
        if kind == "number":
            return self.gen_number(schema)
        if kind == "boolean":
            return {"success": True, "blocked": False}.get(self.reports, self.rng.random() < 0.5)
        if kind == "null":
            return None
        return self.gen_string(schema)

    def gen_object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        props: dict[str, Any] = schema.get("properties") or {}
        out = {name: self.gen(sub, depth + 1) for name, sub in props.items()}
        for name in schema.get("required") or []:
            out.setdefault(name, self.gen(_extra_schema(schema), depth + 1))
        extra = 0
        while len(out) < int(schema.get("minProperties", 0)):
            out[f"extra_{extra}"] = self.gen(_extra_schema(schema), depth + 1)
            extra += 1
        return out

    def gen_array(self, schema: dict[str, Any], depth: int) -> list[Any]:
        items = schema.get("items", {})
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 2)))
        if isinstance(items, list):
            out = [self.gen(sub, depth + 1) for sub in items[:high]]
            extra = schema.get("additionalItems", {})
            while len(out) < low:
                out.append(self.gen(extra, depth + 1))
            return out
        count = min(max(low, 0 if self.reports == "success" else 1), high)
        out = []
        for _ in range(count * 4 if schema.get("uniqueItems") else count):
            value = self.gen(items, depth + 1)
            if not schema.get("uniqueItems") or value not in out:
                out.append(value)
            if len(out) == count:
                break
        return out

    def gen_integer(self, schema: dict[str, Any]) -> int:
        low, high = _bounds(schema, 1)
        lo = int(low) if low is not None else (int(high) - 10 if high is not None else 0)
        hi = int(high) if high is not None else lo + 100
        value = self.rng.randint(lo, max(lo, hi))
        step = schema.get("multipleOf")
        if isinstance(step, int) and step > 0:
            value = -(-lo // step) * step
        return value

    def gen_number(self, schema: dict[str, Any]) -> float | int:
        if isinstance(schema.get("multipleOf"), int):
            return self.gen_integer(schema)
        low, high = _bounds(schema, 1e-6)
        lo = low if low is not None else (high - 10.0 if high is not None else 0.0)
        hi = high if high is not None else lo + 100.0
        value = round(self.rng.uniform(lo, max(lo, hi)), 3)
        return min(max(value, lo), hi) if hi >= lo else lo

    def gen_string(self, schema: dict[str, Any]) -> str:
        fmt = schema.get("format")
        n = self.rng.randrange(1000)
        text = {
            "date-time": f"2026-01-{n % 28 + 1:02d}T12:00:00Z",
            "date": f"2026-01-{n % 28 + 1:02d}",
            "time": "12:00:00Z",
            "email": f"dev{n}@example.com",
            "uri": f"https://example.com/item/{n}",
            "url": f"https://example.com/item/{n}",
            "uuid": f"00000000-0000-4000-8000-{n:012d}",
            "hostname": "example.com",
            "ipv4": "10.0.0.1",
        }.get(str(fmt), " ".join(self.rng.choice(_WORDS) for _ in range(3)))
        low = int(schema.get("minLength", 0))
        high = int(schema.get("maxLength", max(low, len(text))))
        if "pattern" in schema:
            pattern = re.compile(str(schema["pattern"]))
            for candidate in (text, *_PATTERN_TRIES):
                if pattern.search(candidate) and low <= len(candidate) <= high:
                    return candidate
        while len(text) < low:
            text += "x"
        return text[:high]


def _type_of(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        return str(kinds[0])
    if isinstance(kind, str):
        return kind
    if "properties" in schema or "required" in schema:
        return "object"
    if "items" in schema:
        return "array"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return "number"
    return "string"


def _bounds(schema: dict[str, Any], epsilon: float) -> tuple[float | None, float | None]:
    low = schema.get("minimum")
    if "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + epsilon
    high = schema.get("maximum")
    if "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - epsilon
    return low, high


def _extra_schema(schema: dict[str, Any]) -> Any:
    extra = schema.get("additionalProperties", {})
    return extra if isinstance(extra, dict) else {}


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties":
            out[key] = {**out.get(key, {}), **value}
        elif key == "required":
            out[key] = sorted({*out.get(key, []), *value})
        else:
            out[key] = value
    return out


def valid_instance(schema: dict[str, Any], seed: str, reports: Reports = "random") -> tuple[Any, bool]:
    """A value for `schema` and whether it validates (a few seeded attempts, then best effort)."""
    value: Any = None
    for attempt in range(4):
        value = _Generator(schema, random.Random(f"{seed}:{attempt}"), reports).gen(schema)
        if not output_errors(schema, value):
            return value, True
    return value, False


def _wrong_type(sub: Any) -> Any:
    kind = _type_of(sub) if isinstance(sub, dict) else "string"
    return {"string": 12345, "array": "not-an-array", "object": "not-an-object"}.get(
        kind, "not-a-" + kind
    )


def invalid_instance(schema: dict[str, Any], valid: Any) -> Any | None:
    """A copy of `valid` that `schema` rejects, or None when no simple breakage is found."""
    candidates: list[Any] = []
    if isinstance(valid, dict):
        for name in schema.get("required") or []:
            broken = dict(valid)
            broken.pop(name, None)
            candidates.append(broken)
        for name, sub in (schema.get("properties") or {}).items():
            candidates.append({**valid, name: _wrong_type(sub)})
        candidates.append({**valid, "unexpected_field": True})
    for candidate in candidates:
        if output_errors(schema, candidate):
            return candidate
    return None
