"""The corpus of bad manifests (tests/corpus/bad): each is refused with a located, one-line
message naming the field and what is wrong, through the library and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import ManifestError, Problem
from launcher.spec.build import plan_manifest

CORPUS = Path(__file__).parent / "corpus" / "bad"


class Expect(NamedTuple):
    manifest: str
    where: str  # file:line:col (file relative to the corpus folder)
    field: str
    fragment: str
    count: int = 1  # problems reported in all


CASES = [
    # YAML itself
    Expect(
        "yaml_syntax.yaml", "yaml_syntax.yaml:6:5", "", "YAML syntax error: while parsing a flow mapping"
    ),
    Expect(
        "duplicate_mapping_key.yaml",
        "duplicate_mapping_key.yaml:9:7",
        "fleets[0].session.title",
        "duplicate key 'title' (first on line 8)",
    ),
    Expect("alias_bomb.yaml", "alias_bomb.yaml:9:6", "", "aliases expand the document to"),
    Expect("recursive_alias.yaml", "recursive_alias.yaml:4:9", "", "recursive alias"),
    Expect("not_utf8.yaml", "not_utf8.yaml:3:18", "", "not valid UTF-8 (byte 0xe9)"),
    Expect("control_char.yaml", "control_char.yaml:3:20", "", "control character #x0007 is not allowed"),
    Expect(
        "unknown_yaml_tag.yaml",
        "unknown_yaml_tag.yaml:2:11",
        "campaign",
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    # the manifest's shape
    Expect(
        "unknown_field_typo.yaml",
        "unknown_field_typo.yaml:8:7",
        "fleets[0].session.reops",
        "unknown field",
    ),
    Expect("top_level_typo.yaml", "top_level_typo.yaml:3:1", "fleet", "unknown field", 2),
    Expect(
        "wrong_type.yaml",
        "wrong_type.yaml:4:18",
        "defaults.max_acu_limit",
        "expected an integer or a template string; got a list",
    ),
    Expect(
        "string_expected.yaml",
        "string_expected.yaml:8:23",
        "fleets[0].session.repos[1]",
        "expected a string; got 2024",
    ),
    # structure and sessions together: the sound fleet is still rendered (tests/test_every_problem)
    Expect(
        "every_problem_at_once.yaml",
        "every_problem_at_once.yaml:12:24",
        "fleets[0].session.bypass_approval",
        "expected true/false; got 'maybe'",
        6,
    ),
    Expect(
        "bad_campaign_name.yaml",
        "bad_campaign_name.yaml:2:11",
        "campaign",
        "bad campaign name 'Py312_Upgrade'",
    ),
    Expect(
        "unsupported_version.yaml",
        "unsupported_version.yaml:1:10",
        "version",
        "unsupported manifest version 2; this tool reads version 1",
    ),
    Expect(
        "prompt_and_prompt_file.yaml",
        "prompt_and_prompt_file.yaml:7:7",
        "fleets[0].session",
        "set either `prompt` or `prompt_file`, not both",
    ),
    Expect(
        "for_each_two_sources.yaml",
        "for_each_two_sources.yaml:6:7",
        "fleets[0].for_each",
        "give exactly one of `file`, `items` or `matrix` (got file, items)",
    ),
    Expect(
        "duplicate_fleet_name.yaml",
        "duplicate_fleet_name.yaml:7:11",
        "fleets[1].name",
        "duplicate fleet name 'f'",
    ),
    Expect(
        "literal_secret.yaml",
        "literal_secret.yaml:10:18",
        "fleets[0].session.session_secrets[0].value",
        "a literal secret value is not allowed",
    ),
    # templates
    Expect(
        "undefined_variable.yaml",
        "undefined_variable.yaml:12:1",
        "fleets[0].session.prompt",
        "undefined variable: 'dict object' has no attribute 'owner' "
        "[item undefined_variable.yaml:7:11, and 1 more item(s)]",
    ),
    Expect(
        "template_syntax.yaml",
        "template_syntax.yaml:8:14",
        "fleets[0].session.title",
        "template syntax error: unexpected end of template",
    ),
    Expect(
        "sandbox_mro.yaml",
        "sandbox_mro.yaml:7:15",
        "fleets[0].session.prompt",
        "template tried to leave the sandbox: access to attribute '__class__'",
    ),
    Expect(
        "sandbox_globals.yaml",
        "sandbox_globals.yaml:8:14",
        "fleets[0].session.title",
        "template tried to leave the sandbox: access to attribute '__init__'",
    ),
    Expect(
        "key_uses_index.yaml", "key_uses_index.yaml:6:10", "fleets[0].key", "a key may not use `index`"
    ),
    Expect(
        "no_prompt.yaml", "no_prompt.yaml:7:7", "fleets[0].session", "no `prompt` (or `prompt_file`)"
    ),
    # data files
    Expect(
        "missing_data_file.yaml",
        "missing_data_file.yaml:6:13",
        "fleets[0].for_each.file",
        "data/nowhere.csv: file not found",
    ),
    Expect("malformed_jsonl.yaml", "data/malformed.jsonl:3:10", "", "invalid JSON: Expecting value"),
    Expect(
        "csv_missing_column.yaml",
        "data/short_row.csv:3:1",
        "",
        "row has 2 column(s); the header has 3 (repo, owner, acu)",
    ),
    Expect(
        "missing_column_in_row.yaml",
        "missing_column_in_row.yaml:6:10",
        "fleets[0].key",
        "has no attribute 'repo' [item data/rows.json[1]]",
    ),
    Expect(
        "duplicate_session_key.yaml",
        "duplicate_session_key.yaml:9:10",
        "fleets[0].key",
        "duplicate key 'acme/a': item duplicate_session_key.yaml:7:11 (fleet f) and item "
        "duplicate_session_key.yaml:8:11 (fleet f)",
    ),
    Expect("empty_fleet.yaml", "empty_fleet.yaml:6:7", "fleets[0].for_each", "empty fleet"),
    Expect(
        "matrix_unknown_axis.yaml",
        "matrix_unknown_axis.yaml:10:13",
        "fleets[0].for_each.matrix.exclude[0]",
        "exclude names unknown axis 'python'",
    ),
    # the API's rules, checked on every rendered request
    Expect(
        "bad_devin_mode.yaml",
        "bad_devin_mode.yaml:4:15",
        "defaults.devin_mode",
        "got 'turbo' [item bad_devin_mode.yaml:7:24, and 1 more item(s)]",
    ),
    Expect(
        "too_many_tags.yaml",
        "too_many_tags.yaml:4:9",
        "defaults.tags",
        "49 tags plus devin-fleet's 4 (campaign, key, fingerprint, attempt) is more than the API's 50",
    ),
    Expect(
        "bad_attachment_url.yaml",
        "bad_attachment_url.yaml:8:24",
        "fleets[0].session.attachment_urls",
        "'docs.example.com/acme/a' is not an absolute URI",
    ),
    Expect(
        "zero_acu.yaml",
        "zero_acu.yaml:11:22",
        "fleets[0].session.max_acu_limit",
        "greater than 0 (got '0') [item zero_acu.yaml:8:11]",
    ),
    Expect(
        "empty_prompt.yaml",
        "empty_prompt.yaml:7:15",
        "fleets[0].session.prompt",
        "prompt must not be empty",
    ),
    Expect(
        "schema_external_ref.yaml",
        "schema_external_ref.yaml:9:9",
        "fleets[0].session.structured_output_schema",
        "external $ref: /properties/result/$ref=https://schemas.example/result.json",
    ),
    Expect(
        "schema_dangling_ref.yaml",
        "schema_dangling_ref.yaml:9:9",
        "fleets[0].session.structured_output_schema",
        "dangling $ref, to nothing in the schema: #/definitions/missing (at /properties/files)",
    ),
    Expect(
        "schema_file_dangling_ref.yaml",
        "schema_file_dangling_ref.yaml:8:33",
        "fleets[0].session.structured_output_schema",
        "dangling $ref, to nothing in the schema: #/definitions/a/b (at /properties/wrong_escape)",
    ),
    Expect(
        "schema_not_draft7.yaml",
        "schema_not_draft7.yaml:8:33",
        "fleets[0].session.structured_output_schema",
        "not a valid Draft 7 schema at properties/status/type",
    ),
    Expect(
        "schema_file_bad_json.yaml",
        "schemas/broken.json:3:20",
        "fleets[0].session.structured_output_schema",
        "invalid JSON",
    ),
    # the budget
    Expect(
        "budget_sessions.yaml",
        "budget_sessions.yaml:4:17",
        "budget.max_sessions",
        "the plan has 3 sessions; the budget allows 2",
    ),
    Expect(
        "budget_acu.yaml",
        "budget_acu.yaml:6:18",
        "budget.max_total_acu",
        "the plan may use 30 ACUs; the budget allows 25",
    ),
    Expect(
        "budget_unbounded_acu.yaml",
        "budget_unbounded_acu.yaml:4:18",
        "budget.max_total_acu",
        "1 session(s) have no max_acu_limit",
    ),
]


def problems_of(path: Path | str) -> list[Problem]:
    with pytest.raises(ManifestError) as info:
        plan_manifest(path, environ={})
    return info.value.problems


def test_the_corpus_is_covered_by_the_table() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.yaml")) == sorted(c.manifest for c in CASES)
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c.manifest for c in CASES])
def test_bad_manifest_is_refused_with_a_located_message(
    case: Expect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    problems = problems_of(case.manifest)
    located = [p for p in problems if p.render().startswith(f"{case.where}: ")]
    assert located, f"nothing at {case.where}: {[p.render() for p in problems]}"
    assert any(p.field == case.field and case.fragment in p.message for p in located), [
        p.render() for p in located
    ]
    assert len(problems) == case.count, [p.render() for p in problems]
    for p in problems:
        assert "\n" not in p.render() and "pydantic" not in p.render()


@pytest.mark.parametrize(
    "name",
    [
        "unknown_field_typo.yaml",
        "undefined_variable.yaml",
        "sandbox_globals.yaml",
        "csv_missing_column.yaml",
        "alias_bomb.yaml",
        "budget_acu.yaml",
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_cli_refuses_without_a_traceback(
    name: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(CORPUS)
    case = next(c for c in CASES if c.manifest == name)
    result = CliRunner().invoke(cli, [command, name])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"{case.where}: {case.field + ': ' if case.field else ''}" in result.output
    assert "nothing was sent" in result.output


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    result = CliRunner().invoke(cli, ["--debug", "plan", "budget_acu.yaml"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ManifestError)


def test_typo_hint_names_the_closest_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    [problem] = problems_of("unknown_field_typo.yaml")
    assert problem.hint == "did you mean 'repos'?"
    assert problem.render() == (
        "unknown_field_typo.yaml:8:7: fleets[0].session.reops: "
        "unknown field (hint: did you mean 'repos'?)"
    )
    top = problems_of("top_level_typo.yaml")
    assert [p.render() for p in top] == [
        "top_level_typo.yaml:1:1: fleets: required field is missing",
        "top_level_typo.yaml:3:1: fleet: unknown field (hint: did you mean 'fleets'?)",
    ]


# ------------------------------------------------------------------------ generated bad inputs


def test_manifest_over_the_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("version: 1\ndescription: '" + "x" * (4 * 1024 * 1024) + "'\n")
    [problem] = problems_of(path)
    assert problem.line is None and "the limit is 4,194,304" in problem.message


def test_data_file_over_the_size_limit(tmp_path: Path, write) -> None:  # type: ignore[no-untyped-def]
    with open(tmp_path / "huge.csv", "wb") as f:
        f.truncate(64 * 1024 * 1024 + 1)  # sparse: the size check comes before any reading
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: huge
        fleets:
          - name: f
            for_each: {file: huge.csv}
            session: {prompt: hi}
        """,
    )
    [problem] = problems_of(path)
    assert problem.field == "fleets[0].for_each.file" and problem.line == 5
    assert "huge.csv: file is 67,108,865 bytes; the limit is 67,108,864" in problem.message


