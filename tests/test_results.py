"""`results` as a report, through the real CLI against the simulator's `mixed` profile (fixed
seed): every format's content, filters, grouping, and the manifest's success rule."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launcher import build_plan, load_manifest
from launcher.errors import ManifestError
from launcher.run.status import CampaignView, Outcome, SessionView
from launcher.sim import SimServer
from launcher.spec.templating import Rule, TemplateFailure
from launcher.views.results import build_results, schema_fields
from tests.helpers import MIGRATION_SCHEMA as SCHEMA
from tests.helpers import N_MIGRATIONS as N
from tests.helpers import (
    OUTPUT_COLUMNS,
    RULE,
    apply_all,
    expected_outcome,
    migration_manifest,
    point_cli_at,
    run,
)

Write = Callable[[str, str], Path]


def test_every_format_shows_the_fleet_with_the_success_rule_applied(
    mixed_campaign: tuple[Path, Path, dict[str, dict[str, Any]]],
) -> None:
    path, ledger, truth = mixed_campaign
    want = {k: expected_outcome(t) for k, t in truth.items()}
    # the rule turned some delivered sessions into failures: the case this test is about
    assert any(want[k] == "failed" and t["planned"] == "blocked" for k, t in truth.items()), (
        "seed gives no delivered (blocked) session that breaks the rule"
    )

    # --- json: counts, totals, and one nested record per session
    res = run("results", path, "--ledger", ledger, "-o", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["counts"] == {o.value: Counter(want.values()).get(o.value, 0) for o in Outcome}
    records = {r["key"]: r for r in data["sessions"]}
    assert set(records) == set(truth)
    for key, r in records.items():
        t = truth[key]
        assert r["outcome"] == want[key], (key, r, t)
        assert r["structured_output"] == t.get("structured_output")
        assert r["acus_consumed"] == round(t["acus_consumed"], 2)
        assert r["attempt"] == 1
        if t["status"] == "suspended":
            assert r["reason"] == t["status_detail"]  # e.g. out_of_credits
        if want[key] == "failed" and t["planned"] in ("delivered", "invalid_output", "finished"):
            assert r["reason"] == "success rule not met"
    assert data["totals"]["acus_consumed"] == round(sum(r["acus_consumed"] for r in records.values()), 2)

    # --- jsonl: the same records, one a line
    res = run("results", path, "--ledger", ledger, "-o", "jsonl", "--offline")
    assert [json.loads(line) for line in res.stdout.splitlines()] == data["sessions"]

    # --- csv: RFC 4180 (CRLF), header in schema order, true/false, lists joined
    res = run("results", path, "--ledger", ledger, "-o", "csv", "--offline")
    assert res.exit_code == 0
    raw = res.stdout_bytes.decode()  # (Result.stdout turns CRLF into LF)
    assert raw.count("\r\n") == N + 1 and "\n" not in raw.replace("\r\n", "")
    reader = csv.reader(io.StringIO(raw, newline=""))
    header = next(reader)
    assert header == [
        "key",
        "fleet",
        "item.repo",
        "item.team",
        "outcome",
        "reason",
        "status",
        "attempt",
        "pr_url",
        "pr_state",
        "acus",
        *OUTPUT_COLUMNS,
        "output_valid",
        "output_errors",
        "session_id",
        "url",
    ]
    rows = [dict(zip(header, r, strict=True)) for r in reader]
    assert len(rows) == N
    for row in rows:
        t, out = truth[row["key"]], truth[row["key"]].get("structured_output")
        assert row["outcome"] == want[row["key"]]
        assert row["acus"] == f"{t['acus_consumed']:.2f}"
        if out is None:
            assert all(row[c] == "" for c in OUTPUT_COLUMNS)
            continue
        if t["planned"] == "invalid_output":  # breaks the schema: shown as given, flagged
            assert row["output_valid"] == "false" and row["output_errors"]
            continue
        assert row["output.migrated"] == ("true" if out["migrated"] else "false")
        assert row["output.files_changed"] == str(out["files_changed"])
        assert row["output.blockers"] == "; ".join(out["blockers"])
        assert row["output.stats.added"] == str(out["stats"]["added"])
        assert row["output_valid"] in ("true", "false")
        assert row["pr_url"] == (t["pull_requests"][0]["pr_url"] if t["pull_requests"] else "")

    # --- markdown: a heading, the counts, a table row per session with pipes intact
    res = run("results", path, "--ledger", ledger, "-o", "markdown", "--offline")
    lines = res.stdout.splitlines()
    assert lines[0] == "### Campaign `mig`"
    table = [ln for ln in lines if ln.startswith("|")]
    assert len(table) == N + 2 and set(table[1]) <= set("|-")
    md_header = [c.strip() for c in table[0].strip("|").split("|")]
    assert md_header[:4] == ["key", "item.repo", "item.team", "outcome"]
    assert [c for c in md_header if c.startswith("output.")] == OUTPUT_COLUMNS
    for line in table[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == len(md_header)
        assert cells[md_header.index("outcome")] == want[cells[0]]

    # --- table: the per-field columns (not one JSON blob), every key, totals
    res = run("results", path, "--ledger", ledger, "--offline")
    assert res.exit_code == 0
    assert "migrated" in res.stdout and "stats.added" in res.stdout and '{"' not in res.stdout
    assert all(k in res.stdout for k in truth) and f"{N} sessions" in res.stdout


def test_filters_and_grouping(mixed_campaign: tuple[Path, Path, dict[str, dict[str, Any]]]) -> None:
    path, ledger, truth = mixed_campaign
    want = {k: expected_outcome(t) for k, t in truth.items()}
    base: list[str | Path] = ["results", path, "--ledger", ledger, "--offline"]

    res = run(*base, "-o", "jsonl", "--outcome", "failed", "--only", "r-00*")
    keys = [json.loads(line)["key"] for line in res.stdout.splitlines()]
    assert keys == sorted(k for k in want if want[k] == "failed" and k.startswith("r-00"))

    res = run(*base, "--group-by", "outcome", "-o", "json")
    assert json.loads(res.stdout) == [
        {"outcome": v, "sessions": n}
        for v, n in sorted(Counter(want.values()).items(), key=lambda kv: (-kv[1], kv[0]))
    ]

    res = run(*base, "--group-by", "item.team", "-o", "jsonl")
    assert {json.loads(x)["item.team"]: json.loads(x)["sessions"] for x in res.stdout.splitlines()} == {
        "a": N // 2,
        "b": N // 2,
    }

    # a list field counts once per element; an empty list is (empty), no output (missing)
    res = run(*base, "--group-by", "blockers", "-o", "jsonl")
    got = {json.loads(x)["output.blockers"]: json.loads(x)["sessions"] for x in res.stdout.splitlines()}
    expect: Counter[str] = Counter()
    for t in truth.values():
        out = t.get("structured_output")
        expect.update((out["blockers"] or ["(empty)"]) if out else ["(missing)"])
    assert got == dict(expect)

    # two-way: outcome by team
    res = run(*base, "--group-by", "outcome", "--group-by", "item.team", "-o", "json")
    cross = {r["outcome"]: r for r in json.loads(res.stdout)}
    for outcome, row in cross.items():
        for team in "ab":
            assert row.get(team, 0) == sum(
                1 for k in truth if want[k] == outcome and "ab"[int(k[2:]) % 2] == team
            )
        assert row["total"] == Counter(want.values())[outcome]
    res = run(*base, "--group-by", "outcome", "--group-by", "item.team", "-o", "csv")
    assert res.stdout.splitlines()[0] == "outcome,a,b,total"

    # an unknown field is a usage error naming the columns, not a silent (missing) group
    res = run(*base, "--group-by", "item.owner_team")
    assert res.exit_code == 64 and "no column 'item.owner_team'" in res.output
    assert "item.team" in res.output and "Traceback" not in res.output


def test_results_refresh_from_the_api_by_default(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim("clean", time_scale=300)
    path = migration_manifest(write, rule=None)
    apply_all(build_plan(load_manifest(path)), sim, tmp_path / "l.db", limit=2)
    point_cli_at(sim, monkeypatch)
    res = run("results", path, "--ledger", tmp_path / "l.db", "-o", "jsonl")
    assert res.exit_code == 0, res.output
    assert sim.stats()["requests"].get("GET /sessions", 0) >= 1
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert all(r["status"] is not None for r in records[:2])  # not "as at launch"
    res = run("results", path, "--ledger", tmp_path / "l.db", "-o", "jsonl", "--refresh")
    assert res.exit_code == 0  # the old flag is still accepted


# =========================================================================== the rule itself


@pytest.mark.parametrize(
    ("rule", "values", "met"),
    [
        (RULE, {"output": {"migrated": True, "blockers": []}}, True),
        (RULE, {"output": {"migrated": True, "blockers": ["owner"]}}, False),
        (RULE, {"output": {"migrated": False, "blockers": []}}, False),
        (RULE, {"output": None}, False),  # no output: missing fields are falsy, not errors
        ("output.migrated and not output.blockers", {"output": {"migrated": True}}, True),
        ("pull_requests | length > 0", {"pull_requests": [{"pr_url": "u"}]}, True),
        ("status_detail == 'finished'", {"status_detail": "waiting_for_user"}, False),
        ("item.team == 'a'", {"item": {"team": "a"}}, True),
        ("output.__class__.__mro__", {"output": {}}, False),  # the sandbox hides internals
    ],
)
def test_rule_cases(rule: str, values: dict[str, Any], met: bool) -> None:
    full = {"output": None, "pull_requests": [], "status": None, "status_detail": None, "item": None}
    assert Rule(rule).evaluate({**full, **values}) is met


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("outptu.migrated", "unknown name 'outptu'"),
        ("output.migrated ==", "syntax error"),
        ("vars.x", "unknown name 'vars'"),
    ],
)
def test_bad_rules_are_located_at_plan_time(write: Write, rule: str, message: str) -> None:
    path = migration_manifest(write, rule=rule)
    with pytest.raises(ManifestError) as exc:
        build_plan(load_manifest(path))
    (problem,) = exc.value.problems
    assert (problem.line, problem.field) == (7, "success_when") and message in problem.message
    res = run("validate", path)
    assert res.exit_code == 1 and "mig.yaml:7:15: success_when: " in res.stderr
    assert "Traceback" not in res.output


def test_a_fleet_rule_overrides_the_campaigns(write: Write) -> None:
    path = migration_manifest(write)
    text = path.read_text().replace(
        "    session:\n", "    success_when: \"status == 'x'\"\n    session:\n"
    )
    path.write_text(text)
    plan = build_plan(load_manifest(path))
    assert plan.rules["f"].source == "status == 'x'"


def test_schema_fields_flatten_nested_objects_in_declaration_order() -> None:
    assert schema_fields(SCHEMA) == OUTPUT_COLUMNS
    assert schema_fields(None) == [] and schema_fields({"type": "string"}) == []


def test_running_sessions_are_not_counted_as_missing_outputs() -> None:
    def sv(key: str, outcome: Outcome) -> SessionView:
        return SessionView(
            key, "f", None, "devin-1", None, "running", None, outcome, [], 1.0, None, False
        )

    view = CampaignView("c", [sv("a", Outcome.running), sv("b", Outcome.succeeded)])
    totals = build_results(view, {"f": SCHEMA}).totals()
    assert (totals["missing_outputs"], totals["invalid_outputs"]) == (1, 0)


def test_a_running_session_without_output_is_not_flagged_invalid() -> None:
    def sv(key: str, outcome: Outcome) -> SessionView:
        return SessionView(
            key,
            "f",
            None,
            "devin-1",
            None,
            "running",
            None,
            outcome,
            [],
            1.0,
            None,
            False,
            ["missing: no structured output"],
        )

    res = build_results(
        CampaignView("c", [sv("a", Outcome.running), sv("b", Outcome.succeeded)]), {"f": SCHEMA}
    )
    assert [r["output_valid"] for r in res.rows] == [None, False]
    assert [r["output_valid"] for r in res.records()] == [None, False]
    assert [r["output_errors"] for r in res.records()] == [[], ["missing: no structured output"]]


def test_a_rule_that_cannot_compare_a_missing_field_fails_with_a_reason() -> None:
    with pytest.raises(TemplateFailure) as exc:
        Rule("output.files_changed > 3").evaluate({"output": {}})
    assert "files_changed" in exc.value.message
