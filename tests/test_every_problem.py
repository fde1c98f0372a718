"""`validate` and `plan` report every problem of a manifest in one run: problems of its structure
and the problems of the sessions its sound fleets render, together; and an output schema whose
local `$ref` points at nothing is refused at its manifest line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from launcher.api.models import check_output_schema
from launcher.errors import ManifestError
from launcher.spec.build import plan_manifest
from launcher.spec.manifest import IncompleteManifest, load_manifest
from tests.helpers import run

Write = Callable[[str, str], Path]

SIX = """
version: 1
campaign: Py312_Upgrade
descriptoin: upgrade every service to Python 3.12
fleets:
  - name: services
    for_each: {items: [acme/api, acme/web]}
    session:
      prompt: "Upgrade {{ item }} to Python 3.12"
      attachment_urls: ["docs.example.com/py312"]
      max_acu_limit: -5
      devin_mode: turbo
      bypass_approval: maybe
"""
ITEMS = "[item m.yaml:6:24, and 1 more item(s)]"


def problem_lines(result: Result) -> list[str]:
    """`file:line:col: field: message` lines, without hints and item origins."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("error: ")]
    return [line.split(" (hint: ")[0].split(" [item ")[0] for line in lines]


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_six_problems_of_structure_and_sessions_in_one_run(
    command: str, write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write("m.yaml", SIX)
    monkeypatch.chdir(tmp_path)
    res = run(command, "m.yaml")
    assert res.exit_code == 1 and "Traceback" not in res.output
    lines = res.stderr.splitlines()
    assert lines == [
        "m.yaml:2:11: campaign: bad campaign name 'Py312_Upgrade' (hint: lowercase letters, digits "
        "and '-', starting with a letter or digit, ≤ 63 chars)",
        "m.yaml:3:1: descriptoin: unknown field (hint: did you mean 'description'?)",
        "m.yaml:9:24: fleets[0].session.attachment_urls: 'docs.example.com/py312' is not an "
        f"absolute URI (scheme:..., e.g. https://host/path) {ITEMS}",
        f"m.yaml:10:22: fleets[0].session.max_acu_limit: {lines[3].split(': ', 2)[2]}",
        f"m.yaml:11:19: fleets[0].session.devin_mode: {lines[4].split(': ', 2)[2]}",
        f"m.yaml:12:24: fleets[0].session.bypass_approval: expected true/false; got 'maybe' {ITEMS}",
        "error: 6 problems in the manifest; nothing was sent",
    ]
    # Their wording belongs to the pydantic renderer; what matters here is that they are there.
    assert "must be greater than 0; got -5" in lines[3] and lines[3].endswith(ITEMS)
    assert "got 'turbo'" in lines[4] and lines[4].endswith(ITEMS)


def test_the_library_loader_still_refuses_the_structure_alone(write: Write) -> None:
    path = write("m.yaml", SIX)
    with pytest.raises(IncompleteManifest) as info:
        load_manifest(path)
    assert [p.field for p in info.value.problems] == ["campaign", "descriptoin"]
    assert isinstance(info.value, ManifestError)
    salvaged = info.value.salvaged
    assert salvaged is not None and salvaged.skipped_fleets == frozenset()
    with pytest.raises(ManifestError) as full:
        plan_manifest(path, environ={})
    assert len(full.value.problems) == 6


def test_unknown_field_in_a_fleet_and_its_session_problems(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(
        "m.yaml",
        """
        version: 1
        campaign: typo
        fleets:
          - name: f
            for_each: {items: [acme/a]}
            session:
              prompt: "Fix {{ item }}"
              reops: ["{{ item }}"]
              devin_mode: turbo
        """,
    )
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1
    assert problem_lines(res) == [
        "m.yaml:8:7: fleets[0].session.reops: unknown field",
        "m.yaml:9:19: fleets[0].session.devin_mode: "
        "expected one of 'normal', 'fast', 'lite', 'ultra' or 'fusion'; got 'turbo'",
    ]


def test_a_broken_fleet_is_skipped_and_the_others_still_render(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(
        "m.yaml",
        """
        version: 1
        campaign: two-fleets
        fleets:
          - name: broken
            for_each: {items: [a], file: data.csv}
            session: {prompt: hi, devin_mode: turbo}
          - name: sound
            for_each: {items: [acme/b]}
            session:
              prompt: "Fix {{ item }}"
              max_acu_limit: 0
        """,
    )
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1
    # Nothing from the broken fleet's sessions (its `turbo` is not reached); the sound fleet's
    # problem is located in the sound fleet, not shifted onto another index.
    assert problem_lines(res) == [
        "m.yaml:5:15: fleets[0].for_each: give exactly one of `file`, `items` or `matrix` "
        "(got file, items)",
        "m.yaml:11:22: fleets[1].session.max_acu_limit: must be greater than 0; got 0",
    ]


def test_a_check_uncovered_by_dropping_an_unknown_field_is_in_the_same_run(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # pydantic runs the "prompt or prompt_file" check only once the fields are valid.
    write("p.txt", "hi")
    write(
        "m.yaml",
        """
        version: 1
        campaign: both-prompts
        fleets:
          - name: f
            for_each: {items: [a]}
            session: {prompt: hi, prompt_file: p.txt, titel: x}
        """,
    )
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1
    assert problem_lines(res) == [
        "m.yaml:6:14: fleets[0].session: set either `prompt` or `prompt_file`, not both",
        "m.yaml:6:47: fleets[0].session.titel: unknown field",
    ]


def test_missing_version_bad_budget_and_duplicate_fleets_with_session_problems(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(
        "m.yaml",
        """
        campaign: many
        budget: {max_sessions: -1}
        fleets:
          - name: f
            for_each: {items: [a]}
            session: {prompt: hi, devin_mode: turbo}
          - name: f
            for_each: {items: [b]}
            session: {prompt: hi, bypass_approval: maybe}
        """,
    )
    monkeypatch.chdir(tmp_path)
    res = run("plan", "m.yaml")
    assert res.exit_code == 1
    assert problem_lines(res) == [
        "m.yaml:1:1: version: required field is missing",
        "m.yaml:2:24: budget.max_sessions: must be greater than 0; got -1",
        "m.yaml:6:39: fleets[0].session.devin_mode: "
        "expected one of 'normal', 'fast', 'lite', 'ultra' or 'fusion'; got 'turbo'",
        "m.yaml:7:11: fleets[1].name: duplicate fleet name 'f' (first: fleets[0])",
        "m.yaml:9:44: fleets[1].session.bypass_approval: expected true/false; got 'maybe'",
    ]


def test_broken_defaults_neither_hide_the_sessions_problems_nor_invent_one(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The broken field is taken out (a prompt stands in for a broken prompt, so no false
    # "missing prompt"), and the sessions are still rendered and checked.
    write(
        "m.yaml",
        """
        version: 1
        campaign: bad-defaults
        defaults: {prompt: [hi]}
        fleets:
          - name: f
            for_each: {items: [a]}
            session: {devin_mode: turbo}
        """,
    )
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1
    assert problem_lines(res) == [
        "m.yaml:3:20: defaults.prompt: expected a string; got a list",
        "m.yaml:7:27: fleets[0].session.devin_mode: "
        "expected one of 'normal', 'fast', 'lite', 'ultra' or 'fusion'; got 'turbo'",
    ]


# --------------------------------------------------------------------------- dangling $ref

DANGLING_INLINE = """
version: 1
campaign: dangling
fleets:
  - name: f
    for_each: {items: [a]}
    session:
      prompt: hi
      structured_output_schema:
        type: object
        properties:
          result: {$ref: "#/definitions/missing"}
"""
DANGLING_FILE = """
version: 1
campaign: dangling
fleets:
  - name: f
    for_each: {items: [a]}
    session:
      prompt: hi
      structured_output_schema: {file: schema.json}
"""


@pytest.mark.parametrize(
    ("manifest", "where"), [(DANGLING_INLINE, "m.yaml:9:9"), (DANGLING_FILE, "m.yaml:8:33")]
)
def test_validate_refuses_a_dangling_ref_at_the_schema_line(
    manifest: str, where: str, write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write("schema.json", '{"properties": {"result": {"$ref": "#/definitions/missing"}}}')
    write("m.yaml", manifest)
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert problem_lines(res) == [
        f"{where}: fleets[0].session.structured_output_schema: dangling $ref, to nothing in the "
        "schema: #/definitions/missing (at /properties/result)"
    ]


DEFS: dict[str, Any] = {
    "a/b": {"type": "string"},
    "t~x": {"type": "integer"},
    "named": {"$id": "#item", "type": "string"},
}


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("#", True),
        ("#/definitions/a~1b", True),  # ~1 is '/'
        ("#/definitions/t~0x", True),  # ~0 is '~'
        ("#/x-list/0", True),
        ("#/definitions/a%7E1b", True),  # %-escaped in the URI fragment, then ~1
        ("#item", True),  # a plain-name fragment: the subschema with that $id
        ("#/definitions/a/b", False),  # unescaped '/' walks into a/ then b
        ("#/definitions/t~x", False),
        ("#/x-list/1", False),
        ("#/x-list/00", False),
        ("#/definitions/missing", False),
        ("#other", False),
    ],
)
def test_local_refs_resolve_as_json_pointers(ref: str, ok: bool) -> None:
    schema = {"definitions": DEFS, "x-list": [{"type": "string"}], "properties": {"x": {"$ref": ref}}}
    problem = check_output_schema(schema)
    assert (problem is None) == ok, problem
    if not ok:
        assert problem == f"dangling $ref, to nothing in the schema: {ref} (at /properties/x)"


def test_every_dangling_ref_is_listed_and_data_is_not_a_ref() -> None:
    schema = {
        "properties": {"a": {"$ref": "#/nope"}, "b": {"items": {"$ref": "#/definitions/x"}}},
        "enum": [{"$ref": "#/only/data"}],  # a value, not a reference
    }
    assert check_output_schema(schema) == (
        "dangling $refs, to nothing in the schema: #/nope (at /properties/a), "
        "#/definitions/x (at /properties/b/items)"
    )


EIGHT = """
version: 1
campaign: eight
defaults:
  tags: team-a
rollout:
  waves: [1, rest]
  gate: {min_success_rate: 75}
fleets:
  - name: one
    for_each: {items: [a, b]}
    session:
      prompt: "Fix {{ item.nope }}"
      repos: acme/api
      attachment_urls: ["not-a-uri"]
      bogus: 1
  - name: two
    for_each: {items: [c]}
    session:
      prompt: "ok {{ item }}"
      max_acu_limit: "{{ 'x' }}"
      platform: [windows]
"""


def test_structural_errors_in_a_session_no_longer_hide_its_other_problems(
    write: Write, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write("m.yaml", EIGHT)
    monkeypatch.chdir(tmp_path)
    res = run("validate", "m.yaml")
    assert res.exit_code == 1 and "Traceback" not in res.output
    fields = [line.split(": ")[1] for line in problem_lines(res)]
    assert fields == [
        "defaults.tags",
        "rollout.gate.min_success_rate",
        "fleets[0].session.prompt",
        "fleets[0].session.repos",
        "fleets[0].session.attachment_urls",
        "fleets[0].session.bogus",
        "fleets[1].session.max_acu_limit",
        "fleets[1].session.platform",
    ], res.stderr
    rate = next(line for line in res.stderr.splitlines() if "min_success_rate" in line)
    assert rate == (
        "m.yaml:7:28: rollout.gate.min_success_rate: must be at most 1; got 75 "
        "(hint: a fraction of the wave's sessions, from 0 to 1: write 0.75 for 75%)"
    )
    assert "Input should" not in res.stderr and "error: 8 problems" in res.stderr
