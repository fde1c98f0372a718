"""The GitHub Action and its recipes: `action.yml` maps every input into `env:` (never into a
shell line) for `devin-fleet ci`, and every recipe in docs/github-actions.md is a complete
workflow whose uses of the action pass only inputs it has."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from launcher.cli.pr_cmds import COMMANDS, ci

ROOT = Path(__file__).resolve().parent.parent
ACTION: dict[str, Any] = yaml.safe_load((ROOT / "action.yml").read_text())
DOCS = (ROOT / "docs" / "github-actions.md").read_text()
RECIPES = {
    m.group(1): yaml.safe_load(m.group(0))
    for m in re.finditer(r"(?<=```yaml\n)# (\.github/workflows/\S+\.yml)\n.*?(?=```)", DOCS, re.S)
}


def steps_using_the_action(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, step)
        for name, job in workflow["jobs"].items()
        for step in job["steps"]
        if str(step.get("uses", "")).endswith("/devin-fleet@v1")
    ]


def test_the_action_is_composite_and_maps_every_input_explicitly() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert {"command", "manifests", "comment", "ledger", "args"} <= set(ACTION["inputs"])
    steps = ACTION["runs"]["steps"]
    install, run = steps[1], steps[2]
    assert install["env"] == {"ACTION_PATH": "${{ github.action_path }}"}  # its own checkout
    assert '"$ACTION_PATH"' in install["run"]
    mapped = {v: k for k, v in run["env"].items()}
    for name in ACTION["inputs"]:
        ref = f"${{{{ inputs.{name} }}}}"
        assert any(ref in str(s.get("env", {})) or ref in str(s.get("with", {})) for s in steps), name
    for step in steps:  # no input is ever pasted into a shell line (script injection)
        assert "inputs." not in step.get("run", "") and "${{" not in step.get("run", "")
    # each FLEET_CI_* variable is one `devin-fleet ci` reads
    envvars = {p.envvar for p in ci.params if isinstance(p, click.Option | click.Argument)}
    assert {k for k in run["env"] if k.startswith("FLEET_CI_")} <= envvars
    assert mapped["${{ inputs.command }}"] == "FLEET_CI_COMMAND"
    assert run["run"] == 'devin-fleet ci "$FLEET_CI_COMMAND"' and run["id"] == "run"


def test_the_action_outputs_come_from_the_ci_step() -> None:
    assert set(ACTION["outputs"]) == {"has-changes", "plan-digest", "comment-url"}
    for name, out in ACTION["outputs"].items():
        assert out["value"] == f"${{{{ steps.run.outputs.{name} }}}}"


def test_the_docs_hold_the_recipes() -> None:
    assert set(RECIPES) == {
        ".github/workflows/devin-fleet-plan.yml",
        ".github/workflows/devin-fleet-apply.yml",
    }
    for name, row in ACTION["inputs"].items():  # the input table is the action's
        assert re.search(rf"^\| `{name}` \|", DOCS, re.M), name
        assert row.get("description")


@pytest.mark.parametrize("path", sorted(RECIPES))
def test_each_recipe_is_a_complete_workflow_using_only_the_actions_inputs(path: str) -> None:
    wf = RECIPES[path]
    assert wf["name"] and wf["jobs"] and (wf.get("on") or wf.get(True))  # YAML 1.1: on -> True
    uses = steps_using_the_action(wf)
    assert uses
    required = {k for k, v in ACTION["inputs"].items() if v.get("required")}
    for _, step in uses:
        given = set(step["with"])
        assert given <= set(ACTION["inputs"]) and required <= given, given
        assert step["with"]["command"] in COMMANDS
    for job in wf["jobs"].values():
        assert job["runs-on"] and job["steps"][0]["uses"].startswith("actions/checkout@")


def test_the_plan_recipe_comments_on_pull_requests_and_forks_get_no_secrets() -> None:
    wf = RECIPES[".github/workflows/devin-fleet-plan.yml"]
    assert "pull_request" in wf[True] and wf["permissions"]["pull-requests"] == "write"
    commands = [
        (job, s["with"]["command"], s["with"].get("comment")) for job, s in steps_using_the_action(wf)
    ]
    assert ("plan", "validate", None) in commands and ("plan", "plan", "true") in commands
    fork = wf["jobs"]["plan-fork"]
    assert "!= github.repository" in fork["if"] and "== github.repository" in wf["jobs"]["plan"]["if"]
    assert "secrets." not in str(fork)  # an offline plan; the tool labels it so
    assert ("plan-fork", "plan", "true") in commands


def test_the_apply_recipe_runs_one_campaign_at_a_time_with_the_key_in_an_environment() -> None:
    wf = RECIPES[".github/workflows/devin-fleet-apply.yml"]
    assert wf[True]["push"]["branches"] == ["main"]
    job = wf["jobs"]["apply"]
    assert job["concurrency"] == {
        "group": "devin-fleet-${{ matrix.campaign }}",
        "cancel-in-progress": False,
    }
    assert job["environment"] == "devin-apply" and "secrets.DEVIN_API_KEY" in job["env"]["DEVIN_API_KEY"]
    (apply_step, results_step) = [s for _, s in steps_using_the_action(wf)]
    assert apply_step["with"]["command"] == "apply" and "plan-digest" not in apply_step["with"]
    assert "${{ matrix.campaign }}" in apply_step["with"]["manifests"]
    assert results_step["with"] == {**results_step["with"], "command": "results", "comment": "true"}
    assert results_step["if"] == "always()"


def test_the_readme_points_to_the_recipes() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/github-actions.md" in readme
