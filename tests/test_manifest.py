"""The manifest format v1: the issue's example as written, data files, merging, matrices, secrets,
templates in every string, and the drift between the examples, the model and the JSON Schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from launcher.errors import ManifestError
from launcher.spec.build import build_plan
from launcher.spec.manifest import load_manifest
from launcher.spec.model import manifest_json_schema
from launcher.spec.plan import Plan, campaign_tag, fingerprint_tag, item_tag
from launcher.spec.source import parse_yaml

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
Write = Callable[[str, str], Path]

ISSUE_EXAMPLE = """\
# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
campaign: py312-upgrade
description: Upgrade every service to Python 3.12
vars:
  python: "3.12"
defaults:
  max_acu_limit: 8
  tags: [team-platform]
  secret_ids: [secret-gh]
budget:
  max_sessions: 500
  max_total_acu: 4000
fleets:
  - name: services
    for_each:
      file: data/services.csv
    key: "{{ item.repo }}"
    session:
      title: "Upgrade {{ item.repo }} to Python {{ vars.python }}"
      repos: ["{{ item.repo }}"]
      prompt: |
        Upgrade {{ item.repo }} to Python {{ vars.python }}.
      max_acu_limit: "{{ item.acu | default(8) }}"
      structured_output_schema: {file: schemas/result.schema.json}
      session_secrets:
        - key: NPM_TOKEN
          value: {env: NPM_TOKEN}
