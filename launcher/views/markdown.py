"""The plan as markdown, for a pull-request comment or a CI step summary: the summary first, then
the sessions grouped by change, prompts folded in <details>; fitted to a size budget at line
boundaries, saying what it left out. Also `fit_markdown`, the same cut for any markdown."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from launcher.spec.plan import Plan

Unit = Literal["chars", "bytes"]
COMMENT_LIMIT = 65_536  # characters: GitHub refuses a longer comment body (422)
DEFAULT_BUDGET = 65_000  # a little under the limit: room for pr-comment's hidden marker line
SUMMARY_LIMIT = 1_048_576  # bytes: GitHub's limit for one step's summary (1 MiB)
MORE_HINT = "the full plan: `devin-fleet plan MANIFEST --show-prompts` (or the workflow log)"
_CELL = 80  # characters of a table cell; the full text is in the prompt block or the log
_PROMPT_LINES = 200  # lines of one prompt shown; the rest are counted
_FOOTER = 700  # units kept for the note that says what was left out
_GROUP_NOTE = 160  # units kept per group for its heading and "N more" line
_WORDS = {"~": "changed", "+": "to create", "-": "gone", "?": "to reconcile", "=": "unchanged"}
_DIGEST_LINE = re.compile(r"^<!-- devin-fleet:plan-digest (sha256:[0-9a-f]{64}) -->$", re.M)
# The order of the sections: what changes first, then what stays.
_GROUPS = (
    ("~", "changed since launch (a relaunch replaces them: `apply --relaunch changed`)"),
    ("+", "to create"),
    ("-", "gone from the manifest (`cancel --gone` ends the live ones)"),
    ("?", "to reconcile (an earlier outcome is unknown: apply looks it up first)"),
)


def size(text: str, unit: Unit = "chars") -> int:
    """Characters as GitHub may count them (UTF-16 code units: an emoji counts twice, so the
    count is never below the code points), or UTF-8 bytes (the step summary's unit)."""
    if unit == "bytes":
        return len(text.encode("utf-8"))
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class PlanRow:
    """One session (or one `-` key) as the markdown shows it."""

    change: str  # "+", "=", "~", "-", "?"
    key: str
    note: str = ""
    fleet: str = ""
    wave: int | None = None
    title: str = ""
    acu: int | None = None
    changed_fields: Sequence[str] | None = None  # for `~`: the fields that differ (None: unknown)
    prompt: str | None = None
    diff: str | None = None  # for `~`: launched -> manifest (a unified diff of the prompt)


@dataclass(frozen=True)
class PlanView:
    """Everything the plan markdown shows, gathered from the plan and its diff."""

    campaign: str
    source: str
    digest: str
    rows: Sequence[PlanRow]
    totals: Mapping[str, int | None]
    waves: Mapping[int, int] = field(default_factory=dict)  # wave -> sessions, when a rollout
    warnings: Sequence[str] = ()
    label: str | None = None  # e.g. "offline: not checked against the API"


def plan_view(
    plan: Plan,
    changes: Sequence[tuple[str, str, str]],
    *,
    changed_fields: Mapping[str, Sequence[str]] | None = None,
    diffs: Mapping[str, str] | None = None,
    waves: Mapping[str, int] | None = None,
    label: str | None = None,
) -> PlanView:
    """The view of a plan and its diff (`(change, key, note)` per key, as `Ledger.diff` gives);
    `diffs`: for `~` sessions, what changed since launch (`launcher.spec.diff.field_diff`)."""
    by_key = plan.by_key()
    fields = changed_fields or {}
    rollout = waves is not None and plan.manifest.manifest.rollout is not None
    rows = []
    for change, key, note in changes:
        s = by_key.get(key)
        if s is None:
            rows.append(PlanRow(str(change), key, note))
            continue
        req = s.request
        rows.append(
            PlanRow(
                str(change),
                key,
                note,
                s.fleet,
                (waves or {}).get(key) if rollout else None,
                str(req.get("title", "")),
                req.get("max_acu_limit"),
                fields.get(key) if str(change) == "~" else None,
                str(req["prompt"]),
                (diffs or {}).get(key) if str(change) == "~" else None,
            )
        )
    t = plan.totals()
    return PlanView(
        campaign=plan.campaign,
        source=plan.manifest.label,
        digest=plan.digest,
        rows=rows,
        totals={
            k: t[k]
            for k in ("sessions", "max_sessions", "acu", "max_total_acu", "unbounded_acu_sessions")
        },
        waves=dict(sorted(Counter(waves.values()).items())) if rollout and waves else {},
        warnings=plan.warnings,
        label=label,
    )


# =========================================================================== text helpers


def digest_marker(digest: str) -> str:
    """The hidden line that carries the plan digest in a comment (read back at apply time)."""
    return f"<!-- devin-fleet:plan-digest {digest} -->"


def digest_in(body: str) -> str | None:
    """The plan digest a comment carries, if exactly one."""
    found = set(_DIGEST_LINE.findall(body))
    return found.pop() if len(found) == 1 else None


def cell(text: str, limit: int = _CELL) -> str:
    """Text safe in a table cell: one line, `|` escaped, no HTML, no @mentions; cut to `limit`."""
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return html(text).replace("|", "\\|")


def html(text: str) -> str:
    """Text inside an HTML element (a <summary>): escaped, no @mentions."""
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("@", "&#64;")):
        text = text.replace(a, b)
    return text


