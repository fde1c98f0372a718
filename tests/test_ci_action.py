"""`devin-fleet ci`, what the GitHub Action runs, end to end against the fakes: validate with at
most 10 annotations; plan as one PR comment per campaign with the outputs; apply on the merged
commit, exactly the reviewed plan (a stale one refused, nothing sent); results posted back."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from launcher import build_plan, load_manifest
from launcher.cli import cli
from launcher.sim import SimServer
from launcher.views.ghactions import cap_annotations, output_block
from launcher.views.markdown import SUMMARY_LIMIT, digest_in
from tests.fake_github import FakeGitHub, Token, running_fake_github
from tests.helpers import point_cli_at

Write = Callable[[str, str], Path]
PR, SHA = 12, "0123456789abcdef0123456789abcdef01234567"


def outputs(path: Path) -> dict[str, str]:
    """Parse $GITHUB_OUTPUT as the runner does: `name<<DELIM`, lines, `DELIM`."""
    found, lines = {}, path.read_text(encoding="utf-8").splitlines()
    while lines:
        name, delim = lines.pop(0).split("<<", 1)
        end = lines.index(delim)
        found[name] = "\n".join(lines[:end])
        lines = lines[end + 1 :]
    return found


@pytest.fixture
def gha(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    """A workflow's environment: the fake GitHub, an event of pull request PR, output files."""
    with running_fake_github() as fake:
        fake.tokens = {"ghs_workflow": Token("github-actions[bot]", installation=True)}
        for i in range(3):
            fake.add(PR, "alice", f"looks good {i}")
        event = tmp_path / "event.json"
        event.write_text(json.dumps({"pull_request": {"number": PR}}))
        for name, value in {
            "GITHUB_API_URL": fake.base_url,
            "GITHUB_REPOSITORY": fake.repo,
            "GITHUB_TOKEN": "ghs_workflow",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_OUTPUT": str(tmp_path / "out.txt"),
            "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "FLEET_CI_OUT_DIR": str(tmp_path / "artifact"),
        }.items():
            monkeypatch.setenv(name, value)
        yield fake


def ci(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["ci", *map(str, args)])


def manifest(write: Write, items: str, name: str = "ci-camp") -> Path:
    return write(
        f"{name}.yaml",
        f"""
        version: 1
        campaign: {name}
        defaults: {{max_acu_limit: 2}}
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session: {{prompt: "Fix {{{{ item }}}}", title: "fix {{{{ item }}}}"}}
        """,
    )


def test_validate_annotates_at_most_10_problems_and_counts_the_rest(
    gha: FakeGitHub, write: Write, tmp_path: Path
) -> None:
    fleets = "".join(
        f"  - name: f{i}\n    for_each: {{items: [a]}}\n    session: {{prompt: '{{{{ nope{i} }}}}'}}\n"
        for i in range(15)
    )
    bad = write("bad.yaml", f"version: 1\ncampaign: bad\nfleets:\n{fleets}")
    res = ci("validate", "--manifests", f"{bad} {manifest(write, 'a')}")
    assert res.exit_code == 1 and "Traceback" not in res.output
    errors = [ln for ln in res.stdout.splitlines() if ln.startswith("::error")]
    assert len(errors) == 10 and all("line=" in e for e in errors[:9])
    assert errors[9].endswith(
        "6 more problem(s) not annotated (GitHub shows 10 a step): every problem is in this step's log"
    )
    assert res.stderr.count("undefined variable") == 15  # all of them in the log
    assert "`" + str(bad) + "`: 15 problem(s)" in (tmp_path / "summary.md").read_text()
    assert outputs(tmp_path / "out.txt") == {"has-changes": "false"}
    assert gha.log == []


def test_plan_posts_one_comment_per_campaign_edited_per_push(
    gha: FakeGitHub, write: Write, tmp_path: Path
) -> None:
    first, second = manifest(write, "a, b"), manifest(write, "x", name="other")
    res = ci("plan", "--manifests", str(tmp_path / "*.yaml"), "--comment")
    assert res.exit_code == 0, res.output
    out = outputs(tmp_path / "out.txt")
    digests = {
        c: build_plan(load_manifest(p)).digest for c, p in (("ci-camp", first), ("other", second))
    }
    assert out["has-changes"] == "true"
    assert out["plan-digest"] == f"ci-camp {digests['ci-camp']}\nother {digests['other']}"
    bot = [c for c in gha.comments[PR] if c["user"]["login"] == "github-actions[bot]"]
    assert out["comment-url"] == "\n".join(str(c["html_url"]) for c in bot) and len(bot) == 2
    assert digest_in(str(bot[0]["body"])) == digests["ci-camp"]
    assert "offline plan" in str(bot[0]["body"])  # no DEVIN_API_KEY: said at the top
    artifact = json.loads((tmp_path / "artifact" / "ci-camp.plan.json").read_text())
    assert artifact["digest"] == digests["ci-camp"]
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.count("### devin-fleet plan:") == 2 and len(summary.encode()) < SUMMARY_LIMIT
    manifest(write, "a, b, c")  # the next push
    assert ci("plan", "--manifests", str(first), "--comment").exit_code == 0
    bot = [c for c in gha.comments[PR] if c["user"]["login"] == "github-actions[bot]"]
    assert len(bot) == 2 and "**+** 3" in str(bot[0]["body"])
    assert len(gha.comments[PR]) == 3 + 2


@pytest.fixture
def sim_env(make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch) -> SimServer:
    sim = make_sim("clean")
    point_cli_at(sim, monkeypatch)
    return sim