"""

RESULT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string"}},
}


def plan_of(path: Path, environ: dict[str, str] | None = None) -> Plan:
    return build_plan(load_manifest(path), environ=environ or {})


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as info:
        plan_of(path)
    return [p.render() for p in info.value.problems]


def manifest(
    write: Write, session: str, for_each: str = "items: [a]", extra: str = "", name: str = "m.yaml"
) -> Path:
    """A one-fleet manifest: `session` and `for_each` are YAML mapping bodies (one line each)."""
    return write(
        name,
        f"version: 1\ncampaign: t\n{extra}fleets:\n  - name: f\n"
        f"    for_each: {{{for_each}}}\n    session: {{{session}}}\n",
    )


# ------------------------------------------------------------------------------ the issue's example


def test_the_issue_example_plans_as_written(write: Write, tmp_path: Path) -> None:
    write("data/services.csv", "repo,acu\nacme/billing,10\nacme/search,\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "result.schema.json").write_text(json.dumps(RESULT_SCHEMA))
    path = write("py312.yaml", ISSUE_EXAMPLE)

    plan = plan_of(path)

    assert plan.campaign == "py312-upgrade" and len(plan) == 2
    billing, search = plan.sessions
    assert (billing.key, search.key) == ("acme/billing", "acme/search")
    assert billing.request == {
        "prompt": "Upgrade acme/billing to Python 3.12.\n",
        "title": "Upgrade acme/billing to Python 3.12",
        "repos": ["acme/billing"],
        "tags": [
            "team-platform",
            "fleet:py312-upgrade",
            item_tag("py312-upgrade", "acme/billing"),
            fingerprint_tag(billing.fingerprint),
        ],
        "secret_ids": ["secret-gh"],
        "session_secrets": [{"key": "NPM_TOKEN", "value": "***", "sensitive": True}],
        "max_acu_limit": 10,
        "structured_output_schema": RESULT_SCHEMA,
    }
    assert search.request["max_acu_limit"] == 8  # the empty cell is absent: default(8) applies
    assert billing.tags == (campaign_tag("py312-upgrade"), item_tag("py312-upgrade", "acme/billing"))
    assert plan.totals() == {
        "sessions": 2,
        "max_sessions": 500,
        "acu": 18,
        "max_total_acu": 4000,
        "unbounded_acu_sessions": 0,
    }
    assert plan.warnings == (
        "environment variable(s) for session secrets not set: NPM_TOKEN "
        "(apply will refuse until they are)",
    )
    assert plan.schemas == {"services": RESULT_SCHEMA}


def test_the_issue_example_with_its_secret_set(write: Write, tmp_path: Path) -> None:
    write("data/services.csv", "repo,acu\nacme/billing,10\n")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "result.schema.json").write_text(json.dumps(RESULT_SCHEMA))
    path = write("py312.yaml", ISSUE_EXAMPLE)

    plan = plan_of(path, environ={"NPM_TOKEN": "npm_s3cr3t"})

    assert plan.warnings == ()
    [session] = plan.sessions
    assert session.body({"NPM_TOKEN": "npm_s3cr3t"})["session_secrets"] == [
        {"key": "NPM_TOKEN", "value": "npm_s3cr3t", "sensitive": True}
    ]
    assert "npm_s3cr3t" not in json.dumps(plan.to_json())  # the value is never stored
    assert session.request["session_secrets"][0]["value"] == "***"


# ------------------------------------------------------------------------------ data files


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("rows.csv", "repo,acu\nacme/a,3\nacme/b,\n"),
        ("rows.csv", "\ufeffrepo , acu\r\nacme/a,3\r\n\r\nacme/b,\r\n"),  # BOM, CRLF, blank line
        ("rows.json", '[{"repo": "acme/a", "acu": 3}, {"repo": "acme/b"}]'),
        ("rows.jsonl", '{"repo": "acme/a", "acu": 3}\n\n{"repo": "acme/b"}\n'),
        ("rows.yaml", "- {repo: acme/a, acu: 3}\n- repo: acme/b\n"),
    ],
)
def test_data_file_formats_give_the_same_plan(write: Write, name: str, text: str) -> None:
    write(f"data/{name}", text)
    path = manifest(
        write,
        "prompt: '{{ item.repo }}', max_acu_limit: '{{ item.acu | default(5) }}'",
        f"file: data/{name}",
        extra="",
        name="m.yaml",
    )
    plan = plan_of(path)
    assert [(s.key, s.request["prompt"], s.request["max_acu_limit"]) for s in plan.sessions] == [
        ("acme/a-3", "acme/a", 3),
        ("acme/b", "acme/b", 5),
    ]


def test_csv_quoted_cells_may_hold_commas_and_newlines(write: Write) -> None:
    write("d.csv", 'repo,notes\nacme/a,"one, two\nthree"\nacme/b,plain\n')
    path = manifest(write, "prompt: '{{ item.notes }}'", "file: d.csv")
    assert [s.request["prompt"] for s in plan_of(path).sessions] == ["one, two\nthree", "plain"]


def test_csv_row_errors_name_the_data_file_line(write: Write) -> None:
    write("sub/d.csv", 'repo,notes\nacme/a,"multi\nline"\nacme/b,x,extra\n')
    path = write(
        "sub/m.yaml",
        "version: 1\ncampaign: t\nfleets:\n  - name: f\n"
        "    for_each: {file: d.csv}\n    session: {prompt: hi}\n",
    )
    [problem] = problems_of(path)
    assert problem.startswith(f"{path.parent / 'd.csv'}:4:1: row has 3 column(s)")


def test_many_bad_rows_are_listed_then_counted(write: Write) -> None:
    write("d.csv", "a,b\n" + "x\n" * 30)
    problems = problems_of(manifest(write, "prompt: hi", "file: d.csv"))
    assert len(problems) == 21
    assert problems[-1].endswith("and 10 more row(s) with the wrong number of columns (lines 22..31)")


def test_a_json_data_file_must_hold_an_array(write: Write) -> None:
    data = write("d.json", '{"repo": "a"}')
    assert problems_of(manifest(write, "prompt: hi", "file: d.json")) == [
        f"{data}:1:1: a JSON data file must hold an array of items"
    ]


def test_data_file_values_keep_their_types(write: Write) -> None:
    write("d.yaml", "- {n: 3, on: true, when: 2026-01-02}\n")
    path = manifest(write, "prompt: '{{ item.n + 1 }} {{ item.on }} {{ item.when }}'", "file: d.yaml")
    assert plan_of(path).sessions[0].request["prompt"] == "4 True 2026-01-02"


# ------------------------------------------------------------------------------ merging, templates


def test_defaults_then_session(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: t
        defaults:
          prompt: default prompt
          title: default title
          max_acu_limit: 4
          tags: [shared, team]
          devin_mode: fast
        fleets:
          - name: f
            for_each: {items: [a]}
            session:
              title: "{{ item }} title"
              tags: [team, "{{ item }}-tag"]
              max_acu_limit: 6
        """,
    )
    [s] = plan_of(path).sessions
    assert s.request["prompt"] == "default prompt"
    assert s.request["title"] == "a title"
    assert s.request["max_acu_limit"] == 6
    assert s.request["devin_mode"] == "fast"
    assert s.request["tags"] == [
        "shared",
        "team",
        "a-tag",
        "fleet:t",
        item_tag("t", "a"),
        fingerprint_tag(s.fingerprint),
    ]