def code(text: str) -> str:
    """An inline code span that holds any text (backticks included), safe in a table cell."""
    text = " ".join(text.split()).replace("|", "\\|")
    runs = [len(r) for r in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _fence_for(text: str) -> str:
    runs = [len(r) for r in re.findall(r"`{3,}", text)]
    return "`" * max(3, max(runs, default=0) + 1)


# =========================================================================== the budget


class _Budget:
    """Lines written so far against a budget in `unit`s; `reserve` is kept for later parts."""

    def __init__(self, limit: int, unit: Unit) -> None:
        self.limit, self.unit = limit, unit
        self.lines: list[str] = []
        self.used = 0
        self.reserve = 0

    def cost(self, lines: Sequence[str]) -> int:
        return sum(size(ln, self.unit) + 1 for ln in lines)  # each line and its newline

    def fits(self, lines: Sequence[str]) -> bool:
        return self.used + self.cost(lines) + self.reserve <= self.limit

    def add(self, lines: Sequence[str], *, force: bool = False) -> bool:
        if not force and not self.fits(lines):
            return False
        self.lines.extend(lines)
        self.used += self.cost(lines)
        return True


def render_plan_markdown(
    view: PlanView, *, budget: int = DEFAULT_BUDGET, unit: Unit = "chars", more: str = MORE_HINT
) -> str:
    """The plan as markdown, never longer than `budget` (in `unit`s); the same view gives the
    same bytes. Kept whole: the summary; then as many sessions of each change as fit (every
    group keeps its heading and a count); then prompts, each folded, while room is left."""
    out = _Budget(budget, unit)
    out.reserve = _FOOTER
    groups = {sym: [r for r in view.rows if r.change == sym] for sym, _ in (*_GROUPS, ("=", ""))}
    out.add(_summary(view, groups), force=True)
    shown: Counter[str] = Counter()
    out.reserve += _GROUP_NOTE * sum(1 for sym, _ in _GROUPS if groups[sym])
    for sym, title in _GROUPS:
        rows = groups[sym]
        if not rows:
            continue
        out.reserve -= _GROUP_NOTE
        out.add(["", f"#### {sym} {len(rows):,} {title}", ""], force=True)
        shown[sym] = _table(out, sym, rows)
        if shown[sym] < len(rows):
            out.add(["", f"*… and {len(rows) - shown[sym]:,} more: not shown here.*"], force=True)
    if groups["="]:
        shown["="] = _unchanged(out, groups["="])
    prompts = [r for r in view.rows if r.prompt is not None and r.change in ("+", "~")]
    n_prompts = _prompts(out, prompts)
    left = [
        f"{len(groups[sym]) - shown[sym]:,} {_WORDS[sym]} ({sym})"
        for sym in ("~", "+", "-", "?", "=")
        if len(groups[sym]) > shown[sym]
    ]
    if n_prompts < len(prompts):
        left.append(f"{len(prompts) - n_prompts:,} prompts")
    if left:
        limit = f"{budget:,} {'characters' if unit == 'chars' else 'bytes'}"
        out.reserve = 0
        out.add(["", f"**Not shown** (to stay under {limit}): {', '.join(left)}; {more}."], force=True)
    text = "\n".join(out.lines) + "\n"
    return text if size(text, unit) <= budget else fit_markdown(text, budget, unit=unit, more=more)


def _summary(view: PlanView, groups: Mapping[str, Sequence[PlanRow]]) -> list[str]:
    t = view.totals
    counts = " · ".join(f"**{sym}** {len(groups[sym]):,}" for sym in ("+", "=", "~", "-", "?"))
    sessions = f"{t['sessions']:,}" + (f" of {t['max_sessions']:,} allowed" if t["max_sessions"] else "")
    acu = f"{t['acu']:,}" + (f" of a {t['max_total_acu']:,} budget" if t["max_total_acu"] else "")
    if t.get("unbounded_acu_sessions"):
        acu += f" ({t['unbounded_acu_sessions']:,} sessions without max_acu_limit)"
    lines = [
        f"### devin-fleet plan: `{view.campaign}` ({cell(view.source, 200)})",
        digest_marker(view.digest),
        "",
    ]
    if view.label:
        lines += [f"> **{cell(view.label, 300)}**", ""]
    lines += [
        counts,
        "",
        "| sessions | max ACUs | waves | plan digest |",
        "|---|---|---|---|",
        f"| {sessions} | {acu} | "
        + (" + ".join(f"{n:,}" for n in view.waves.values()) if view.waves else "1")
        + f" | `{view.digest}` |",
    ]
    for w in view.warnings[:5]:
        lines += ["", f"> warning: {cell(w, 500)}"]
    return lines


def _table(out: _Budget, sym: str, rows: Sequence[PlanRow]) -> int:
    """A table of rows, as many as fit; how many were shown."""
    waves = any(r.wave is not None for r in rows)
    head = ["key", "fleet", *(["wave"] if waves else []), "title", "ACU"]
    head += ["changed fields"] if sym == "~" else (["note"] if sym in ("-", "?") else [])
    if not out.add(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]):
        return 0
    n = 0
    for r in rows:
        cells = [code(r.key), cell(r.fleet), *([str(r.wave or "")] if waves else [])]
        cells += [cell(r.title), "" if r.acu is None else str(r.acu)]
        if sym == "~":
            fields = r.changed_fields
            cells.append(cell(", ".join(fields) or "secret sources") if fields is not None else "?")
        elif sym in ("-", "?"):
            cells.append(cell(r.note))
        if not out.add(["| " + " | ".join(cells) + " |"]):
            break
        n += 1
    return n


