"""The planner: deterministic output, every rendered request checked against the API model,
every problem reported at once, stable keys, budgets and identity tags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import ManifestError, SecretError
from launcher.spec.build import build_plan
from launcher.spec.manifest import load_manifest
from launcher.spec.plan import Plan, fingerprint, fingerprint_tag, item_tag

Write = Callable[[str, str], Path]

CAMPAIGN = """
    version: 1
    campaign: det
    vars: {python: "3.12"}
    defaults:
      max_acu_limit: 4
      tags: [team, "py-{{ vars.python }}"]
    fleets:
      - name: services
        for_each: {file: services.csv}
        key: "{{ item.repo }}"
        session:
          prompt: "Upgrade {{ item.repo }} ({{ item.owner | default('nobody') }})"
          repos: ["{{ item.repo }}"]
          max_acu_limit: "{{ item.acu | default(4) }}"
          structured_output_schema: {type: object, properties: {ok: {type: boolean}}}
          session_secrets: [{key: TOKEN, value: {env: DET_TOKEN}}]
      - name: sweep
        for_each:
          matrix: {repo: [acme/web, acme/app], task: [lint, tests]}
        session: {prompt: "{{ item.task }} in {{ item.repo }}", devin_mode: fast}
"""


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run beside the manifests, so that messages name them as `m.yaml`."""
    monkeypatch.chdir(tmp_path)


def plan_of(path: Path, environ: dict[str, str] | None = None) -> Plan:
    return build_plan(load_manifest(path.relative_to(Path.cwd())), environ=environ or {})


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        plan_of(path)
    return [p.render() for p in info.value.problems]


@pytest.fixture
def campaign(write: Write) -> Path:
    write("services.csv", "repo,owner,acu\nacme/a,alice,2\nacme/b,,\nacme/c,carol,7\n")
    return write("det.yaml", CAMPAIGN)


def test_the_plan_is_ordered_and_complete(campaign: Path) -> None:
    plan = plan_of(campaign)
    assert [s.key for s in plan.sessions] == [
        "acme/a",
        "acme/b",
        "acme/c",
        "acme/web-lint",
        "acme/web-tests",
        "acme/app-lint",
        "acme/app-tests",
    ]
    assert [s.index for s in plan.sessions] == [0, 1, 2, 0, 1, 2, 3]
    assert plan.sessions[1].request["prompt"] == "Upgrade acme/b (nobody)"
    assert plan.total_acu == 2 + 4 + 7 + 4 * 4
    for s in plan.sessions:
        assert s.request["tags"][:2] == ["team", "py-3.12"]
        assert s.request["tags"][2:4] == list(s.tags) == ["fleet:det", item_tag("det", s.key)]
        assert s.request["tags"][4:] == [fingerprint_tag(s.fingerprint)]


def test_plan_json_is_byte_identical_across_runs(campaign: Path) -> None:
    runs = [CliRunner().invoke(cli, ["plan", "-o", "json", str(campaign)]) for _ in range(2)]
    assert [r.exit_code for r in runs] == [0, 0], runs[0].output
    assert runs[0].stdout == runs[1].stdout
    data = json.loads(runs[0].stdout)
    assert [s["key"] for s in data["sessions"]][:3] == ["acme/a", "acme/b", "acme/c"]


def test_plan_json_does_not_depend_on_hash_seeds(campaign: Path) -> None:
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-m", "launcher", "plan", "-o", "json", str(campaign)],
            capture_output=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1] and len(outputs[0]) > 1000


def test_fingerprints_follow_the_request(campaign: Path, write: Write) -> None:
    before = {s.key: s.fingerprint for s in plan_of(campaign).sessions}
    write("services.csv", "repo,owner,acu\nacme/a,alice,3\nacme/b,,\nacme/c,carol,7\n")
    after = {s.key: s.fingerprint for s in plan_of(campaign).sessions}
    assert {k for k in before if before[k] != after[k]} == {"acme/a"}


