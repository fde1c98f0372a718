"""Results: the fleet as a report. One flat row per session (key, item columns, outcome, reason,
attempt, pull request, ACUs, then one column per structured-output field in schema order),
filters, grouping (one-way and two-way counts), and the text formats (CSV, markdown).

Rows hold typed values (bool, number, list, None); the formats decide how they read: CSV
writes `true`/`false`, lists joined by "; ", nothing for null (RFC 4180 quoting).
"""

from __future__ import annotations

import csv
import dataclasses
import fnmatch
import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.run.status import CampaignView, Outcome, SessionView

MISSING = "(missing)"
FIXED_BEFORE = ("key", "fleet")
FIXED_MIDDLE = ("outcome", "reason", "status", "attempt", "pr_url", "pr_state", "acus")
FIXED_AFTER = ("output_valid", "output_errors", "session_id", "url")
ACU_DIGITS = 2


class FieldError(ValueError):
    """A grouping field that no row has (internal: the CLI turns it into a usage error)."""

    def __init__(self, name: str, available: Sequence[str]) -> None:
        super().__init__(f"no column {name!r}")
        self.name = name
        self.available = list(available)


def schema_fields(schema: Mapping[str, Any] | None, prefix: str = "output") -> list[str]:
    """A structured-output schema's fields in declaration order, nested objects as dotted names."""
    if not schema or not isinstance(schema.get("properties"), Mapping):
        return []
    out: list[str] = []
    for name, sub in schema["properties"].items():
        path = f"{prefix}.{name}"
        nested = schema_fields(sub, path) if isinstance(sub, Mapping) else []
        out.extend(nested or [path])
    return out


def flatten(value: Any, prefix: str = "output") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists and scalars kept as they are."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}"))
        return out
    return {prefix: value}


@dataclass(frozen=True)
class Results:
    """The selected sessions of a campaign as rows, with their columns in a stable order."""

    campaign: str
    columns: list[str]
    rows: list[dict[str, Any]]
    sessions: list[SessionView]
    budget_acu: int | None = None

    def counts(self) -> dict[str, int]:
        c = Counter(s.outcome.value for s in self.sessions)
        return {o.value: c.get(o.value, 0) for o in Outcome}

    def totals(self) -> dict[str, Any]:
        return {
            "sessions": len(self.sessions),
            "succeeded": sum(1 for s in self.sessions if s.outcome is Outcome.succeeded),
            "pull_requests": sum(len(s.pr_urls) for s in self.sessions),
            # the sum of the rounded figures: the rows a reader sees add up to the total
            "acus_consumed": acus(sum(acus(s.acus_consumed) or 0 for s in self.sessions)),
            "max_total_acu": self.budget_acu,
            # outputs that break the schema; ended sessions that delivered none (running ones
            # have not had the chance: they are not counted)
            "invalid_outputs": sum(
                1 for s in self.sessions if s.structured_output is not None and s.output_valid is False
            ),
            "missing_outputs": sum(
                1
                for s in self.sessions
                if s.structured_output is None
                and s.output_valid is False
                and s.outcome in (Outcome.succeeded, Outcome.failed)
                and s.session_id
            ),
        }

    def records(self) -> list[dict[str, Any]]:
        """One nested record per session (jsonl, json): the output as the session gave it."""
        return [
            {
                **s.result_json(),
                **({"output_valid": None, "output_errors": []} if _not_yet(s) else {}),
                "fleet": s.fleet,
                "status": s.status,
                "status_detail": s.status_detail,
                "reason": s.reason or None,
                "attempt": s.attempt,
                "latest": s.latest,
                "pr_states": [str(p.get("pr_state") or "") for p in s.pull_requests if p.get("pr_url")],
                "acus_consumed": acus(s.acus_consumed),
            }
            for s in self.sessions
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "counts": self.counts(),
            "totals": self.totals(),
            "sessions": self.records(),
        }

    def group(self, field: str) -> dict[str, int]:
        """Sessions per value of a column (a list counts once per element), largest first."""
        name = self.resolve(field)
        counts: Counter[str] = Counter()
        for row in self.rows:
            for label in _labels(row.get(name)):
                counts[label] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def crosstab(self, first: str, second: str) -> tuple[list[str], dict[str, dict[str, int]]]:
        """Two-way counts: (the second field's values, {first value: {second value: n}})."""
        a, b = self.resolve(first), self.resolve(second)
        table: dict[str, Counter[str]] = {}
        seconds: Counter[str] = Counter()
        for row in self.rows:
            for la in _labels(row.get(a)):
                for lb in _labels(row.get(b)):
                    table.setdefault(la, Counter())[lb] += 1
                    seconds[lb] += 1
        cols = sorted(seconds, key=lambda v: (-seconds[v], v))
        order = sorted(table, key=lambda v: (-sum(table[v].values()), v))
        return cols, {v: {c: table[v].get(c, 0) for c in cols} for v in order}

    def resolve(self, field: str) -> str:
        """A column name from what a user typed: a column, or a bare output field."""
        if field in self.columns:
            return field
        for candidate in (f"output.{field}", f"item.{field}"):
            if candidate in self.columns:
                return candidate
        raise FieldError(field, self.columns)