def test_apply_on_the_merged_commit_applies_exactly_the_reviewed_plan(
    gha: FakeGitHub, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sim_env: SimServer
) -> None:
    path = manifest(write, "a, b, c")
    assert ci("plan", "--manifests", str(path), "--comment").exit_code == 0  # on the PR
    seen = sim_env.stats()["requests"]  # the plan was checked against the API (it only reads)
    assert "POST /sessions" not in seen
    # merged: a push to main, whose commit belongs to the pull request
    monkeypatch.delenv("GITHUB_EVENT_PATH")
    monkeypatch.setenv("GITHUB_SHA", SHA)
    gha.commit_prs[SHA] = [PR]
    manifest(write, "a, b, c, d")  # ... but main moved on after the review
    res = ci("apply", "--manifests", str(path), "--ledger", str(tmp_path / "l.db"))
    assert res.exit_code == 1 and "the plan changed since it was reviewed" in res.stderr
    assert "the reviewed plan's sha256:" in res.stderr and sim_env.stats()["requests"] == seen
    manifest(write, "a, b, c")
    res = ci("apply", "--manifests", str(path), "--ledger", str(tmp_path / "l.db"))
    assert res.exit_code == 0, res.output
    planned = build_plan(load_manifest(path))
    assert sorted(s["tags"][1] for s in sim_env.sessions()) == sorted(
        s.tags[1] for s in planned.sessions
    )
    assert outputs(tmp_path / "out.txt")["plan-digest"] == planned.digest
    res = ci("results", "--manifests", str(path), "--ledger", str(tmp_path / "l.db"), "--comment")
    assert res.exit_code == 0, res.output
    (posted,) = [c for c in gha.comments[PR] if "id=results-ci-camp" in str(c["body"])]
    assert "### Campaign `ci-camp`" in str(posted["body"])


@pytest.mark.usefixtures("gha")
def test_apply_without_a_reviewed_plan_sends_nothing(write: Write, sim_env: SimServer) -> None:
    res = ci("apply", "--manifests", str(manifest(write, "a")))
    assert res.exit_code == 1 and "no reviewed plan of campaign 'ci-camp'" in res.stderr
    assert sim_env.stats()["requests"] == {}
    res = ci("apply", "--manifests", str(manifest(write, "a")) + " " + str(manifest(write, "b", "z")))
    assert res.exit_code == 1 and "apply takes one manifest a step" in res.stderr


def test_outputs_are_multiline_safe_and_annotations_capped() -> None:
    value = "line one\nEOF\nother-output<<EOF\nx"
    block = output_block("plan-digest", value)
    name, delim = block.splitlines()[0].split("<<")
    assert (
        name == "plan-digest"
        and delim not in value
        and re.fullmatch(r"ghadelimiter_[0-9a-f]{32}", delim)
    )
    assert block == f"plan-digest<<{delim}\n{value}\n{delim}\n"
    lines = [f"::error file=m.yaml,line={i}::p{i}" for i in range(12)] + ["::warning::w"]
    capped = cap_annotations(lines)
    assert [ln for ln in capped if ln.startswith("::error")][:9] == lines[:9]
    assert len([ln for ln in capped if ln.startswith("::error")]) == 10 and "::warning::w" in capped
    assert cap_annotations(lines[:10]) == lines[:10]


@pytest.mark.usefixtures("gha")
def test_validate_ok_annotates_warnings_and_writes_the_summary(write: Write, tmp_path: Path) -> None:
    path = write(
        "s.yaml",
        """
        version: 1
        campaign: sec
        fleets:
          - name: f
            for_each: {items: [a]}
            session:
              prompt: "x"
              session_secrets: [{key: K, value: {env: UNSET_FOR_THIS_TEST}}]
        """,
    )
    res = ci("validate", "--manifests", path)
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"::warning file={path}::environment variable(s) for session secrets")
    assert f"- `{path}`: 1 sessions" in (tmp_path / "summary.md").read_text()
    assert outputs(tmp_path / "out.txt") == {"has-changes": "false"}


def test_a_forks_plan_is_offline_and_lands_in_the_summary_once(
    gha: FakeGitHub, write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gha.tokens["ghs_fork"] = Token("github-actions[bot]", installation=True, read_only=True)
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_fork")  # no DEVIN_API_KEY either: a fork's PR
    res = ci("plan", "--manifests", manifest(write, "a, b"), "--comment")
    assert res.exit_code == 0, res.output
    assert "::warning title=devin-fleet pr-comment::" in res.stdout
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert summary.count("### devin-fleet plan: `ci-camp`") == 1 and "offline plan" in summary
    out = outputs(tmp_path / "out.txt")
    assert out["comment-url"] == "" and out["has-changes"] == "true"
    assert [c["user"]["login"] for c in gha.comments[PR]] == ["alice"] * 3
    assert "--strict" not in res.output
    res = ci("plan", "--manifests", manifest(write, "a, b"), "--comment", "--strict")
    assert res.exit_code == 1 and "Resource not accessible by integration" in res.stderr


@pytest.mark.usefixtures("gha")
def test_apply_args_are_apply_options_and_a_bad_one_is_a_usage_error(
    write: Write, sim_env: SimServer
) -> None:
    path = manifest(write, "a")
    digest = build_plan(load_manifest(path)).digest
    res = ci("apply", "--manifests", path, "--plan-digest", digest, "--args", "--rate fast")
    assert res.exit_code == 64 and "'fast' is not a valid float" in res.output
    assert sim_env.stats()["requests"] == {}
