"""The campaign report (`devin-fleet report`): one self-contained HTML file, inline CSS and SVG,
no scripts, no fonts or anything else fetched from the network, every value escaped.

Sections: header, the headline figures (sessions, succeeded, needing attention, pull requests
opened and merged, ACUs), outcome counts as a bar, ACUs against the budget, outcomes by launch time
(and by fleet when there are several), per-field summaries of the structured output, and the
per-session table (what needs attention first, fitted to the page) with links to sessions and
pull requests (http(s) links only).
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

from launcher.run.outcome import CampaignView, Outcome
from launcher.spec.plan import Plan
from launcher.views.results import MISSING, Results, build_results, by_attention, cell_of

COLOURS = {
    "succeeded": "#2e7d32",
    "needs-human": "#f9a825",
    "failed": "#c62828",
    "running": "#1565c0",
    "cancelled": "#757575",
    "not-launched": "#bdbdbd",
}
MAX_BINS = 12
TOP_VALUES = 8

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:2rem;color:#212121;background:#fff;max-width:1200px}svg{max-width:100%;height:auto}
h1{margin:0 0 .25rem}h2{margin-top:2rem;border-bottom:1px solid #e0e0e0;padding-bottom:.25rem}
.muted{color:#616161}.legend span{display:inline-block;margin-right:1rem}
.sw{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border:1px solid #e0e0e0;padding:.25rem .4rem;text-align:left;vertical-align:top}
th{background:#f5f5f5}#session-table{table-layout:fixed}
#session-table td{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
#session-table th{overflow-wrap:anywhere}#session-table td.num{text-align:right}
.kpis{display:flex;flex-wrap:wrap;gap:1rem;margin:1rem 0}.kpi{border:1px solid #e0e0e0;
border-radius:6px;padding:.6rem 1rem;min-width:9rem}.kpi b{display:block;font-size:1.6rem}
.kpi.alert b{color:#c62828}
.badge{color:#fff;border-radius:3px;padding:0 .3rem;white-space:nowrap}
.fields{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:1rem}
.field{border:1px solid #e0e0e0;border-radius:4px;padding:.5rem}.field h3{margin:.1rem 0 .4rem;
font-size:.95rem}.field table{font-size:.8rem}
"""


def render_report(
    plan: Plan,
    view: CampaignView,
    launched_at: Mapping[str, float | None],
    *,
    now: float | None = None,
) -> str:
    """The report as HTML text. `launched_at` maps keys to creation times (from the ledger)."""
    res = build_results(view, plan.schemas, by_attention(view.sessions))
    m = plan.manifest.manifest
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(time.time() if now is None else now))
    counts = res.counts()
    totals = res.totals()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(m.campaign)}: campaign report</title>",
        f"<style>{CSS}</style></head><body>",
        f'<header><h1 id="campaign">Campaign {escape(m.campaign)}</h1>',
        f'<p class="muted">{escape(m.description or "")}</p>' if m.description else "",
        f'<p class="muted" id="generated">{len(res.rows)} sessions · generated {generated}'
        + (f" · success rule: <code>{escape(m.success_when)}</code>" if m.success_when else "")
        + "</p></header>",
        _headline(res),
        '<section id="outcomes"><h2>Outcomes</h2>',
        _legend(counts),
        _stacked_bar(counts, width=800, height=28),
        "</section>",
        '<section id="acus"><h2>ACUs</h2>',
        _acus(totals["acus_consumed"], totals["max_total_acu"], plan.total_acu),
        "</section>",
        '<section id="timeline"><h2>Outcomes by launch time</h2>',
        _timeline(res, launched_at),
        "</section>",
    ]
    fleets = sorted({s.fleet for s in res.sessions})
    if len(fleets) > 1:
        by_fleet = {f: Counter(s.outcome.value for s in res.sessions if s.fleet == f) for f in fleets}
        parts += [
            '<section id="by-fleet"><h2>Outcomes by fleet</h2>',
            _columns_chart([(f, dict(c)) for f, c in by_fleet.items()], x_title="fleet"),
            "</section>",
        ]
    parts += [
        '<section id="fields"><h2>Structured output</h2>',
        _field_summaries(res),
        "</section>",
        '<section id="sessions"><h2>Sessions</h2>',
        _sessions_table(res),
        "</section>",
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"


def _headline(res: Results) -> str:
    """What a manager reads first: sessions, succeeded, needing attention, PRs, ACUs."""
    counts = res.counts()
    n = len(res.sessions)
    ok = counts[Outcome.succeeded]
    attention = counts[Outcome.failed] + counts[Outcome.needs_human]
    states = Counter(
        str(p.get("pr_state") or "?").lower()
        for s in res.sessions
        for p in s.pull_requests
        if p.get("pr_url")
    )
    tiles = [
        ("sessions", str(n), "", ""),
        ("succeeded", str(ok), f"{100 * ok / n:.0f}% of the sessions" if n else "", ""),
        (
            "need attention",
            str(attention),
            "failed or waiting for a person",
            "alert" if attention else "",
        ),
        ("pull requests opened", str(sum(states.values())), f"{states['merged']} merged", ""),
        ("ACUs consumed", f"{res.totals()['acus_consumed']:.2f}", "", ""),
    ]
    body = "".join(
        f'<div class="kpi {cls}" id="kpi-{escape(name.replace(" ", "-"))}"><b>{escape(value)}</b>'
        f"{escape(name)}{f'<br><span class=muted>{escape(note)}</span>' if note else ''}</div>"
        for name, value, note, cls in tiles
    )
    return f'<section id="summary" class="kpis">{body}</section>'


def _legend(counts: Mapping[str, int]) -> str:
    items = "".join(
        f'<span data-outcome="{escape(o)}" data-count="{n}"><i class="sw" '
        f'style="background:{COLOURS[o]}"></i>{escape(o)}: <b>{n}</b></span>'
        for o, n in counts.items()
        if n
    )
    return f'<p class="legend">{items or "no sessions"}</p>'


def _stacked_bar(counts: Mapping[str, int], *, width: int, height: int) -> str:
    total = sum(counts.values())
    rects, x = [], 0.0
    for o, n in counts.items():
        if not n:
            continue
        w = width * n / total
        rects.append(
            f'<rect class="seg" data-outcome="{escape(o)}" x="{x:.1f}" y="0" width="{w:.1f}" '
            f'height="{height}" fill="{COLOURS[o]}"><title>{escape(o)}: {n}</title></rect>'
        )
        x += w
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="outcome counts" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">{"".join(rects)}</svg>'
    )