def test_a_session_prompt_replaces_a_default_prompt_file(write: Write) -> None:
    write("p.md.j2", "from the file: {{ item }}\n")
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: t
        defaults: {prompt_file: p.md.j2}
        fleets:
          - name: from-file
            for_each: {items: [a]}
            session: {title: x}
          - name: inline
            for_each: {items: [b]}
            session: {prompt: "inline {{ item }}"}
        """,
    )
    assert [s.request["prompt"] for s in plan_of(path).sessions] == ["from the file: a\n", "inline b"]


def test_prompt_file_errors_point_into_the_file(write: Write) -> None:
    write("prompts/p.j2", "line one\n{{ item.nope }}\n")
    path = manifest(write, "prompt_file: prompts/p.j2", "items: [{repo: a}]")
    [problem] = problems_of(path)
    assert problem.startswith(
        f"{path.parent / 'prompts' / 'p.j2'}:2:1: fleets[0].session.prompt_file: undefined variable"
    )


def test_every_string_is_a_template_also_in_lists(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: t
        vars: {org: acme, docs: "https://docs.example"}
        fleets:
          - name: f
            for_each: {items: [{repo: api, n: 2}]}
            key: "{{ vars.org }}/{{ item.repo }}"
            session:
              prompt: "{{ campaign }} {{ fleet }} {{ index }}"
              repos: ["{{ vars.org }}/{{ item.repo }}", plain/repo]
              attachment_urls: ["{{ vars.docs }}/{{ item.repo }}"]
              knowledge_ids: ["note-{{ item.repo }}"]
              session_links: ["devin-{{ item.n }}"]
              playbook_id: "playbook-{{ item.repo }}"
              platform: "{{ 'windows' if item.n > 1 else 'default' }}"
              session_secrets:
                - {key: "TOKEN_{{ item.repo | upper }}", value: {env: TOKEN}}
        """,
    )
    [s] = plan_of(path).sessions
    assert s.key == "acme/api"
    assert s.request["prompt"] == "t f 0"
    assert s.request["repos"] == ["acme/api", "plain/repo"]
    assert s.request["attachment_urls"] == ["https://docs.example/api"]
    assert s.request["knowledge_ids"] == ["note-api"]
    assert s.request["session_links"] == ["devin-2"]
    assert s.request["playbook_id"] == "playbook-api"
    assert s.request["platform"] == "windows"
    assert s.request["session_secrets"][0]["key"] == "TOKEN_API"


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("'{{ item.b }}'", True),
        ("'false'", False),
        ("'{{ not item.b }}'", False),
        ("yes", True),
    ],
)
def test_non_string_fields_are_converted_after_rendering(
    write: Write, template: str, value: bool
) -> None:
    path = manifest(
        write,
        f"prompt: hi, bypass_approval: {template}, resumable: '{{{{ item.b }}}}'",
        "items: [{b: true}]",
    )
    [s] = plan_of(path).sessions
    assert s.request["bypass_approval"] is value and s.request["resumable"] is True


def test_an_empty_render_leaves_a_non_string_field_out(write: Write) -> None:
    path = manifest(
        write,
        "prompt: hi, max_acu_limit: \"{{ item.acu | default('') }}\"",
        "items: [{k: a, acu: 3}, {k: b}]",
    )
    assert [s.request.get("max_acu_limit") for s in plan_of(path).sessions] == [3, None]


def test_a_non_integer_render_is_refused(write: Write) -> None:
    path = manifest(write, "prompt: hi, max_acu_limit: '{{ item.acu }}'", "items: [{acu: lots}]")
    [problem] = problems_of(path)
    assert "fleets[0].session.max_acu_limit: expected an integer; got 'lots'" in problem


def test_inline_schema_and_schema_typo(write: Write) -> None:
    path = manifest(write, "prompt: hi, structured_output_schema: {type: object}")
    assert plan_of(path).sessions[0].request["structured_output_schema"] == {"type": "object"}
    path = manifest(write, "prompt: hi, structured_output_schema: {fil: s.json}")
    [problem] = problems_of(path)
    assert "not a JSON Schema: none of its keys (fil) is a Draft 7 keyword" in problem


