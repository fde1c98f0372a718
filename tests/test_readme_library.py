"""The library example (docs/library.md) runs as written, against the simulator (a drift test:
the library API it shows is the one `__all__` exports)."""

from __future__ import annotations

import os
import re
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import launcher
from launcher.sim import SimServer
from tests.helpers import point_cli_at

ROOT = Path(__file__).resolve().parent.parent


def test_the_library_example_runs_against_the_simulator(
    make_sim: Callable[..., SimServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = (ROOT / "docs" / "library.md").read_text()
    match = re.search(r"# Library API.*?```python\n(.*?)```", doc, re.S)
    assert match is not None
    sim = make_sim("clean", time_scale=2000)
    for folder in ("manifests", "schemas"):  # the ledger lands beside the copied manifest
        shutil.copytree(ROOT / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    point_cli_at(sim, monkeypatch)
    source = "async def example():\n" + textwrap.indent(match.group(1), "    ")
    source += "    return summary, rolled, results, html\n"
    names: dict[str, Any] = {n: getattr(launcher, n) for n in launcher.__all__}
    exec(compile(source, "docs/library.md", "exec"), {**names, "os": os}, names)
    summary, rolled, results, html = anyio.run(names["example"])
    assert summary.exit_code == 0 and summary.count(launcher.Result.created) == 20
    assert len(sim.sessions()) == 20  # the rollout after it created nothing more
    assert rolled.view is not None and rolled.view.settled
    assert len(results.rows) == 20 and html.lstrip().lower().startswith("<!doctype html>")
