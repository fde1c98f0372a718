"""`plan -o markdown`: the summary first, sessions grouped by change with changed fields named,
prompts folded; deterministic bytes; 300 sessions whole, 10,000 cut to fit and saying so."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher import build_plan, load_manifest
from launcher.cli import cli
from launcher.spec.plan import Plan
from launcher.views.markdown import (
    COMMENT_LIMIT,
    DEFAULT_BUDGET,
    SUMMARY_LIMIT,
    Unit,
    digest_in,
    fit_markdown,
    plan_view,
    render_plan_markdown,
    size,
)


def matrix_manifest(path: Path, a: int, b: int) -> Path:
    """a x b sessions; titles and prompts with multibyte text, a `|` and a code fence."""
    path.write_text(
        f"""
version: 1
campaign: md
defaults: {{max_acu_limit: 2}}
budget: {{max_total_acu: {2 * a * b}}}
fleets:
  - name: grid
    for_each:
      matrix: {{svc: {list(range(a))}, env: {[f"é{i}" for i in range(b)]}}}
    key: "s{{{{ item.svc }}}}-{{{{ item.env }}}}"
    session:
      title: "Fix s{{{{ item.svc }}}} in {{{{ item.env }}}} | 🚀 @team"
      prompt: "Fix s{{{{ item.svc }}}}.\\n```sh\\nmake test\\n```\\nThen open a PR."
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Plan:
    """10,000 sessions, planned once for the module."""
    return build_plan(
        load_manifest(matrix_manifest(tmp_path_factory.mktemp("big") / "m.yaml", 100, 100))
    )


def creates(p: Plan) -> list[tuple[str, str, str]]:
    return [("+", s.key, "") for s in p.sessions]


def balanced(text: str) -> None:
    """Every <details> closed, every code fence closed, whole lines."""
    assert text.endswith("\n")
    assert text.count("<details>") == text.count("</details>")
    fence: str | None = None
    for line in text.splitlines():
        m = re.match(r"^(`{3,})", line)
        if m and fence is None:
            fence = m.group(1)
        elif m and fence is not None and m.group(1) == fence:
            fence = None
    assert fence is None


def test_300_sessions_whole_summary_first_deterministic(tmp_path: Path) -> None:
    path = matrix_manifest(tmp_path / "m.yaml", 30, 10)
    res = CliRunner().invoke(cli, ["plan", str(path), "-o", "markdown"])
    assert res.exit_code == 0, res.output
    text = res.stdout
    again = CliRunner().invoke(cli, ["plan", str(path), "-o", "markdown"]).stdout_bytes
    assert again == res.stdout_bytes  # the same plan, the same bytes
    p = build_plan(load_manifest(path))
    head = text.split("#### ", 1)[0]  # the summary comes before any group
    assert "**+** 300 · **=** 0 · **~** 0 · **-** 0 · **?** 0" in head
    assert "| 300 | 600 of a 600 budget | 1 |" in head and p.digest in head
    assert digest_in(text) == p.digest  # the hidden line an apply-on-merge job reads back
    assert "offline plan" in head
    assert "#### + 300 to create" in text
    assert len(re.findall(r"^\| `s\d+-é\d+` \|", text, re.M)) == 300
    assert text.count("<details><summary>+ <code>") == 300  # every prompt, folded
    assert "\\| 🚀 &#64;team" in text  # a `|` does not split the row; no @mention
    assert "Not shown" not in text and size(text) <= DEFAULT_BUDGET
    balanced(text)


def test_groups_by_change_name_changed_fields_and_fold_unchanged(tmp_path: Path) -> None:
    p = build_plan(load_manifest(matrix_manifest(tmp_path / "m.yaml", 2, 3)))
    keys = [s.key for s in p.sessions]
    changes = [("=", keys[0], "devin-1"), ("~", keys[1], "devin-2"), ("+", keys[2], "")]
    changes += [("?", keys[3], "outcome unknown"), ("+", keys[4], ""), ("+", keys[5], "")]
    changes += [("-", "s9-old", "devin-9")]
    view = plan_view(p, changes, changed_fields={keys[1]: ["prompt", "title"]})
    text = render_plan_markdown(view)
    assert "**+** 3 · **=** 1 · **~** 1 · **-** 1 · **?** 1" in text
    order = [text.index(h) for h in ("#### ~ 1", "#### + 3", "#### - 1", "#### ? 1", "= 1 launched")]
    assert order == sorted(order)  # what changes first, what stays folded last
    assert re.search(rf"^\| `{keys[1]}` \|.*\| prompt, title \|$", text, re.M)
    assert re.search(r"^\| `s9-old` \|.*\| devin-9 \|$", text, re.M)
    assert text.count("<details><summary>") == 1 + 4  # the unchanged list; 4 prompts (+ and ~)
    balanced(text)