def test_yaml_anchors_and_merge_keys_work(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: t
        vars:
          base: &base {prompt: "from anchor {{ item }}", max_acu_limit: 2}
        fleets:
          - name: f
            for_each: {items: [a]}
            session:
              <<: *base
              max_acu_limit: 3
        """,
    )
    [s] = plan_of(path).sessions
    assert (s.request["prompt"], s.request["max_acu_limit"]) == ("from anchor a", 3)


def test_parse_yaml_keeps_timestamps_as_text_and_marks_keys() -> None:
    data, marks = parse_yaml("a:\n  when: 2026-01-02\n  list: [x, y]\n", "f.yaml")
    assert data == {"a": {"when": "2026-01-02", "list": ["x", "y"]}}
    data, _ = parse_yaml("on: yes\nno: off\nt: true\nf: False\n", "f.yaml")
    assert data == {"on": "yes", "no": "off", "t": True, "f": False}  # YAML 1.2 booleans
    assert marks.find(("a", "list", 1)) == (3, 13)
    assert marks.find(("a", "when"), key=True) == (2, 3)
    assert marks.find(("a", "nope")) == (2, 3)  # the nearest ancestor


# ------------------------------------------------------------------------------ matrices


def test_matrix_with_include_and_exclude(write: Write) -> None:
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: t
        fleets:
          - name: f
            for_each:
              matrix:
                os: [linux, mac]
                py: ["3.11", "3.12"]
                exclude: [{os: mac, py: "3.11"}]
                include:
                  - {os: linux, extra: yes-please}
                  - {os: windows, py: "3.12"}
            session: {prompt: "{{ item.os }} {{ item.py }} {{ item.extra | default('-') }}"}
        """,
    )
    plan = plan_of(path)
    assert [s.request["prompt"] for s in plan.sessions] == [
        "linux 3.11 yes-please",
        "linux 3.12 yes-please",
        "mac 3.12 -",
        "windows 3.12 -",
    ]
    assert [s.key for s in plan.sessions] == [
        "linux-3.11-yes-please",
        "linux-3.12-yes-please",
        "mac-3.12",
        "windows-3.12",
    ]
    assert plan.sessions[3].origin == "matrix {os=windows, py=3.12}"


def test_matrix_axis_without_values(write: Write) -> None:
    path = manifest(write, "prompt: hi", "matrix: {os: []}")
    [problem] = problems_of(path)
    assert "fleets[0].for_each.matrix.os: matrix axis 'os' has no values" in problem


# ------------------------------------------------------------------------------ secrets


def test_secret_values_never_come_from_the_manifest(write: Write) -> None:
    path = manifest(write, "prompt: hi, session_secrets: [{key: K, value: {env: MY_TOKEN}}]")
    plan = plan_of(path, environ={"MY_TOKEN": "hunter2"})
    text = json.dumps(plan.to_json())
    assert "hunter2" not in text and '"value": "***"' in text
    assert plan.secret_env_names() == ["MY_TOKEN"]
    assert plan.missing_secret_env({}) == ["MY_TOKEN"]


@pytest.mark.parametrize("value", ["hunter2", "12345", "true", "{env: MY_TOKEN, extra: 1}"])
def test_literal_or_malformed_secret_values_are_refused(write: Write, value: str) -> None:
    path = manifest(write, f"prompt: hi, session_secrets: [{{key: K, value: {value}}}]")
    [problem] = problems_of(path)
    assert "fleets[0].session.session_secrets[0].value" in problem


def test_budget_limits_are_integers_not_booleans_or_text(write: Write) -> None:
    path = manifest(write, "prompt: hi", extra="budget: {max_sessions: true, max_total_acu: '5'}\n")
    assert [p.split(": ", 1)[1] for p in problems_of(path)] == [
        "budget.max_sessions: expected an integer; got true",
        "budget.max_total_acu: expected an integer; got '5'",
    ]


# ------------------------------------------------------------------------------ drift


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_validates_and_plans(path: Path) -> None:
    plan = build_plan(load_manifest(path), environ={"REGISTRY_TOKEN": "x"})
    assert len(plan) > 0 and plan.warnings == ()
    assert len({s.key for s in plan.sessions}) == len(plan)


def test_the_committed_schema_equals_a_fresh_export() -> None:
    committed = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    assert committed == manifest_json_schema(), (
        "regenerate: .venv/bin/devin-fleet schema > schemas/manifest.schema.json"
    )


def test_the_committed_schema_is_draft7_and_accepts_every_example() -> None:
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    for path in EXAMPLES:
        data: Any = yaml.safe_load(path.read_text())
        assert [e.message for e in validator.iter_errors(data)] == [], path.name
    assert list(
        validator.iter_errors({"version": 1, "campaign": "x", "fleets": [], "fleeets": []})
    )  # and refuses what the model refuses


def test_the_issue_example_validates_against_the_committed_schema() -> None:
    schema = json.loads((ROOT / "schemas" / "manifest.schema.json").read_text())
    data = yaml.safe_load(ISSUE_EXAMPLE)
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(data)] == []