def _unchanged(out: _Budget, rows: Sequence[PlanRow]) -> int:
    """`=` sessions: folded, one key per line, as many as fit."""
    opening = ["", f"<details><summary>= {len(rows):,} launched, unchanged</summary>", ""]
    closing = ["", "</details>"]
    if not out.fits([*opening, *closing]):
        return 0
    out.add(opening)
    out.reserve += out.cost(closing)
    n = 0
    for r in rows:
        if not out.add([f"- {code(r.key)} {cell(r.note)}".rstrip()]):
            break
        n += 1
    out.reserve -= out.cost(closing)
    out.add(closing, force=True)
    return n


def _prompts(out: _Budget, rows: Sequence[PlanRow]) -> int:
    """Each prompt in its own <details>, whole blocks only, while they fit; how many."""
    if not rows or not out.fits(["", f"#### Prompts ({len(rows):,})"]):
        return 0
    out.add(["", f"#### Prompts ({len(rows):,})"])
    n = 0
    for r in rows:
        text = r.diff or r.prompt or ""
        lines = text.splitlines() or [""]
        cut = len(lines) - _PROMPT_LINES
        fence = _fence_for(text)
        what = " (changed since launch)" if r.diff else ""
        block = [
            "",
            f"<details><summary>{r.change} <code>{html(r.key)}</code>{what}</summary>",
            "",
            f"{fence}{'diff' if r.diff else 'text'}",
            *lines[:_PROMPT_LINES],
            fence,
            *([f"*… {cut:,} more lines: `plan --show-prompts`*"] if cut > 0 else []),
            "",
            "</details>",
        ]
        if not out.add(block):
            break
        n += 1
    return n


# =========================================================================== any markdown

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def fit_markdown(text: str, limit: int, *, unit: Unit = "chars", more: str = MORE_HINT) -> str:
    """`text` if it fits in `limit`; else cut at a line boundary, its open code fence and
    <details> closed, and a note saying how many lines were left out and where to see them."""
    if size(text, unit) <= limit:
        return text
    lines = text.splitlines()
    note_room = size(f"\n**… {len(lines):,} more lines not shown** (limit {limit:,}): {more}.\n", unit)
    kept: list[str] = []
    used = 0
    fence: str | None = None
    depth = 0
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        new_fence, new_depth = fence, depth
        if m and fence is None:
            new_fence = m.group(1)
        elif m and fence is not None and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            new_fence = None
        if fence is None:
            new_depth += len(re.findall(r"<details\b", line)) - line.count("</details>")
        closing = ([new_fence] if new_fence else []) + ["</details>"] * max(new_depth, 0)
        cost = size(line, unit) + 1
        if used + cost + size("\n".join(closing), unit) + 2 + note_room > limit:
            rest = len(lines) - i
            break
        kept.append(line)
        used += cost
        fence, depth = new_fence, new_depth
    else:  # pragma: no cover - the text did not fit, so some line does not
        rest = 0
    tail = ([fence] if fence else []) + ["</details>"] * max(depth, 0)
    note = f"**… {rest:,} more lines not shown** (limit {limit:,}): {more}."
    return "\n".join([*kept, *tail, "", note]) + "\n"


def offline_label(checked_remote: bool) -> str | None:
    """How far the plan's `=`/`+` can be trusted: said plainly when the API was not asked."""
    if checked_remote:
        return None
    return (
        "offline plan: compared with the local ledger only, not with the API (no credentials, "
        "e.g. a fork's pull request): sessions that already exist may show as `+`"
    )