def test_fingerprint_is_of_the_canonical_request() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_secret_env_name_is_in_the_fingerprint_not_its_value(campaign: Path, write: Write) -> None:
    plan = plan_of(campaign, environ={"DET_TOKEN": "v1"})
    same = plan_of(campaign, environ={"DET_TOKEN": "v2"})
    assert [s.fingerprint for s in plan.sessions] == [s.fingerprint for s in same.sessions]
    write("det.yaml", CAMPAIGN.replace("DET_TOKEN", "OTHER_TOKEN"))
    renamed = plan_of(campaign)
    assert plan.sessions[0].fingerprint != renamed.sessions[0].fingerprint
    assert plan.sessions[3].fingerprint == renamed.sessions[3].fingerprint  # no secret there


def test_body_reads_secrets_from_the_environment(campaign: Path) -> None:
    s = plan_of(campaign).sessions[0]
    with pytest.raises(SecretError) as info:
        s.body({})
    assert info.value.names == ["DET_TOKEN"]
    assert s.body({"DET_TOKEN": "tok"})["session_secrets"][0]["value"] == "tok"
    assert s.request["session_secrets"][0]["value"] == "***"  # the plan is not changed


def test_a_missing_secret_variable_is_a_warning(campaign: Path) -> None:
    assert plan_of(campaign).warnings == (
        "environment variable(s) for session secrets not set: "
        "DET_TOKEN (apply will refuse until they are)",
    )
    assert plan_of(campaign, environ={"DET_TOKEN": "x"}).warnings == ()
    result = CliRunner().invoke(cli, ["validate", str(campaign)])
    assert result.exit_code == 0 and "warning: environment variable" in result.output


def test_keys_survive_insertion_and_reordering(campaign: Path, write: Write) -> None:
    before = {s.key: s.fingerprint for s in plan_of(campaign).sessions}
    write("services.csv", "repo,owner,acu\nacme/c,carol,7\nacme/new,nina,1\nacme/a,alice,2\nacme/b,,\n")
    after = {s.key: s.fingerprint for s in plan_of(campaign).sessions}
    assert set(after) == set(before) | {"acme/new"}
    assert all(after[k] == v for k, v in before.items())


def test_every_problem_is_reported_at_once(write: Write) -> None:
    write("d.csv", "repo,mode,acu\nacme/a,fast,1\nacme/b,turbo,2\nacme/c,fast,zero\nacme/a,lite,1\n")
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: many
        budget: {max_sessions: 2}
        fleets:
          - name: f
            for_each: {file: d.csv}
            key: "{{ item.repo }}"
            session:
              prompt: "{{ item.repo }} {{ item.missing }}"
              devin_mode: "{{ item.mode }}"
              max_acu_limit: "{{ item.acu }}"
          - name: g
            for_each: {items: []}
            session: {prompt: hi}
          - name: h
            for_each: {items: [x]}
            session: {prompt: hi, attachment_urls: [nope]}
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 6, problems
    text = "\n".join(problems)
    assert "m.yaml:9:15: fleets[0].session.prompt: undefined variable" in text
    assert "[item d.csv:2, and 3 more item(s)]" in text
    assert "m.yaml:10:19: fleets[0].session.devin_mode: expected one of" in text
    assert "got 'turbo' [item d.csv:3]" in text
    assert (
        "m.yaml:11:22: fleets[0].session.max_acu_limit: expected an integer; got 'zero' "
        "[item d.csv:4]" in text
    )
    assert "m.yaml:13:15: fleets[1].for_each: empty fleet" in text
    assert "m.yaml:17:44: fleets[2].session.attachment_urls: 'nope' is not an absolute URI" in text
    assert "m.yaml:3:24: budget.max_sessions: the plan has 5 sessions; the budget allows 2" in text


