"""`pr-comment` against a fake GitHub comments API on loopback: one comment per identity edited
in place among people's comments on several pages, never someone else's, never over the limit,
and a read-only token (a fork's pull request) degrading to the step summary."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from launcher.api.github import GitHubClient, GitHubConfig, marker
from launcher.cli import cli
from launcher.errors import GitHubError
from tests.fake_github import LIMIT, FakeGitHub, Token, running_fake_github

BOT_TOKEN = "ghp_bot_token_never_shown"
PR = 7


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGitHub]:
    with running_fake_github() as fake:
        fake.tokens = {
            BOT_TOKEN: Token("fleet-bot"),
            "ghs_installation": Token("github-actions[bot]", installation=True),
            "ghs_fork": Token("github-actions[bot]", installation=True, read_only=True),
        }
        fake.page_size = 20  # 45 comments by people: three pages, the tool's on the last
        for i in range(45):
            fake.add(PR, ("alice", "bob", "carol")[i % 3], f"review note {i}")
        monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
        monkeypatch.setenv("GITHUB_REPOSITORY", fake.repo)
        monkeypatch.setenv("GITHUB_TOKEN", BOT_TOKEN)
        yield fake


def run(*args: str | Path, stdin: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["pr-comment", *map(str, args)], input=stdin)


def tool_comments(fake: FakeGitHub, login: str = "fleet-bot") -> list[dict[str, object]]:
    return [c for c in fake.comments[PR] if c["user"]["login"] == login]  # type: ignore[index]


def test_two_runs_leave_exactly_one_tool_comment_among_45_by_people(
    github: FakeGitHub, tmp_path: Path
) -> None:
    people = [dict(c) for c in github.comments[PR]]
    first = tmp_path / "plan.md"
    first.write_text("### plan\n\n+ 3 to create\n", encoding="utf-8")
    res = run(first, "--pr", PR)
    assert res.exit_code == 0, res.output
    (mine,) = tool_comments(github)
    assert res.stdout.strip() == mine["html_url"]
    res = run("-", "--pr", PR, stdin="### plan\n\n= 3 launched\n")  # the next push: stdin
    assert res.exit_code == 0, res.output
    (again,) = tool_comments(github)
    assert again["id"] == mine["id"] and "= 3 launched" in str(again["body"])
    assert str(again["body"]).startswith(marker("devin-fleet") + "\n")
    assert [c for c in github.comments[PR] if c["user"]["login"] != "fleet-bot"] == people  # type: ignore[index]
    # every page was read on both runs (the tool's comment is on the third), one write each
    pages = [path for m, path, _ in github.log if m == "GET" and path.endswith("/comments")]
    assert len(pages) == 3 + 3
    assert [m for m, _, _ in github.writes()] == ["POST", "PATCH"]
    assert BOT_TOKEN not in res.output


def test_ids_keep_separate_comments_and_a_persons_copy_of_the_marker_is_left_alone(
    github: FakeGitHub,
) -> None:
    quoted = github.add(PR, "alice", marker("plan-a") + "\nI copied the bot's comment")
    for ident, text in (("plan-a", "A1"), ("plan-b", "B1"), ("plan-a", "A2")):
        res = run("-", "--pr", PR, "--id", ident, stdin=text)
        assert res.exit_code == 0, res.output
    bodies = sorted(str(c["body"]).split("\n", 1)[1] for c in tool_comments(github))
    assert bodies == ["A2", "B1"]
    assert quoted["body"] == marker("plan-a") + "\nI copied the bot's comment"
    assert not [e for e in github.log if e[2] == 403]  # never even tried to edit alice's


def test_a_workflow_token_is_github_actions_bot(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GITHUB_TOKEN may not read GET /user (403): its comments are github-actions[bot]'s."""
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_installation")
    github.add(PR, "alice", marker("devin-fleet") + "\nnot the bot")
    for text in ("one", "two"):
        assert run("-", "--pr", PR, stdin=text).exit_code == 0
    (c,) = tool_comments(github, "github-actions[bot]")
    assert str(c["body"]).endswith("\ntwo")


