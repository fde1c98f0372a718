"""`plan -o json` bytes from `Plan.json_chunks`: the same document as `to_json()` plus the
ledger's diff, whatever the chunk size, with non-ASCII text and floats intact."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher import build_plan, load_manifest
from launcher.cli import cli


@pytest.fixture
def manifest(write: Callable[[str, str], Path]) -> Path:
    write(
        "schema.json",
        json.dumps(
            {
                "type": "object",
                "properties": {"score": {"type": "number", "minimum": 0.5, "maximum": 1e16}},
            }
        ),
    )
    return write(
        "m.yaml",
        """
        version: 1
        campaign: jsonout
        defaults:
          max_acu_limit: 2
        fleets:
          - name: f
            for_each:
              items: [alpha, "bêta", "γάμμα", "emoji 🚀", 'quote " and \\ back']
            session:
              title: "Fix {{ item }} – now"
              prompt: "Fix {{ item }}.\\nLine two\\ttabbed"
              structured_output_schema: {file: schema.json}
        """,
    )


def expected(
    plan_json: dict[str, object], notes: list[tuple[str, str]], gone: list[str]
) -> dict[str, object]:
    """What the CLI built before json_chunks: to_json(), change/note per session, gone."""
    sessions = plan_json["sessions"]
    assert isinstance(sessions, list)
    for entry, (change, note) in zip(sessions, notes, strict=True):
        entry["change"], entry["note"] = change, note
    return {**plan_json, "gone": gone}


@pytest.mark.parametrize("batch", [1, 2, 1000])
def test_json_chunks_is_to_json_plus_the_diff(manifest: Path, batch: int) -> None:
    plan = build_plan(load_manifest(manifest))
    notes = [("+", "") for _ in plan.sessions]
    notes[1] = ("~", "changed since launch")
    gone = ["old-key", "ünïcode-key"]
    extras = [{"change": c, "note": n} for c, n in notes]
    raw = b"".join(plan.json_chunks(extras, gone, batch=batch))
    assert b"\n" not in raw  # one line
    assert json.loads(raw) == expected(plan.to_json(), notes, gone)
    assert "🚀".encode() in raw  # UTF-8, not \\u escapes, as ensure_ascii=False gave


def test_json_chunks_without_a_diff_is_to_json(manifest: Path) -> None:
    plan = build_plan(load_manifest(manifest))
    assert json.loads(b"".join(plan.json_chunks(batch=3))) == plan.to_json()


def test_plan_cli_json_is_the_same_document(manifest: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "-o", "json", str(manifest)])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes.endswith(b"}\n")
    plan = build_plan(load_manifest(manifest))
    notes = [("+", "") for _ in plan.sessions]
    want = expected(plan.to_json(), notes, [])
    for entry in want["sessions"]:  # type: ignore[attr-defined]
        entry["changed_fields"], entry["wave"] = [], 1  # no ledger: nothing changed; one wave
    assert json.loads(result.stdout_bytes) == want