def test_schema_over_64_kb(tmp_path: Path, write) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "big.json").write_text(json.dumps({"type": "object", "description": "x" * 70_000}))
    path = write(
        "m.yaml",
        """
        version: 1
        campaign: big-schema
        fleets:
          - name: f
            for_each: {items: [a]}
            session:
              prompt: hi
              structured_output_schema: {file: big.json}
        """,
    )
    [problem] = problems_of(path)
    assert (problem.line, problem.field) == (8, "fleets[0].session.structured_output_schema")
    assert "the API accepts at most 65,536" in problem.message


def test_nesting_too_deep(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("version: 1\nvars:\n  x: " + "[" * 100 + "]" * 100 + "\n")
    [problem] = problems_of(path)
    assert "nested more than 64 levels deep" in problem.message


def test_pathologically_deep_yaml(tmp_path: Path) -> None:
    path = tmp_path / "deeper.yaml"
    path.write_text("[" * 20_000 + "]" * 20_000)
    [problem] = problems_of(path)
    assert "nesting depth" in problem.message or "nested" in problem.message


def test_control_character_after_multibyte_text(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text('version: 1\ndescription: "éé\u0007"\n', encoding="utf-8")
    [problem] = problems_of(path)
    assert (problem.line, problem.col) == (2, 17)
    assert problem.message == "control character #x0007 is not allowed in YAML"


def test_empty_and_non_mapping_documents(tmp_path: Path) -> None:
    for text in ("", "- a\n- b\n", "just text\n"):
        path = tmp_path / "m.yaml"
        path.write_text(text)
        [problem] = problems_of(path)
        assert problem.message == "a manifest must be a YAML mapping"


@pytest.mark.parametrize(
    ("value", "shown"), [("true", "true"), ("1.0", "1.0"), ('"1"', "'1'"), ("[1]", "a list")]
)
def test_version_must_be_the_number_1(tmp_path: Path, value: str, shown: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(f"version: {value}\ncampaign: x\nfleets: []\n")
    [problem] = problems_of(path)
    assert problem.render() == (
        f"{path}:1:10: version: unsupported manifest version {shown}; "
        "this tool reads version 1 (hint: write `version: 1`)"
    )


def test_missing_manifest(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path / "nope.yaml")
    assert problem.message == "file not found"