def test_a_body_over_the_limit_is_cut_to_fit_and_accepted(github: FakeGitHub, tmp_path: Path) -> None:
    lines = ["### huge", "", "<details><summary>all</summary>", "", "```text"]
    lines += [f"line {i} ünïcödé 🚀 " + "x" * 40 for i in range(5000)]  # ~330k characters
    lines += ["```", "</details>", "", "the end"]
    path = tmp_path / "huge.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    res = run(path, "--pr", PR)
    assert res.exit_code == 0, res.output
    (c,) = tool_comments(github)
    body = str(c["body"])
    assert len(body.encode("utf-16-le")) // 2 <= LIMIT  # as GitHub may count: emoji twice
    assert body.count("```") == 2 and body.count("<details>") == body.count("</details>") == 1
    assert "more lines not shown" in body and "the end" not in body
    assert all(line in lines or line.startswith("**…") for line in body.splitlines()[1:] if line)


def test_the_client_never_sends_an_oversized_body_and_reports_a_422(github: FakeGitHub) -> None:
    cfg = GitHubConfig(github.base_url, github.repo, BOT_TOKEN)
    with GitHubClient(cfg) as gh:
        with pytest.raises(GitHubError, match="65,536"):
            gh.upsert(PR, "x", "é" * LIMIT)
        assert github.writes() == []
        with pytest.raises(GitHubError) as info:  # straight to the API: GitHub's own answer
            gh.create(PR, "y" * (LIMIT + 1))
    assert info.value.status == 422 and "body is too long" in info.value.message
    assert BOT_TOKEN not in info.value.render()


def test_editing_someone_elses_comment_is_refused_by_github(github: FakeGitHub) -> None:
    cfg = GitHubConfig(github.base_url, github.repo, BOT_TOKEN)
    first = github.comments[PR][0]
    with GitHubClient(cfg) as gh, pytest.raises(GitHubError) as info:
        gh.update(int(first["id"]), "hijacked")  # type: ignore[call-overload]
    assert info.value.status == 403 and first["body"] == "review note 0"


def fork_event(tmp_path: Path) -> Path:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"action": "synchronize", "pull_request": {"number": PR}}))
    return event


def test_a_read_only_token_on_a_fork_degrades_to_the_step_summary(
    github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_fork")
    monkeypatch.setenv("GITHUB_EVENT_PATH", str(fork_event(tmp_path)))  # --pr from the event
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    res = run("-", stdin="### the plan\n")
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("::warning title=devin-fleet pr-comment::")
    assert "Resource not accessible by integration" in res.stdout
    assert summary.read_text(encoding="utf-8") == "### the plan\n"
    assert tool_comments(github, "github-actions[bot]") == []
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")  # run by hand: the text is printed, not lost
    res = run("-", stdin="### the plan\n")
    assert res.exit_code == 0 and res.stdout.endswith("### the plan\n")
    res = run("-", "--strict", stdin="### the plan\n")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "Resource not accessible by integration" in res.stderr and "hint:" in res.stderr


def test_clear_errors_without_a_pull_request_or_a_token(
    github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    res = run("-", stdin="x")
    assert res.exit_code == 1 and "which pull request?" in res.stderr and "--pr" in res.stderr
    monkeypatch.delenv("GITHUB_TOKEN")
    res = run("-", "--pr", PR, stdin="x")
    assert res.exit_code == 1 and "GITHUB_TOKEN is not set" in res.stderr
    assert github.log == []


def test_pages_are_followed_on_the_same_host_only() -> None:
    """A Link header pointing elsewhere is not followed (the token would go with it)."""

    def handler(_: httpx.Request) -> httpx.Response:
        link = '<https://evil.example/next?page=2>; rel="next"'
        return httpx.Response(200, json=[], headers={"Link": link})

    cfg = GitHubConfig("https://api.github.com", "acme/x", "t")
    with (
        GitHubClient(cfg, transport=httpx.MockTransport(handler)) as gh,
        pytest.raises(GitHubError, match="another host"),
    ):
        gh.comments(1)


def test_duplicates_a_race_left_are_folded_into_one(github: FakeGitHub) -> None:
    """Two plan jobs that both found no comment both created one: the next run keeps one."""
    for text in ("race 1", "race 2"):
        github.add(PR, "fleet-bot", marker("devin-fleet") + "\n" + text)
    github.add(PR, "fleet-bot", "a comment of the same user without the marker")
    res = run("-", "--pr", PR, stdin="settled")
    assert res.exit_code == 0, res.output
    mine = [str(c["body"]) for c in tool_comments(github)]
    assert mine == [marker("devin-fleet") + "\nsettled", "a comment of the same user without the marker"]
    assert "deleted 1 duplicate(s)" in res.stderr
