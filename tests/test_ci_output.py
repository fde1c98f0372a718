"""CI conventions: `validate -o json`, `validate --format github` (workflow annotations that
show on a pull request's diff) and `cancel -o json`, through the real CLI."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest
from launcher.sim import SimServer
from tests.helpers import apply_all, fleet_manifest, point_cli_at, run

Write = Callable[[str, str], Path]
GOOD = """
version: 1
campaign: ok
fleets:
  - name: f
    for_each: {items: [a, b]}
    session: {prompt: "do {{ item }}"}
"""
BAD = """
version: 1
campaign: bad
fleets:
  - name: f
    for_each: {items: [a]}
    sesion: {prompt: "x"}
    session: {prompt: "{{ itme }}, 100%"}
"""


def test_validate_json_reports_every_manifest(write: Write) -> None:
    good, bad = write("good.yaml", GOOD), write("bad.yaml", BAD)
    res = run("validate", good, bad, "-o", "json")
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["ok"] is False
    first, second = data["manifests"]
    assert first == {"path": str(good), "ok": True, "sessions": 2, "problems": [], "warnings": []}
    assert second["ok"] is False and second["sessions"] is None
    fields = [(p["line"], p["field"]) for p in second["problems"]]
    # every problem at once: the unknown field, and the template of the fleet that still renders
    assert fields == [(6, "fleets[0].sesion"), (7, "fleets[0].session.prompt")]
    assert second["problems"][0]["hint"] == "did you mean 'session'?"
    res = run("validate", good, "-o", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["ok"] is True


def test_validate_github_annotations_point_at_the_line(write: Write) -> None:
    bad = write("bad.yaml", BAD)
    res = run("validate", bad, "--format", "github")
    assert res.exit_code == 1
    lines = res.stdout.splitlines()
    assert lines[0] == (
        f"::error file={bad},line=6,col=5,title=fleets[0].sesion::unknown field "
        "(hint: did you mean 'session'?)"
    )
    assert len(lines) == 2 and "title=fleets[0].session.prompt::" in lines[1]
    # a template problem: its own line; '%' in a message is escaped as GitHub requires
    fixed = write("bad2.yaml", BAD.replace('    sesion: {prompt: "x"}\n', ""))
    res = run("validate", fixed, "--format", "github")
    (line,) = res.stdout.splitlines()
    assert re.match(
        rf"::error file={re.escape(str(fixed))},line=6,col=\d+,title=fleets\[0\]\.session\.prompt::",
        line,
    )
    assert "undefined variable" in line and "\n" not in line


def test_github_annotation_escaping(write: Write) -> None:
    path = write("a,b.yaml", BAD.replace("sesion", "sesion%"))
    res = run("validate", path, "--format", "github")
    line = res.stdout.splitlines()[0]
    assert line.startswith("::error file=") and "a%2Cb.yaml" in line and "sesion%25" in line


@pytest.mark.parametrize("fmt", ["json", "github"])
def test_machine_formats_keep_stdout_clean_for_a_missing_file(tmp_path: Path, fmt: str) -> None:
    res = run("validate", tmp_path / "nope.yaml", "-o", fmt)
    assert res.exit_code == 1 and "Traceback" not in res.output
    if fmt == "json":
        assert json.loads(res.stdout)["manifests"][0]["ok"] is False
    else:
        assert res.stdout.startswith(f"::error file={tmp_path / 'nope.yaml'}::")


def test_cancel_json(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim("clean", time_scale=1)
    path = fleet_manifest(write, 4)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    point_cli_at(sim, monkeypatch)
    res = run("cancel", path, "--ledger", ledger, "--only", "r-00[01]", "--yes", "-o", "json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)  # stdout holds only the JSON; the listing went to stderr
    assert data["selected"] == ["r-000", "r-001"] and data["cancelled"] == 2 and data["ok"] is True
    assert set(data["results"]) == {"r-000", "r-001"} and data["errors"] == {}
    assert "2 live session(s) to terminate" in res.stderr
    res = run("cancel", path, "--ledger", ledger, "--only", "r-00[01]", "--yes", "-o", "json")
    assert json.loads(res.stdout)["selected"] == []
