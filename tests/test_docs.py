"""The README stays short and its way into docs/ works: a size limit, links (and their
#anchors) that resolve, every page reachable, and the shell completion it documents works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher.cli import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub writes it: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # no headings inside code
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def local_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in local_links(page):
        name, _, anchor = target.partition("#")
        dest = (page.parent / name).resolve() if name else page
        if not dest.is_file() or (anchor and dest.suffix == ".md" and anchor not in anchors(dest)):
            broken.append(target)
    return broken


def test_the_readme_stays_under_15000_characters() -> None:
    size = len(README.read_text(encoding="utf-8"))
    assert size <= 15_000, f"README.md is {size} characters: move detail to docs/"


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_every_local_link_resolves_to_a_file_and_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in local_links(README)}
    pages = {p.resolve() for p in DOCS.glob("*.md")}
    assert pages, "docs/ has no pages"
    assert pages <= linked, f"not linked from README.md: {sorted(p.name for p in pages - linked)}"


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    """The checker itself: a missing page and a missing heading are both reported."""
    (tmp_path / "a.md").write_text("# Title: one, two\n\n[ok](#title-one-two) [x](b.md#z) [y](#nope)\n")
    assert broken_links(tmp_path / "a.md") == ["b.md#z", "#nope"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_as_documented_prints_a_script(shell: str) -> None:
    documented = README.read_text() + (DOCS / "cli.md").read_text()
    assert f"_DEVIN_FLEET_COMPLETE={shell}_source devin-fleet" in documented
    res = CliRunner().invoke(
        cli, [], prog_name="devin-fleet", env={"_DEVIN_FLEET_COMPLETE": f"{shell}_source"}
    )
    assert res.exit_code == 0
    assert "_devin_fleet_completion" in res.output and "_DEVIN_FLEET_COMPLETE" in res.output


def test_completion_completes_a_command_name() -> None:
    env = {"_DEVIN_FLEET_COMPLETE": "bash_complete", "COMP_WORDS": "devin-fleet re", "COMP_CWORD": "1"}
    res = CliRunner().invoke(cli, [], prog_name="devin-fleet", env=env)
    assert res.exit_code == 0
    assert sorted(res.output.split()) == ["plain,report", "plain,results"]
