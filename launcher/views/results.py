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
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.run.outcome import CampaignView, Outcome, SessionView

MISSING = "(missing)"
FIXED_BEFORE = ("key", "fleet")
FIXED_MIDDLE = ("outcome", "reason", "status", "attempt", "pr_url", "pr_state", "acus")
FIXED_AFTER = ("output_valid", "output_errors", "session_id", "url")
ACU_DIGITS = 2
ALIASES = {"pr": "pr_url", "acu": "acus", "session": "url", "session_url": "url"}
# The narrow default: what a reader scans for; output fields follow while the width allows.
NARROW = ("key", "outcome", "reason", "pr_url", "acus")
CELL_CAP = 48  # a free-text cell longer than this is cut (with "…") in the text table
UNCUT = frozenset({"key", "pr_url", "url", "session_id"})  # links and ids are never cut
KEPT = frozenset({"key", "outcome", "attempt"})  # on a terminal, what a row is: never cut


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
        """A column name from what a user typed: a column, an alias (`pr`, `ACUs`), or a bare
        output or item field."""
        field = ALIASES.get(field.lower(), field)
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
    """Sessions whose outcome is one of `outcomes` and whose key matches one of the globs
    (`status`, `results`, `report`, `message` filter alike)."""
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


def by_attention(sessions: Iterable[SessionView]) -> list[SessionView]:
    """Failed, needs-human, running, not launched, cancelled, succeeded; plan order within each
    (a stable sort: a person's eye lands on what to act on first)."""
    return sorted(sessions, key=lambda s: s.outcome.rank)


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


def to_csv(results: Results, columns: Sequence[str] | None = None) -> str:
    """RFC 4180: CRLF line ends, quotes where needed; header in column order (every column,
    or those chosen)."""
    cols = list(columns or results.columns)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(cols)
    for row in results.rows:
        w.writerow([cell_of(c, row[c]) for c in cols])
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


# =========================================================================== the text table


def choose_columns(results: Results, names: Iterable[str]) -> list[str]:
    """The columns a user named (`--columns key,outcome,output.x`; `all` for every column),
    resolved (bare output fields, aliases); raises FieldError for an unknown one."""
    chosen: list[str] = []
    for name in names:
        for part in (p.strip() for p in name.split(",")):
            if part == "all":
                chosen.extend(results.columns)
            elif part:
                chosen.append(results.resolve(part))
    return list(dict.fromkeys(chosen))


def default_columns(results: Results, width: int | None) -> list[str]:
    """The narrow table: key, outcome, reason, PR, ACUs (the fleet and the attempt when they
    tell something), then the output fields, in schema order, that fit in `width` characters
    (None: not a terminal; every output field, then the session URL: one long line a session,
    for grep and logs)."""
    base = list(NARROW)
    if len({s.fleet for s in results.sessions}) > 1:
        base.insert(1, "fleet")
    if any(s.attempt > 1 for s in results.sessions):
        base.insert(base.index("outcome"), "attempt")
    outputs = [c for c in results.columns if c.startswith("output.")]
    if width is None:
        return [*base, *outputs, "url"]
    widths = column_widths(results, [*base, *outputs], terminal=True)
    used = sum(widths[c] + 3 for c in base)  # a cell's padding and the rule between
    for c in outputs:
        if used + widths[c] + 3 > width:
            break
        base.append(c)
        used += widths[c] + 3
    return base


def heading(results: Results, column: str) -> str:
    """A column's heading: output fields by their bare name (unless a fixed column has it)."""
    if column == "pr_url":
        return "PR"
    if column == "acus":
        return "ACUs"
    bare = column.removeprefix("output.")
    return column if bare in results.columns or bare in ("PR", "ACUs") else bare


def short_pr(url: str) -> str:
    """`https://github.com/acme/api/pull/7` -> `acme/api#7` (the terminal links the full URL)."""
    head, sep, number = url.rstrip("/").rpartition("/pull/")
    if not sep or "://" not in head:
        return url
    path = head.split("://", 1)[1].split("/", 1)
    return f"{path[1] if len(path) > 1 else path[0]}#{number}"


