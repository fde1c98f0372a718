"""The output formats of `results`, in one registry: each format renders the per-session results
and the grouped counts (`--group-by`) as text. A new format is one entry here; `table` is drawn
by the CLI (rich), so its renderers are None."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from launcher.views.results import Results, crosstab_markdown, group_markdown, to_csv, to_markdown


@dataclass(frozen=True)
class Grouping:
    """Sessions counted per value of one column, or of two (rows by the first, columns by the
    second), in every shape a format needs."""

    title: str  # "<campaign>: sessions by <field>[ and <field>]"
    header: list[str]
    rows: list[list[Any]]
    records: list[dict[str, Any]]  # a row as {column: value}
    markdown: str


def grouping(res: Results, fields: Sequence[str]) -> Grouping:
    """Count `res` by one field or two (FieldError for a column no row has)."""
    a = res.resolve(fields[0])
    if len(fields) == 2:
        b = res.resolve(fields[1])
        cols, cross = res.crosstab(a, b)
        header = [a, *cols, "total"]
        rows = [[v, *(counts[c] for c in cols), sum(counts.values())] for v, counts in cross.items()]
        records = [{a: v, **counts, "total": sum(counts.values())} for v, counts in cross.items()]
        markdown = crosstab_markdown(a, b, cols, cross)
    else:
        groups = res.group(a)
        header = [a, "sessions"]
        rows = [[v, n] for v, n in groups.items()]
        records = [{a: v, "sessions": n} for v, n in groups.items()]
        markdown = group_markdown(a, groups)
    title = f"{res.campaign}: sessions by {' and '.join([a, *fields[1:]])}"
    return Grouping(title, header, rows, records, markdown)


def _json(data: Any) -> str:
    # One line, C encoder: thousands of rows; indenting costs 4x.
    return json.dumps(data, ensure_ascii=False) + "\n"


def _lines(records: Iterable[Any]) -> str:
    return "".join(_json(r) for r in records)


def _csv_rows(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


@dataclass(frozen=True)
class ResultsFormat:
    """One way to write the results: the rows, and the grouped counts."""

    name: str
    # the rows, in the columns chosen (None: the format's own); None: the CLI draws it
    results: Callable[[Results, Sequence[str] | None], str] | None
    groups: Callable[[Grouping], str] | None

    @property
    def drawn(self) -> bool:
        """Drawn for a person by the CLI (the totals line then goes to stdout, under it)."""
        return self.results is None


FORMATS: dict[str, ResultsFormat] = {
    f.name: f
    for f in (
        ResultsFormat("table", None, None),
        # JSON carries every column: a script picks what it reads
        ResultsFormat("json", lambda r, _c: _json(r.to_json()), lambda g: _json(g.records)),
        ResultsFormat("jsonl", lambda r, _c: _lines(r.records()), lambda g: _lines(g.records)),
        ResultsFormat("csv", to_csv, lambda g: _csv_rows(g.header, g.rows)),
        ResultsFormat("markdown", to_markdown, lambda g: g.markdown),
    )
}
