"""What a person sees (the UX pass): tables on a terminal fit its width with every key whole,
`status` on a terminal fits the screen (`--all`: every row), piped text tables keep one session
a line, `plan -o json` shows the identity tags that are sent, `plan --only` counts what the
whole campaign spent, `ledger copy` from a missing file says so. Through the real CLI: a pty
for the terminal, CliRunner for pipes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from launcher.cli import cli
from launcher.sim.campaigns import mixed_campaign_ledger
from tests.helpers import point_cli_at, run_pty

KEY = re.compile(r"acme/svc-\d{4}\b")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    return mixed_campaign_ledger(tmp_path_factory.mktemp("fit") / "300", 300)


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_fit_widths_cuts_free_text_first_then_drops_then_never_cuts_keys() -> None:
    from launcher.views.results import fit_widths

    natural = {"key": 15, "outcome": 11, "reason": 24, "url": 62}
    assert fit_widths(natural, 200) == natural  # it fits: nothing is cut
    cut = fit_widths({"key": 15, "outcome": 11, "reason": 24, "notes": 40}, 80)
    assert cut["key"] == 15 and cut["outcome"] == 11  # what a row is stays whole
    assert cut["notes"] <= 24 and sum(cut.values()) + 3 * 4 - 3 <= 80  # the widest cut first
    dropped = fit_widths(natural, 80, drop=("url",))
    assert dropped == {"key": 15, "outcome": 11, "reason": 24}  # the rest whole again
    assert fit_widths({"key": 70, "reason": 30}, 40) == {"key": 70, "reason": 8}  # wraps, uncut


def test_status_on_a_terminal_fits_the_screen_with_every_key_whole(
    fleet: tuple[Path, Path, dict[str, str]],
) -> None:
    """At 300 sessions, 80 columns and 40 rows: what needs attention first, the rest counted
    below the table with the way to see them; the counts still on the screen."""
    path, ledger, truth = fleet
    lines = run_pty("status", path, "--ledger", ledger, "--offline", cols=80, rows=40).splitlines()
    assert len(lines) <= 40 and max(len(ln) for ln in lines) <= 80, "\n".join(lines)
    rows = [ln for ln in lines if ln.lstrip().startswith("acme/")]
    assert 10 <= len(rows) < 40
    assert all(KEY.match(r.split()[0]) and r.split()[0] in truth for r in rows)  # never cut
    assert all(r.split()[1] in ("failed", "needs-human", "running") for r in rows)
    assert any(ln.startswith("... ") and "more: failed" in ln for ln in lines)
    assert "every session: --all (or piped, a line each)" in lines
    assert lines[-1].startswith("failed: ")  # the counts, last
    every = run_pty("status", path, "--ledger", ledger, "--offline", "--all", cols=80)
    assert sum(1 for ln in every.splitlines() if ln.lstrip().startswith("acme/")) == 300
    piped = run("status", path, "--ledger", ledger, "--offline")  # machines: every session
    assert sum(1 for ln in piped.stdout.splitlines() if KEY.match(ln)) == 300


def test_results_keeps_keys_and_outcomes_whole_at_60_and_24_columns(
    fleet: tuple[Path, Path, dict[str, str]],
) -> None:
    path, ledger, truth = fleet
    screen = run_pty("results", path, "--ledger", ledger, "--offline", cols=60)
    rows = [ln.split() for ln in screen.splitlines() if ln.startswith("acme/")]
    assert len(rows) == 300 and max(len(ln) for ln in screen.splitlines()[:302]) <= 60
    assert all(r[0] in truth and r[1] == truth[r[0]] for r in rows)
    narrow = run_pty("results", path, "--ledger", ledger, "--offline", "--only", "acme/svc-00*", cols=24)
    rows = [ln.split() for ln in narrow.splitlines() if ln.startswith("acme/")]
    assert rows and all(r[0] in truth for r in rows)  # too narrow even so: the line wraps, uncut


def _long_titles(write: Callable[[str, str], Path], n: int = 5) -> Path:
    items = ", ".join(f"acme/service-number-{i:03d}" for i in range(n))
    return write(
        "long.yaml",
        f"""
        version: 1
        campaign: long
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session:
              title: "Upgrade {{{{ item }}}} to Python 3.12 and open a pull request for review"
              repos: ["{{{{ item }}}}"]
              prompt: "Upgrade {{{{ item }}}}"
        """,
    )


def test_plan_piped_is_one_line_a_session_and_fits_a_terminal_with_keys_whole(
    write: Callable[[str, str], Path],
) -> None:
    path = _long_titles(write)
    res = run("plan", path)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    rows = [ln for ln in lines if ln.startswith("+ ")]
    assert len(rows) == 5  # one line each, never wrapped (rich folded cells at 80 columns)
    assert all(r.split()[1] == f"acme/service-number-{i:03d}" for i, r in enumerate(rows))
    assert all("for review" in r for r in rows)  # nothing cut either
    assert "│" not in res.stdout and "┃" not in res.stdout  # no box drawing in a pipe
    screen = run_pty("plan", path, cols=80).splitlines()
    table = [ln for ln in screen if ln.lstrip().startswith(("+ ", "key"))]
    assert len(table) == 6 and max(len(ln) for ln in table) <= 80
    shown = [ln.split() for ln in table[1:]]
    assert [r[1] for r in shown] == [f"acme/service-number-{i:03d}" for i in range(5)]


def test_plan_json_tags_are_the_identity_tags_sent(write: Callable[[str, str], Path]) -> None:
    """With `identity: title` the key travels in the title: `tags` lists only the campaign tag
    (before, it also listed a `fleet-key:` tag that is never sent)."""
    for mode, want in (("title", ["fleet:t"]), ("tags", ["fleet:t", "fleet-key:"])):
        path = write(
            f"{mode}.yaml",
            f"""
            version: 1
            campaign: t
            identity: {mode}
            fleets:
              - name: f
                for_each: {{items: [a, b]}}
                session: {{prompt: "fix {{{{ item }}}}"}}
            """,
        )
        data = json.loads(run("plan", path, "-o", "json").stdout)
        for s in data["sessions"]:
            assert [t[: len(w)] for t, w in zip(s["tags"], want, strict=True)] == want
            assert set(s["tags"]) <= set(s["request"]["tags"])


def test_plan_only_counts_what_the_whole_campaign_spent(
    fleet: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    src, ledger, _ = fleet
    shutil.copy(src.parent / "svc.csv", tmp_path / "svc.csv")
    text = src.read_text().replace("fleets:", "defaults: {max_acu_limit: 3}\nfleets:", 1)
    (tmp_path / "c.yaml").write_text(text)
    whole = run("plan", tmp_path / "c.yaml", "--ledger", ledger).stdout
    some = run("plan", tmp_path / "c.yaml", "--ledger", ledger, "--only", "acme/svc-000*").stdout
    spent = [ln for ln in whole.splitlines() if ln.startswith("budget:")]
    assert spent and "ACU caps 900 launched" in spent[0]
    assert spent == [ln for ln in some.splitlines() if ln.startswith("budget:")]


def test_group_by_piped_is_aligned_text_never_cut(fleet: tuple[Path, Path, dict[str, str]]) -> None:
    """A two-way count in a pipe: a line per value, every heading and value whole (rich cut
    them to 80 columns: `succee…`, `(missin…`)."""
    path, ledger, truth = fleet
    res = run(
        "results", path, "--ledger", ledger, "--offline", "--group-by", "outcome", "--group-by", "reason"
    )
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "…" not in res.stdout and "┃" not in res.stdout
    assert lines[1].split()[0] == "outcome" and lines[1].split()[-1] == "total"
    assert {ln.split()[0] for ln in lines[2:]} == set(truth.values())
    assert sum(int(ln.split()[-1]) for ln in lines[2:]) == len(truth)


def test_ledger_copy_from_a_missing_file_says_so(tmp_path: Path) -> None:
    """Not "name the campaign to copy from a PostgreSQL ledger" (a usage error, exit 64)."""
    res = run("ledger", "copy", tmp_path / "nope.db", tmp_path / "copy.db")
    assert res.exit_code == 1, res.output
    assert f"error: no ledger at {tmp_path / 'nope.db'}" in res.stderr and "PostgreSQL" not in res.stderr
    assert not (tmp_path / "copy.db").exists()


def test_status_piped_starts_with_its_header_and_keeps_the_budget_below_the_rows(
    fleet: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """`status | tail -n +2` is the rows: the budget line (a campaign with a budget) no longer
    comes before the header in a pipe; on a terminal it stays above the table."""
    src, ledger, truth = fleet
    shutil.copy(src.parent / "svc.csv", tmp_path / "svc.csv")
    text = src.read_text().replace("fleets:", "budget: {max_sessions: 400}\nfleets:", 1)
    (tmp_path / "c.yaml").write_text(text)
    lines = run("status", tmp_path / "c.yaml", "--ledger", ledger, "--offline").stdout.splitlines()
    assert lines[0].split()[:3] == ["key", "outcome", "status"]
    assert all(KEY.match(ln) for ln in lines[1 : len(truth) + 1])
    assert lines[-2].startswith("budget: 300 session(s) launched") and lines[-1].startswith("failed: ")


def test_cells_are_text_never_markup(write: Callable[[str, str], Path]) -> None:
    """A cell that looks like rich markup shows as written: the `identity: title` suffix in
    the plan's title column (it vanished, read as a style), a rule note in `status`."""
    import io

    from rich.console import Console

    from launcher.cli.follow_cmds import _status_renderable
    from launcher.run.status import CampaignView, Outcome, SessionView

    path = write(
        "t.yaml",
        """
        version: 1
        campaign: t
        identity: title
        fleets:
          - name: f
            for_each: {items: [a]}
            session: {prompt: "fix {{ item }}"}
        """,
    )
    assert re.search(r"\ba \[fleet [0-9a-f]{16} fp [0-9a-f]{8}\]", run_pty("plan", path, cols=120))
    s = SessionView("k", "f", None, "devin-1", None, "exit", None, Outcome.failed, [], 1.0, None, None)
    s = dataclasses.replace(s, rule_note="output.verdict is [red]blocked[/red]")
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(_status_renderable(CampaignView("c", [s]), width=120))
    assert "output.verdict is [red]blocked[/red]" in console.export_text()


