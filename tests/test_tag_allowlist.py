"""Orgs that restrict session tags, and the preflight that checks what it can: a create refused
for a tag stops the run at once; `plan --check-remote` lists every tag that is not allowed (or
notes that it cannot read the list), checks the user to create as, and notes what it cannot
check; `identity: title` launches exactly once with only the campaign tag."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from launcher.cli import cli
from launcher.sim import Profile, SimServer, load_profile
from launcher.spec.identity import markers

NO_ADMIN = "cog_no_enterprise_settings"


def allow_list(*tags: str, **changes: Any) -> Profile:
    data = load_profile("clean").model_dump()
    token = ["ManageOrgSessions", "ViewOrgSessions", "ReadAccountMeta", "ViewOrgMembership"]
    data.update(allowed_tags=list(tags), tokens=[{"token": NO_ADMIN, "permissions": token}])
    data.update(changes)
    return Profile.model_validate(data)


def manifest(write: Any, n: int, *, identity: str = "tags", session: str = "") -> Path:
    items = ", ".join(f"r{i:02d}" for i in range(n))
    return write(
        "t.yaml",
        f"""
        version: 1
        campaign: tagged
        identity: {identity}
        defaults:
          tags: [team-a]
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session:
              prompt: "fix {{{{ item }}}}"
              title: "Fix {{{{ item }}}}"
              {session}
        """,
    )


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def _use(sim: SimServer, token: str | None = None) -> None:
        monkeypatch.setenv("DEVIN_API_KEY", token or sim.token)
        monkeypatch.setenv("DEVIN_ORG_ID", sim.org_id)
        monkeypatch.setenv("DEVIN_API_BASE_URL", sim.base_url)

    return _use


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_first_create_refused_for_a_tag_stops_the_run(
    make_sim: Callable[..., SimServer], write: Any, use: Callable[..., None]
) -> None:
    sim = make_sim(allow_list("team-a", "fleet:tagged"))
    use(sim, NO_ADMIN)  # may not read the allow-list: only the creates can tell
    m = manifest(write, 30)
    res = run("apply", m, "--yes", "--concurrency", "4", "--rate", "100")
    assert res.exit_code == 3, res.output
    creates = sim.stats()["requests"]["POST /sessions"]
    assert creates <= 4, creates  # a handful (those already in flight), never one per item
    assert sim.sessions() == []
    assert "fleet-key:" in res.output and "allowed session tags" in res.output
    assert "allow-list" in res.output and "identity: title" in res.output
    assert "Traceback" not in res.output


def test_check_remote_lists_every_tag_that_is_not_allowed(
    make_sim: Callable[..., SimServer], write: Any, use: Callable[..., None]
) -> None:
    sim = make_sim(allow_list("fleet:tagged"))
    use(sim)
    m = manifest(write, 3)
    res = run("plan", m, "--check-remote")
    assert res.exit_code == 1, res.output
    text = res.stderr
    assert "t.yaml:5:10: defaults.tags[0]: tag 'team-a' is not in org" in text  # its line
    assert "t.yaml:3:11: identity: 3 per-session identity tags (fleet-key:" in text
    assert "3 per-session fingerprint tags (fleet-fp:" in text
    assert "set `identity: title`" in text
    assert "sessions" not in "".join(sim.stats()["requests"])  # nothing about sessions sent
    # Title identity: only the manifest's own tag is left to register.
    m = manifest(write, 3, identity="title")
    res = run("plan", m, "--check-remote")
    assert res.exit_code == 1 and "team-a" in res.stderr and "fleet-key" not in res.stderr
    use(sim, NO_ADMIN)  # may not read the list: a note, not an error
    res = run("plan", m, "--check-remote")
    assert res.exit_code == 0, res.output
    assert "note: allowed session tags not checked" in res.stderr


def test_title_identity_launches_exactly_once_in_an_allow_listed_org(
    make_sim: Callable[..., SimServer], write: Any, use: Callable[..., None]
) -> None:
    sim = make_sim(allow_list("team-a", "fleet:tagged"))
    use(sim)
    m = manifest(write, 4, identity="title")
    assert run("plan", m, "--check-remote").exit_code == 0
    assert run("apply", m, "--yes").exit_code == 0
    sessions = sim.sessions()
    assert len(sessions) == 4 and all(s["tags"] == ["team-a", "fleet:tagged"] for s in sessions)
    assert all(s["title"].startswith("Fix r0") and " [fleet " in s["title"] for s in sessions)
    # A lost ledger: adopted, nothing created, and `=` (the fingerprint is in the title).
    shutil.rmtree(m.parent / ".devin-fleet")
    again = json.loads(run("apply", m, "--yes", "-o", "json").stdout)
    assert again["counts"]["created"] == 0 and again["reconciled"] == 4
    shown = json.loads(run("plan", m, "-o", "json").stdout)
    assert {s["change"] for s in shown["sessions"]} == {"="}
    # Relaunch lineage: attempt 2 in the title, linked to attempt 1; once only.
    res = run("apply", m, "--yes", "--relaunch", "r00")
    assert res.exit_code == 0, res.output
    assert run("apply", m, "--yes", "--relaunch", "r00").exit_code == 0
    r00 = [s for s in sim.sessions() if s["title"].startswith("Fix r00 ")]
    assert len(r00) == 2 and r00[1]["title"].endswith(" attempt 2]")
    assert "fleet-attempt:2" in markers(r00[1]["tags"], r00[1]["title"])
    assert r00[1]["session_links"] == [r00[0]["session_id"]]
    shutil.rmtree(m.parent / ".devin-fleet")  # rebuilt: the key's latest attempt is 2
    status = json.loads(run("status", m, "-o", "json").stdout)
    assert {s["key"]: s["attempt"] for s in status["sessions"]}["r00"] == 2
    assert len(sim.sessions()) == 5


def test_check_remote_checks_the_user_to_create_as_and_notes_the_platform(
    make_sim: Callable[..., SimServer], write: Any, use: Callable[..., None]
) -> None:
    sim = make_sim("clean")
    use(sim)
    m = manifest(write, 2, session="create_as_user_id: user-nobody\n              platform: amiga")
    res = run("plan", m, "--check-remote")
    assert res.exit_code == 1, res.output
    assert "t.yaml:12:26: fleets[0].session.create_as_user_id: org member 'user-nobody'" in (res.stderr)
    assert "note: platform 'amiga' not verified: the API publishes no list" in res.stderr
    m = manifest(write, 2, session="create_as_user_id: user-sim-alice")
    assert run("plan", m, "--check-remote").exit_code == 0


def test_an_unknown_platform_stops_the_run_at_the_first_refusal(
    make_sim: Callable[..., SimServer], write: Any, use: Callable[..., None]
) -> None:
    sim = make_sim("clean")
    use(sim)
    m = manifest(write, 20, session="platform: amiga")
    res = run("apply", m, "--yes", "--concurrency", "2", "--rate", "100")
    assert res.exit_code == 3, res.output
    assert sim.stats()["requests"]["POST /sessions"] <= 2
    assert "Unknown platform 'amiga'" in res.output and "platform labels" in res.output
