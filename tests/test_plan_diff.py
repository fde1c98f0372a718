"""`plan` names what changed since launch: the changed field paths of each `~` session
(table and `-o json`), and `plan --diff` shows a unified diff of the prompt and old -> new
values of the other fields. The ledger keeps the launched request, never a secret value."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import (
    open_ledger,
)
from launcher.spec.diff import changed_fields, field_diff
from tests.helpers import run

Write = Callable[[str, str], Path]


def test_a_prompt_edit_and_an_acu_change_are_named_and_diffed(launched: tuple[Path, Path]) -> None:
    path, ledger = launched
    text = path.read_text()
    text = text.replace("Open a pull request.", "Open a draft pull request.")
    text = text.replace("{repo: r-1, acu: 3}", "{repo: r-1, acu: 5}")
    path.write_text(text)

    res = run("plan", path, "--ledger", ledger, "-o", "json")
    assert res.exit_code == 0, res.output
    changes = {s["key"]: (s["change"], s["changed_fields"]) for s in json.loads(res.stdout)["sessions"]}
    assert changes == {
        "r-0": ("~", ["prompt"]),
        "r-1": ("~", ["prompt", "max_acu_limit"]),
        "r-2": ("~", ["prompt"]),
    }

    res = run("plan", path, "--ledger", ledger)
    assert "changed: prompt, max_acu_limit" in res.stdout and "changed: prompt" in res.stdout
    # how to relaunch them is said once, below the rows, not on each of them
    assert res.stdout.count("--relaunch changed") == 1
    assert "3 launched session(s) changed since launch" in res.stdout

    res = run("plan", path, "--ledger", ledger, "--diff")
    assert res.exit_code == 0
    assert "--- r-1: prompt (launched)" in res.stdout and "+++ r-1: prompt (manifest)" in res.stdout
    assert "-Open a pull request." in res.stdout and "+Open a draft pull request." in res.stdout
    assert "r-1: max_acu_limit: 3 -> 5" in res.stdout
    assert "r-0: max_acu_limit" not in res.stdout
    assert "structured_output_schema" not in res.stdout  # unchanged: kept by digest, same digest


def test_a_session_launched_before_requests_were_kept_has_no_field_diff(
    launched: tuple[Path, Path],
) -> None:
    path, ledger = launched
    with open_ledger(path, "d", ledger) as led:  # as a ledger from before v3 kept requests
        rows = led.export_rows()
    ledger.unlink()
    with open_ledger(path, "d", ledger) as led:
        led.import_rows({**rows, "launched_requests": []})
    path.write_text(path.read_text().replace("Open a pull request.", "Open a PR."))
    res = run("plan", path, "--ledger", ledger, "--diff", "-o", "json")
    assert {s["change"] for s in json.loads(res.stdout)["sessions"]} == {"~"}
    assert all(s["changed_fields"] is None for s in json.loads(res.stdout)["sessions"])  # unknown
    res = run("plan", path, "--ledger", ledger, "--diff")
    assert res.exit_code == 0 and "launched before the ledger kept requests" in res.stdout


def test_a_secret_source_change_shows_the_variable_never_the_value(
    launched: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ledger = launched
    path.write_text(path.read_text().replace("env: GH_TOKEN", "env: GH_TOKEN_2"))
    monkeypatch.setenv("GH_TOKEN_2", "ghp_othersecret")
    res = run("plan", path, "--ledger", ledger, "--diff", "-o", "table")
    assert res.exit_code == 0, res.output
    assert "session_secrets" in res.stdout and "env:GH_TOKEN_2" in res.stdout
    assert "supersecret" not in res.output and "othersecret" not in res.output
    ledger_bytes = b"".join(p.read_bytes() for p in ledger.parent.glob("l.db*"))
    assert b"supersecret" not in ledger_bytes


def test_unchanged_sessions_have_no_changed_fields(launched: tuple[Path, Path]) -> None:
    path, ledger = launched
    res = run("plan", path, "--ledger", ledger, "-o", "json")
    assert {s["change"] for s in json.loads(res.stdout)["sessions"]} == {"="}
    assert all(s["changed_fields"] == [] for s in json.loads(res.stdout)["sessions"])


def test_field_diff_shapes() -> None:
    old = {"prompt": "a\nb\n", "tags": ["x"], "title": "t"}
    new = {"prompt": "a\nc\n", "tags": ["x"], "devin_mode": "fast"}
    assert changed_fields(old, new) == ["prompt", "devin_mode", "title"]
    text = field_diff("k", old, new)
    assert "-b" in text and "+c" in text
    assert 'k: devin_mode: (absent) -> "fast"' in text and 'k: title: "t" -> (absent)' in text