def display(column: str, value: Any, *, terminal: bool = False) -> str:
    """A cell as the text table shows it: one line; free text cut at CELL_CAP; on a terminal
    pull requests as `owner/repo#n` (linked)."""
    text = cell_of(column, value).replace("\r", " ").replace("\n", " ")
    if terminal and column == "pr_url" and text:
        return " ".join(short_pr(u) for u in text.split())
    if column not in UNCUT and len(text) > CELL_CAP:
        return text[: CELL_CAP - 1] + "…"
    return text


def column_widths(results: Results, columns: Sequence[str], *, terminal: bool) -> dict[str, int]:
    widths = {c: len(heading(results, c)) for c in columns}
    for row in results.rows:
        for c in columns:
            n = len(display(c, row.get(c), terminal=terminal))
            if n > widths[c]:
                widths[c] = n
    return widths


def fit_widths(
    natural: Mapping[str, int],
    width: int,
    *,
    overhead: tuple[int, int] = (3, -3),
    keep: Collection[str] = KEPT,
    drop: Sequence[str] = (),
    floor: int = 8,
) -> dict[str, int]:
    """Cell widths (in `natural`'s order) for a table `width` characters wide, each column
    costing `overhead[0]` more (padding, rule) and the table `overhead[1]`: the `keep` columns
    (what a row is: its key, its outcome) whole; the others cut, the widest first, to no less
    than `floor`. The `drop` columns (a URL the key links to: worthless cut) are whole or left
    out, in order, when the rest cannot fit otherwise. Kept columns are never cut (as `gh`
    cuts a title, never an id): a terminal too narrow for them wraps the line instead."""
    cols = dict(natural)
    pending = [c for c in drop if c in cols]
    while True:
        whole = {*keep, *pending}
        room = width - overhead[1] - overhead[0] * len(cols)
        room -= sum(w for c, w in cols.items() if c in whole)
        cut = [w for c, w in cols.items() if c not in whole]
        level = max(cut, default=0)
        while level > floor and sum(min(w, level) for w in cut) > room:
            level -= 1
        if not pending or sum(min(w, level) for w in cut) <= room:
            return {c: w if c in whole else min(w, level) for c, w in cols.items()}
        del cols[pending.pop(0)]


def aligned_lines(
    header: Sequence[str], rows: Iterable[Sequence[str]], right: Collection[int] = ()
) -> list[str]:
    """A header and rows as aligned text, one line a row, never wrapped or cut (cells made one
    line; the `right` columns, counts, right-aligned): a text table for a pipe, a file or a
    CI log."""
    body = [[c.replace("\r", " ").replace("\n", " ") for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in body)]) for i, h in enumerate(header)]
    return [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [list(header), *body]
    ]


def plain_lines(results: Results, columns: Sequence[str]) -> list[str]:
    """The table as aligned text, a header then one line per session, never wrapped: what
    `results` writes when its output is not a terminal (a file, grep, a CI log)."""
    widths = column_widths(results, columns, terminal=False)
    last = columns[-1] if columns else ""

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            t if c == last else t.ljust(widths[c]) for c, t in zip(columns, cells, strict=True)
        ).rstrip()

    out = [line([heading(results, c) for c in columns])]
    out += [line([display(c, row.get(c)) for c in columns]) for row in results.rows]
    return out


def counts_line(results: Results) -> str:
    """`failed: 3  needs-human: 2  succeeded: 35`: the outcome counts, attention first."""
    counts = results.counts()
    ranked = sorted(counts, key=lambda o: Outcome(o).rank)
    return "  ".join(f"{o}: {counts[o]}" for o in ranked if counts[o]) or "no sessions"


def needing_attention(results: Results) -> list[SessionView]:
    """Sessions a person should look at: failed, needing a human (attention order)."""
    return [s for s in results.sessions if s.outcome in (Outcome.failed, Outcome.needs_human)]