def _acus(consumed: float, budget: int | None, planned_max: int) -> str:
    width, height = 800, 22
    scale = float(budget or planned_max or consumed or 1)
    used = min(width, width * consumed / scale) if scale else 0
    text = f"{consumed:.2f} ACUs consumed"
    if budget:
        text += f" of a {budget} ACU budget ({100 * consumed / budget:.1f}%)"
    if planned_max:
        text += f"; the plan's per-session caps add up to {planned_max}"
    return (
        f'<p id="acu-text">{escape(text)}</p>'
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="ACUs against the budget" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#eeeeee"/>'
        f'<rect id="acu-used" x="0" y="0" width="{used:.1f}" height="{height}" fill="#5e35b1"/>'
        "</svg>"
    )


def _timeline(res: Results, launched_at: Mapping[str, float | None]) -> str:
    times = [(launched_at.get(s.key), s.outcome.value) for s in res.sessions]
    known = [(t, o) for t, o in times if t is not None]
    if not known:
        return '<p class="muted">no session launched yet</p>'
    start, end = min(t for t, _ in known), max(t for t, _ in known)
    span = max(end - start, 1.0)
    bins = min(MAX_BINS, max(1, len(known)))
    columns: list[tuple[str, dict[str, int]]] = []
    for i in range(bins):
        lo = start + span * i / bins
        label = time.strftime("%m-%d %H:%M:%S", time.gmtime(lo))
        columns.append((label, {}))
    for t, o in known:
        i = min(bins - 1, int((t - start) / span * bins))
        columns[i][1][o] = columns[i][1].get(o, 0) + 1
    columns = [c for c in columns if c[1]]
    return _columns_chart(columns, x_title="launch time (UTC)", y_title="sessions")


def _columns_chart(
    columns: Sequence[tuple[str, Mapping[str, int]]], *, x_title: str = "", y_title: str = "sessions"
) -> str:
    """Stacked columns (one per label), coloured by outcome, with axis titles."""
    width, height, pad = 800, 240, 40
    peak = max((sum(c.values()) for _, c in columns), default=1) or 1
    slot = (width - pad) / max(1, len(columns))
    bar = min(60.0, max(4.0, slot * 0.7))
    shapes = []
    for i, (label, counts) in enumerate(columns):
        x = pad + i * slot + (slot - bar) / 2
        y = float(height - pad)
        for o in (o.value for o in Outcome):
            n = counts.get(o, 0)
            if not n:
                continue
            h = (height - 2 * pad) * n / peak
            y -= h
            shapes.append(
                f'<rect class="col" data-label="{escape(label)}" data-outcome="{o}" data-count="{n}" '
                f'x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{COLOURS[o]}">'
                f"<title>{escape(label)}: {o} {n}</title></rect>"
            )
        shapes.append(
            f'<text x="{x + bar / 2:.1f}" y="{height - pad + 13}" font-size="9" '
            f'text-anchor="middle">{escape(label[-8:])}</text>'
        )
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width}" y2="{height - pad}" stroke="#9e9e9e"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#9e9e9e"/>'
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">{peak}</text>'
        f'<text x="{pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">0</text>'
        f'<text class="axis-title" x="12" y="{height / 2:.0f}" font-size="11" text-anchor="middle" '
        f'transform="rotate(-90 12 {height / 2:.0f})">{escape(y_title)}</text>'
        + (
            f'<text class="axis-title" x="{(width + pad) / 2:.0f}" y="{height - 4}" font-size="11" '
            f'text-anchor="middle">{escape(x_title)}</text>'
            if x_title
            else ""
        )
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="outcomes" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}">{axis}{"".join(shapes)}</svg>'
    )