@pytest.mark.parametrize("budget", [3_000, 20_000, DEFAULT_BUDGET])
def test_10000_sessions_never_exceed_the_budget_and_say_what_is_left_out(big: Plan, budget: int) -> None:
    text = render_plan_markdown(plan_view(big, creates(big)), budget=budget)
    assert size(text) <= budget <= COMMENT_LIMIT
    assert text.startswith("### devin-fleet plan: `md`") and big.digest in text
    assert "**+** 10,000" in text and "#### + 10,000 to create" in text
    shown = len(re.findall(r"^\| `s\d+-é\d+` \|", text, re.M))
    assert 0 < shown < 10_000 if budget > 3_000 else shown < 10_000
    assert f"*… and {10_000 - shown:,} more: not shown here.*" in text
    note = text.rstrip("\n").rsplit("\n", 1)[-1]
    assert note.startswith(
        f"**Not shown** (to stay under {budget:,} characters): {10_000 - shown:,} to create (+)"
    )
    assert "prompts" in note and "devin-fleet plan MANIFEST --show-prompts" in note
    balanced(text)


def test_10000_sessions_in_a_step_summary_fit_its_mebibyte(big: Plan) -> None:
    text = render_plan_markdown(plan_view(big, creates(big)), budget=SUMMARY_LIMIT, unit="bytes")
    assert size(text, "bytes") <= SUMMARY_LIMIT
    assert len(re.findall(r"^\| `s\d+-é\d+` \|", text, re.M)) == 10_000  # every row fits in 1 MiB
    assert "**Not shown**" in text  # not every prompt
    balanced(text)


def test_fit_markdown_cuts_at_lines_closes_what_is_open_and_counts_emoji_twice() -> None:
    text = "# t\n<details><summary>x</summary>\n\n````text\n" + "🚀🚀🚀🚀\n" * 100 + "````\n</details>\n"
    assert size("🚀") == 2 and size("🚀", "bytes") == 4 and len("🚀") == 1
    cut = fit_markdown(text, 400)
    assert size(cut) <= 400
    assert cut.splitlines()[-4:-2] == ["````", "</details>"]
    assert "more lines not shown" in cut
    kept = cut.splitlines()[4:-4]
    assert kept and set(kept) == {"🚀🚀🚀🚀"}  # whole lines only
    assert fit_markdown(text, 10_000) == text


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    budget=st.integers(min_value=2_000, max_value=COMMENT_LIMIT),
    unit=st.sampled_from(["chars", "bytes"]),
)
def test_10000_sessions_fit_any_budget(big: Plan, budget: int, unit: Unit) -> None:
    text = render_plan_markdown(plan_view(big, creates(big)), budget=budget, unit=unit)
    assert size(text, unit) <= budget
    assert text.startswith("### devin-fleet plan: `md`")
    balanced(text)


def test_rollout_waves_in_the_summary_and_the_table(write: Callable[[str, str], Path]) -> None:
    path = write(
        "w.yaml",
        """
        version: 1
        campaign: waves
        rollout: {waves: [1, "50%", "rest"]}
        fleets:
          - name: f
            for_each: {items: [a, b, c, d]}
            session: {prompt: "do {{ item }}"}
        """,
    )
    res = CliRunner().invoke(cli, ["plan", str(path), "-o", "markdown"])
    assert res.exit_code == 0, res.output
    assert "| 4 | 0 (4 sessions without max_acu_limit) | 1 + 2 + 1 |" in res.stdout
    assert "| key | fleet | wave | title | ACU |" in res.stdout
    waves = re.findall(r"^\| `[a-d]` \| f \| (\d) \|", res.stdout, re.M)
    assert sorted(waves) == ["1", "2", "2", "3"]


def test_changed_sessions_show_their_fields_and_diff_against_the_ledger(
    launched: tuple[Path, Path],  # a conftest fixture: three launched sessions
) -> None:
    path, ledger = launched  # three sessions launched through the simulator
    text = path.read_text().replace("Open a pull request.", "Open a draft pull request.")
    path.write_text(text.replace("{repo: r-1, acu: 3}", "{repo: r-1, acu: 5}").replace("r-2", "r-9"))
    res = CliRunner().invoke(cli, ["plan", str(path), "--ledger", str(ledger), "-o", "markdown"])
    assert res.exit_code == 0, res.output
    md = res.stdout
    assert "**+** 1 · **=** 0 · **~** 2 · **-** 1 · **?** 0" in md
    assert re.search(r"^\| `r-1` \| f \|  \| 5 \| prompt, max_acu_limit \|$", md, re.M)
    assert re.search(r"^\| `r-2` \| .*devin-", md, re.M)  # gone, with its session
    assert "<details><summary>~ <code>r-1</code> (changed since launch)</summary>" in md
    assert "\n-Open a pull request.\n+Open a draft pull request.\n" in md
    assert "r-1: max_acu_limit: 3 -> 5" in md
    assert "ghp_supersecretvalue" not in md
    balanced(md)
