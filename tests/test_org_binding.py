"""A ledger belongs to the API base URL and org it launched into: another org or host is
refused (both directions, every command that talks to the API), never silently reused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from launcher.cli import cli
from launcher.sim import SimServer
from tests.helpers import point_cli_at

MANIFEST = """
    version: 1
    campaign: bound
    fleets:
      - name: f
        for_each: {items: [a, b]}
        session: {prompt: "do {{ item }}"}
"""


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def target(monkeypatch: pytest.MonkeyPatch) -> Callable[[SimServer], None]:
    def _target(sim: SimServer) -> None:
        point_cli_at(sim, monkeypatch)

    return _target


def test_a_ledger_is_refused_against_another_org_in_both_directions(
    make_sim: Any, write: Any, target: Callable[[SimServer], None]
) -> None:
    m = write("m.yaml", MANIFEST)
    rehearsal, real = make_sim("clean", org_id="org-rehearsal"), make_sim("clean", org_id="org-real")
    target(rehearsal)
    assert run("apply", m, "--yes").exit_code == 0
    assert len(rehearsal.sessions()) == 2
    target(real)
    for args in (("apply", m, "--yes"), ("status", m), ("cancel", m, "--yes")):
        r = run(*args)
        assert r.exit_code == 1, (args, r.output)
        assert "org org-rehearsal at" in r.output and "org org-real at" in r.output
        assert "--ledger" in r.output and "Traceback" not in r.output
    assert real.sessions() == []  # nothing sent into the other org
    # The way out: this org's own ledger; then the first ledger is refused the other way round.
    own = m.parent / ".devin-fleet" / "bound.org-real.db"
    assert run("apply", m, "--yes", "--ledger", own).exit_code == 0
    assert len(real.sessions()) == 2
    target(rehearsal)
    r = run("status", m, "--ledger", own)
    assert r.exit_code == 1 and "org org-real at" in r.output
    assert run("status", m).exit_code in (0, 4)  # its own org: fine


def test_the_same_org_at_another_base_url_is_refused(
    make_sim: Any, write: Any, target: Callable[[SimServer], None]
) -> None:
    m = write("m.yaml", MANIFEST)
    first = make_sim("clean", org_id="org-same")
    second = make_sim("clean", org_id="org-same")
    target(first)
    assert run("apply", m, "--yes").exit_code == 0
    target(second)
    r = run("apply", m, "--yes")
    assert r.exit_code == 1 and first.base_url in r.output and second.base_url in r.output
    assert second.sessions() == []


def test_sim_keeps_its_temporary_ledger(make_sim: Any, write: Any, target: Any) -> None:
    m = write("m.yaml", MANIFEST)
    target(make_sim("clean", org_id="org-real"))
    assert run("apply", m, "--yes").exit_code == 0
    assert run("apply", m, "--sim", "--yes").exit_code == 0  # its own ledger: no conflict