def _field_summaries(res: Results) -> str:
    fields = [c for c in res.columns if c.startswith("output.")]
    if not fields:
        return '<p class="muted">no structured output</p>'
    boxes = []
    for f in fields:
        values = [row[f] for row in res.rows if row[f] is not None]
        missing = len(res.rows) - len(values)
        numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
        if numbers and len(numbers) == len(values):
            stats = [
                ("sessions", len(numbers)),
                ("min", min(numbers)),
                ("median", statistics.median(numbers)),
                ("max", max(numbers)),
                ("sum", sum(numbers)),
            ]
            body = "".join(f"<tr><th>{k}</th><td>{escape(cell_of(f, v))}</td></tr>" for k, v in stats)
        elif _free_text(values):
            distinct = len({cell_of(f, v) for v in values})
            body = (
                f'<tr><td class="free-text">free text: {len(values)} value(s), {distinct} distinct '
                "(each in the session table)</td></tr>"
            )
        else:
            c: Counter[str] = Counter()
            for v in values:
                for label in v if isinstance(v, list) else [v]:
                    c[cell_of(f, label)] += 1
            top = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
            body = "".join(
                f'<tr><td>{escape(k)}</td><td data-count="{n}">{n}</td></tr>'
                for k, n in top[:TOP_VALUES]
            )
            if len(top) > TOP_VALUES:
                body += f'<tr><td class="muted">{len(top) - TOP_VALUES} more values</td><td></td></tr>'
        if missing:
            body += f'<tr><td class="muted">{MISSING}</td><td data-count="{missing}">{missing}</td></tr>'
        boxes.append(
            f'<div class="field" data-field="{escape(f)}"><h3>{escape(f.removeprefix("output."))}</h3>'
            f"<table>{body}</table></div>"
        )
    return f'<div class="fields">{"".join(boxes)}</div>'


def _free_text(values: Sequence[Any]) -> bool:
    """Strings that do not repeat (links, notes): counting their values tells nothing."""
    texts = [v for v in values if isinstance(v, str)]
    if not texts or len(texts) < len(values):
        return False
    distinct = len(set(texts))
    return (
        distinct > TOP_VALUES
        and distinct > len(texts) / 2
        or all(t.startswith(("http://", "https://")) for t in texts)
    )


def _link(url: Any, text: str) -> str:
    u = str(url or "")
    if not u.startswith(("https://", "http://")):
        return escape(text)
    return f'<a href="{escape(u, quote=True)}" rel="noopener noreferrer">{escape(text)}</a>'


def _sessions_table(res: Results) -> str:
    """A row per session, what needs attention first; fits the page (fixed layout: long cells
    end in "…" and carry their whole text as a tooltip)."""
    outputs = [c for c in res.columns if c.startswith("output.")]
    relaunched = any(s.attempt > 1 for s in res.sessions)
    cols = ["outcome", "reason", *(["attempt"] if relaunched else []), "acus", *outputs]

    def name(c: str) -> str:  # output fields by their own name, unless a fixed column has it
        bare = c.removeprefix("output.")
        if c == "acus":
            return "ACUs"
        return c if bare in res.columns or bare in ("key", "PR") else bare

    widths = {"key": 13, "PR": 8, "outcome": 10, "reason": 14, "attempt": 5, "acus": 5}
    fixed = sum(widths.get(c, 0) for c in ["key", "PR", *cols])
    share = max(4.0, (100 - fixed) / max(1, len(outputs)))
    colgroup = "".join(f'<col style="width:{widths.get(c, share):.1f}%">' for c in ["key", "PR", *cols])
    head = "".join(f"<th>{escape(name(c))}</th>" for c in ["key", "PR", *cols])
    rows = []
    for row, s in zip(res.rows, res.sessions, strict=True):
        prs = " ".join(
            _link(p.get("pr_url"), f"PR ({p.get('pr_state') or '?'})")
            for p in s.pull_requests
            if p.get("pr_url")
        )
        cells = [f'<td title="{escape(s.key)}">{_link(s.url, s.key)}</td>', f"<td>{prs}</td>"]
        for c in cols:
            text = cell_of(c, row[c])
            if c == "outcome":
                badge = f'<span class="badge" style="background:{COLOURS[text]}">{escape(text)}</span>'
                cells.append(f"<td>{badge}</td>")
            elif c in ("acus", "attempt"):
                cells.append(f'<td class="num">{escape(text)}</td>')
            else:
                cells.append(f'<td title="{escape(text)}">{escape(text)}</td>')
        rows.append(
            f'<tr data-key="{escape(s.key)}" data-outcome="{s.outcome.value}">{"".join(cells)}</tr>'
        )
    return (
        f'<table id="session-table"><colgroup>{colgroup}</colgroup><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