def acus(value: float | None) -> float | None:
    """ACUs as every format shows them: two decimals."""
    return None if value is None else round(value, ACU_DIGITS)


def _labels(value: Any) -> list[str]:
    if isinstance(value, list):
        return [cell(v) or MISSING for v in value] or ["(empty)"]
    text = cell(value)
    return [text if text != "" else MISSING]


def cell_of(column: str, value: Any) -> str:
    """A column's value as text: ACUs always with two decimals, the rest as `cell`."""
    if column == "acus" and isinstance(value, int | float):
        return f"{value:.{ACU_DIGITS}f}"
    return cell(value)


def cell(value: Any) -> str:
    """One value as text (CSV, markdown, table): true/false, lists joined by "; ", null empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(cell(v) if not isinstance(v, dict | list) else _compact(v) for v in value)
    if isinstance(value, dict):
        return _compact(value)
    return str(value)


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def select(
    view: CampaignView, outcomes: Iterable[str] = (), only: Iterable[str] = ()
) -> list[SessionView]:
    """Sessions whose outcome is one of `outcomes` and whose key matches one of the globs."""
    wanted, globs = set(outcomes), list(only)
    return [
        s
        for s in view.sessions
        if (not wanted or s.outcome.value in wanted)
        and (not globs or any(fnmatch.fnmatchcase(s.key, g) for g in globs))
    ]


def with_history(
    chosen: list[SessionView],
    earlier: Mapping[str, list[SessionView]],
    outcomes: Sequence[str] = (),
) -> list[SessionView]:
    """Each chosen key's earlier attempts (oldest first; with `outcomes`, only those) before
    its latest: what `results --history` lists."""
    out: list[SessionView] = []
    for s in chosen:
        out += [
            dataclasses.replace(e, fleet=s.fleet)
            for e in earlier.get(s.key, [])
            if not outcomes or e.outcome.value in outcomes
        ]
        out.append(s)
    return out


def build_results(
    view: CampaignView,
    schemas: Mapping[str, Mapping[str, Any] | None],
    sessions: Sequence[SessionView] | None = None,
) -> Results:
    """Rows of `sessions` (default: all of the view) with columns in schema order."""
    chosen = list(view.sessions if sessions is None else sessions)
    out_fields: list[str] = []
    for schema in schemas.values():
        out_fields.extend(schema_fields(schema))
    out_fields = list(dict.fromkeys(out_fields))
    item_cols: dict[str, None] = {}
    extra_out: dict[str, None] = {}
    rows = []
    for s in chosen:
        row = _row(s)
        for k in row:
            if k.startswith("item."):
                item_cols.setdefault(k)
            elif k.startswith("output.") and k not in out_fields:
                extra_out.setdefault(k)
        rows.append(row)
    # Output fields no schema names (a fleet without a schema) come after, sorted: stable
    columns = [
        *FIXED_BEFORE,
        *item_cols,
        *FIXED_MIDDLE,
        *out_fields,
        *sorted(extra_out),
        *FIXED_AFTER,
    ]
    ordered = [{c: row.get(c) for c in columns} for row in rows]
    return Results(view.campaign, columns, ordered, chosen, view.budget_acu)


def _not_yet(s: SessionView) -> bool:
    """A session still on its way with no output: its output is not invalid, just not there yet."""
    return s.structured_output is None and s.outcome in (Outcome.running, Outcome.not_launched)


def _row(s: SessionView) -> dict[str, Any]:
    row: dict[str, Any] = {"key": s.key, "fleet": s.fleet}
    if isinstance(s.item, Mapping):
        row.update({f"item.{k}": v for k, v in s.item.items()})
    elif s.item is not None:
        row["item.value"] = s.item
    prs = [p for p in s.pull_requests if p.get("pr_url")]
    row.update(
        {
            "outcome": s.outcome.value,
            "reason": s.reason or None,
            "status": s.status,
            "attempt": s.attempt,
            "pr_url": " ".join(str(p["pr_url"]) for p in prs) or None,
            "pr_state": " ".join(str(p.get("pr_state") or "") for p in prs).strip() or None,
            "acus": acus(s.acus_consumed),
            "output_valid": None if _not_yet(s) else s.output_valid,
            "output_errors": None if _not_yet(s) else s.output_errors or None,
            "session_id": s.session_id,
            "url": s.url,
        }
    )
    if s.structured_output is not None:
        row.update(flatten(s.structured_output))
    return row


def to_csv(results: Results) -> str:
    """RFC 4180: CRLF line ends, quotes where needed; header in column order."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(results.columns)
    for row in results.rows:
        w.writerow([cell_of(c, row[c]) for c in results.columns])
    return buf.getvalue()


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("\r", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(
            "| " + " | ".join(_md(cell_of(h, v)) for h, v in zip(header, r, strict=True)) + " |"
        )
    return "\n".join(lines)


def totals_line(results: Results) -> str:
    t = results.totals()
    budget = f" of a {t['max_total_acu']} ACU budget" if t["max_total_acu"] else ""
    return (
        f"{t['sessions']} sessions, {t['succeeded']} succeeded, {t['pull_requests']} PRs "
        f"opened, {t['acus_consumed']:g} ACUs consumed{budget}, {t['invalid_outputs']} invalid "
        f"and {t['missing_outputs']} missing outputs"
    )


def to_markdown(results: Results, columns: Sequence[str] | None = None) -> str:
    """A PR comment / CI job summary: title, outcome counts, totals, the per-session table."""
    cols = list(columns or table_columns(results))
    counts = ", ".join(f"{k} {v}" for k, v in results.counts().items() if v) or "no sessions"
    parts = [
        f"### Campaign `{results.campaign}`",
        "",
        f"**{counts}** · {totals_line(results)}",
        "",
        md_table(cols, ([row[c] for c in cols] for row in results.rows)),
    ]
    return "\n".join(parts) + "\n"


def table_columns(results: Results) -> list[str]:
    """The columns a human reads (no ids, no validity details); the rest are in csv/json."""
    hidden = {"fleet", "status", "output_errors", "session_id", "url"}
    if len({s.fleet for s in results.sessions}) > 1:
        hidden.discard("fleet")
    return [c for c in results.columns if c not in hidden]


def group_markdown(field: str, groups: Mapping[str, int]) -> str:
    return md_table([field, "sessions"], groups.items()) + "\n"


def crosstab_markdown(
    first: str, second: str, cols: list[str], table: Mapping[str, Mapping[str, int]]
) -> str:
    header = [f"{first} by {second}", *cols, "total"]
    rows = ([v, *(counts[c] for c in cols), sum(counts.values())] for v, counts in table.items())
    return md_table(header, rows) + "\n"