def test_duplicate_keys_name_both_items_across_fleets(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: dup
        fleets:
          - name: one
            for_each: {items: [acme/a, acme/b]}
            session: {prompt: "{{ item }}"}
          - name: two
            for_each: {items: [acme/c, acme/a]}
            session: {prompt: "{{ item }}"}
        """,
    )
    assert problems_of(path) == [
        "m.yaml:8:15: fleets[1].for_each: duplicate key 'acme/a': item m.yaml:5:24 (fleet one) "
        "and item m.yaml:8:32 (fleet two) (hint: make `key:` unique in the campaign, e.g. "
        "'{{ fleet }}-{{ item.repo }}')"
    ]


def test_many_different_problems_at_one_field_are_capped(write: Write) -> None:
    write("d.csv", "acu\n" + "".join(f"x{i}\n" for i in range(30)))
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: cap
        fleets:
          - name: f
            for_each: {file: d.csv}
            session: {prompt: hi, max_acu_limit: "{{ item.acu }}"}
        """,
    )
    problems = problems_of(path)
    assert len(problems) == 21
    assert problems[0].endswith("expected an integer; got 'x0' [item d.csv:2]")
    assert problems[-1].endswith("max_acu_limit: and 10 more different problem(s) here, in other items")


def test_identity_tags_count_toward_the_limit(write: Write) -> None:
    """devin-fleet reserves 4 of the API's 50 tags (campaign, key, fingerprint, and the attempt
    tag of a relaunch): a manifest may use 46."""
    tags = ", ".join(f"t{i}" for i in range(46))
    path = write(
        "m.yaml",
        f"""
        version: 1
        campaign: tags
        defaults: {{tags: [{tags}]}}
        fleets:
          - name: f
            for_each: {{items: [a]}}
            session: {{prompt: hi, tags: [t0, t1]}}
        """,
    )
    assert len(plan_of(path).sessions[0].request["tags"]) == 49  # room left for an attempt tag
    write("m.yaml", path.read_text().replace("[t0, t1]", "[t0, t46]"))
    [problem] = problems_of(path)
    assert "47 tags plus devin-fleet's 4" in problem and "use at most 46 tags" in problem


def test_budget_counts_acu_over_the_plan(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: acu
        budget: {max_sessions: 3, max_total_acu: 9}
        defaults: {max_acu_limit: 3}
        fleets:
          - name: f
            for_each: {items: [a, b, c]}
            session: {prompt: hi}
        """,
    )
    assert plan_of(path).totals()["acu"] == 9
    write("m.yaml", path.read_text().replace("[a, b, c]", "[a, b, c, d]"))
    assert [p.split(": ", 2)[1] for p in problems_of(path)] == [
        "budget.max_sessions",
        "budget.max_total_acu",
    ]


def test_default_keys_come_from_the_item_values(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: keys
        fleets:
          - name: f
            for_each:
              items: [plain, 7, {repo: acme/a, n: null, tags: [x, y]}, [l, 2]]
            session: {prompt: hi}
        """,
    )
    assert [s.key for s in plan_of(path).sessions] == ["plain", "7", 'acme/a-["x", "y"]', "l-2"]


def test_an_empty_key_is_refused(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: keys
        fleets:
          - name: f
            for_each: {items: [{repo: a}]}
            key: "{{ item.name | default('') }}"
            session: {prompt: hi}
        """,
    )
    [problem] = problems_of(path)
    assert "fleets[0].key: the item's key is empty" in problem


def test_the_schema_is_loaded_once_and_shared(write: Write, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text('{"type": "object"}')
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: schema
        fleets:
          - name: f
            for_each: {items: [a, b]}
            session: {prompt: hi, structured_output_schema: {file: s.json}}
        """,
    )
    a, b = plan_of(path).sessions
    assert a.request["structured_output_schema"] == {"type": "object"}
    assert a.request["structured_output_schema"] is b.request["structured_output_schema"]
