"""The test suite's own rules: shared helpers have one home (tests/helpers.py, fakes such as
tests/fake_github.py, fixtures in conftest.py), no test module borrows from another, bench/ does
not import tests/, and time limits per test."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("test_*.py")), ids=lambda p: p.name)
def test_test_modules_share_helpers_only_through_helpers_and_conftest(path: Path) -> None:
    borrowed = {m for m in imports_of(path) if m.startswith(("tests.test_", "tests.conftest"))}
    assert not borrowed, f"{path.name} imports {borrowed}: move what it needs to tests/helpers.py"


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: p.name)
def test_bench_does_not_import_tests(path: Path) -> None:
    assert not {m for m in imports_of(path) if m == "tests" or m.startswith("tests.")}, path.name


@pytest.mark.slow
def test_a_slow_test_gets_the_longer_time_limit(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (120,)  # as pyproject.toml and docs/ci.md say


def test_every_other_test_has_the_30_second_limit(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("timeout") is None
    assert request.config.getini("timeout") == "30"