def test_apply_names_changed_keys_as_written_and_says_how_many_more(
    write: Callable[[str, str], Path], make_sim: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The summary's "changed since; not relaunched" line: keys are text (`[x]` was read as a
    style and vanished), and past five it says how many more (it stopped at five, silently)."""
    sim = make_sim()
    point_cli_at(sim, monkeypatch)
    items = ", ".join(f"'k[v{i}]'" for i in range(7))
    text = f"""
        version: 1
        campaign: keys
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session: {{prompt: "fix {{{{ item }}}} PROMPT"}}
        """
    path = write("k.yaml", text)
    ledger = path.parent / "k.db"
    assert run("apply", path, "--yes", "--ledger", ledger).exit_code == 0
    write("k.yaml", text.replace("PROMPT", "now"))
    res = run("apply", path, "--yes", "--ledger", ledger)
    assert res.exit_code == 0, res.output
    assert "(use --relaunch changed): k[v0], k[v1], k[v2], k[v3], k[v4] and 2 more" in res.stdout


def test_a_missing_token_points_the_read_commands_at_offline(
    fleet: tuple[Path, Path, dict[str, str]],
) -> None:
    """With a ledger and no token, `status`/`results`/`report` can still say what the ledger
    knows: the hint says so (only where the flag exists: not for `cancel`)."""
    path, ledger, _ = fleet
    for command in ("status", "results"):
        res = run(command, path, "--ledger", ledger)
        assert res.exit_code == 1 and "DEVIN_API_KEY is not set" in res.stderr
        assert "or pass --offline: what the ledger knows" in res.stderr
    res = run("cancel", path, "--ledger", ledger, "--yes")
    assert res.exit_code == 1 and "--offline" not in res.stderr
