"""Apply exactly what was reviewed: `plan -o json` records a digest of the intended actions;
`apply --plan plan.json` (or `--plan-digest`) refuses, sending nothing, when the re-plan differs,
naming the sessions, and applies exactly the planned sessions when it matches."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from launcher import build_plan, load_manifest
from launcher.errors import ConfigError, PlanChangedError
from launcher.sim import SimServer
from launcher.spec.digest import check_reviewed, digest_of, read_reviewed
from tests.helpers import run

Write = Callable[[str, str], Path]


def manifest(write: Write, items: str, prompt: str = "Fix {{ item }}", env: str = "NPM") -> Path:
    return write(
        "m.yaml",
        f"""
        version: 1
        campaign: reviewed
        defaults: {{max_acu_limit: 2}}
        fleets:
          - name: f
            for_each: {{items: [{items}]}}
            session:
              prompt: "{prompt}"
              session_secrets: [{{key: NPM_TOKEN, value: {{env: {env}}}}}]
        """,
    )


@pytest.fixture
def sim(make_sim: Callable[..., SimServer], monkeypatch: pytest.MonkeyPatch) -> SimServer:
    server = make_sim("clean")
    monkeypatch.setenv("DEVIN_API_KEY", server.token)
    monkeypatch.setenv("DEVIN_ORG_ID", server.org_id)
    monkeypatch.setenv("DEVIN_API_BASE_URL", server.base_url)
    monkeypatch.setenv("NPM", "s3cr3t-value")
    return server


def reviewed_plan(path: Path, out: Path) -> dict[str, object]:
    res = run("plan", path, "-o", "json")
    assert res.exit_code == 0, res.output
    out.write_bytes(res.stdout_bytes)
    data: dict[str, object] = json.loads(res.stdout_bytes)
    return data


def test_a_stale_plan_is_refused_with_nothing_sent(write: Write, tmp_path: Path, sim: SimServer) -> None:
    plan_json = tmp_path / "plan.json"
    reviewed_plan(manifest(write, "a, b, c"), plan_json)
    path = manifest(write, "a, b, d", prompt="Fix {{ item }} now")  # pushed after the review
    res = run("apply", path, "--plan", plan_json, "--yes", "--ledger", tmp_path / "l.db")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "the plan changed since it was reviewed" in res.stderr
    assert "1 new, 1 no longer planned, 2 changed session(s): +d, -c, ~a, ~b" in res.stderr
    assert "nothing was sent" in res.stderr and "hint:" in res.stderr
    assert sim.stats()["requests"] == {} and sim.sessions() == []
    assert not (tmp_path / "l.db").exists()  # refused before the ledger was opened
    res = run("apply", path, "--plan-digest", "sha256:" + "0" * 64, "--yes")
    assert res.exit_code == 1 and "the plan changed since it was reviewed" in res.stderr
    assert sim.stats()["requests"] == {}


def test_a_matching_plan_applies_exactly_the_planned_sessions(
    write: Write, tmp_path: Path, sim: SimServer
) -> None:
    path = manifest(write, "a, b, c, d")
    data = reviewed_plan(path, tmp_path / "plan.json")
    ledger = tmp_path / "l.db"
    res = run("apply", path, "--plan", tmp_path / "plan.json", "--yes", "--ledger", ledger)
    assert res.exit_code == 0, res.output
    assert f"plan matches the reviewed plan ({data['digest']})" in res.stderr
    sent = sorted(t for s in sim.sessions() for t in s["tags"] if t.startswith("fleet-key:"))
    planned = sorted(s["tags"][1] for s in data["sessions"])  # type: ignore[attr-defined,index]
    assert sent == planned and sim.stats()["requests"]["POST /sessions"] == 4
    assert "s3cr3t-value" not in (tmp_path / "plan.json").read_text()
    assert "s3cr3t-value" not in run("plan", path, "-o", "markdown").output
    # nothing volatile: after the apply (a ledger, remote sessions) the digest is the same,
    # and the same --plan applies again as a no-op
    again = run("plan", path, "-o", "json", "--ledger", ledger)
    assert json.loads(again.stdout)["digest"] == data["digest"]
    res = run("apply", path, "--plan-digest", str(data["digest"]), "--yes", "--ledger", ledger)
    assert res.exit_code == 0 and sim.stats()["requests"]["POST /sessions"] == 4


def test_the_digest_covers_requests_and_identities_not_order_or_secret_values(write: Write) -> None:
    def digest(path: Path, environ: dict[str, str] | None = None) -> str:
        return build_plan(load_manifest(path), environ=environ or {}).digest

    base = digest(manifest(write, "a, b"))
    assert base == digest(manifest(write, "b, a"))  # the same requests, listed in another order
    assert base == digest(manifest(write, "a, b"), {"NPM": "another value"})
    assert base != digest(manifest(write, "a, b", env="NPM2"))  # another secret source
    assert base != digest(manifest(write, "a, b", prompt="Fix {{ item }}!"))
    assert base != digest(manifest(write, "a, b, c"))
    fps = build_plan(load_manifest(manifest(write, "a, b")), environ={}).fingerprints()
    assert base == digest_of("reviewed", fps.items()) != digest_of("other", fps.items())


def test_reviewed_plan_files_are_checked(write: Write, tmp_path: Path) -> None:
    path = manifest(write, "a, b")
    bad = tmp_path / "bad.json"
    for text, message in (
        ("nope", "not a JSON plan"),
        ('{"campaign": "x"}', "no `sessions` list"),
        ('{"campaign": "x", "sessions": []}', "records no digest"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            read_reviewed(bad)
    data = reviewed_plan(path, tmp_path / "plan.json")
    data["sessions"] = data["sessions"][:1]  # type: ignore[index]  # cut short: caught
    bad.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="does not match the plan's sessions"):
        read_reviewed(bad)
    plan = build_plan(load_manifest(path), environ={})
    check_reviewed(plan.campaign, plan.fingerprints(), read_reviewed(tmp_path / "plan.json"))
    other = build_plan(load_manifest(manifest(write, "a, b, c")), environ={})
    with pytest.raises(PlanChangedError) as info:
        check_reviewed(other.campaign, other.fingerprints(), read_reviewed(tmp_path / "plan.json"))
    assert info.value.differ == ["+c"]
