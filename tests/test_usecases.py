"""The use cases live in the library: a library user relaunches as `apply --relaunch` does
(select, record, terminate earlier, launch), cancel chooses and reports without the CLI, option
errors name the option (the CLI names the flag), and results formats come from one registry."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

import launcher
from launcher import (
    ApiConfig,
    ApplyOptions,
    ConfigError,
    DevinClient,
    RolloutOptions,
    build_plan,
    campaign_view,
    cancel_targets,
    check_manifest,
    launch_campaign,
    load_manifest,
    open_ledger,
    relaunch_selection,
)
from launcher.cli import cli
from launcher.errors import SelectorError
from launcher.run.cancel import CancelReport, CancelResult
from launcher.sim import Profile, SimServer
from launcher.views.formats import FORMATS, grouping
from launcher.views.results import build_results
from tests.helpers import sim_lag

Write = Callable[[str, str], Path]

FOREVER = Profile.model_validate(
    {
        "name": "forever",
        "outcomes": {"finished": 1},
        "lifecycle": {
            "new_seconds": 0,
            "claimed_seconds": 0,
            "working_seconds_min": 1e7,
            "working_seconds_max": 2e7,
        },
    }
)


def manifest(write: Write, n: int) -> Path:
    items = ", ".join(f"r-{i}" for i in range(n))
    return write(
        "uc.yaml",
        f"""
        version: 1
        campaign: uc
        fleets:
          - name: f
            for_each:
              items: [{items}]
            session:
              prompt: "Fix {{{{ item }}}}"
        """,
    )


def test_a_library_user_relaunches_in_order_without_the_cli(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 3)))
    notes: list[str] = []

    async def go() -> tuple[int, int]:
        cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                options = ApplyOptions(rate=500.0, list_lag=sim_lag(sim))
                first = await launch_campaign(plan, client, led, options, RolloutOptions())
                with pytest.raises(SelectorError) as nothing:  # names no flag: the CLI does
                    await relaunch_selection(plan, client, led, ("nope-*",))
                assert nothing.value.message.startswith("relaunch selector 'nope-*': no key")
                chosen = await relaunch_selection(plan, client, led, ("r-1",))
                again = await launch_campaign(
                    plan, client, led, options, relaunch=chosen, note=notes.append
                )
        return first.exit_code, again.exit_code

    assert anyio.run(go) == (0, 0)
    sessions = sim.sessions()
    assert len(sessions) == 4  # three first attempts, one new attempt of r-1
    tag = next(s.identity_tag for s in plan.sessions if s.key == "r-1")
    # the first attempts are created concurrently, in no set order: r-1's is found by its tag
    old = next(s for s in sessions[:3] if tag in s["tags"])
    new = sessions[3]
    assert tag in new["tags"]
    assert "fleet-attempt:2" in new["tags"] and new["session_links"] == [old["session_id"]]
    assert old["terminated"] and not new["terminated"]  # the earlier live attempt ended
    assert [s["terminated"] for s in sessions[:3] if s is not old] == [False, False]
    assert "relaunch: terminated 1 earlier attempt(s)" in notes


def test_cancel_chooses_and_reports_in_the_library(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim(FOREVER, time_scale=100)
    plan = build_plan(load_manifest(manifest(write, 3)))
    ledger = tmp_path / "l.db"

    async def go() -> None:
        async with DevinClient(ApiConfig(sim.base_url, sim.org_id, sim.token)) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                await launch_campaign(plan, client, led, ApplyOptions(rate=500.0, list_lag=sim_lag(sim)))

    anyio.run(go)
    with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
        view = campaign_view(plan, led)
    chosen = cancel_targets(view, ("r-[01]",))
    assert chosen.selected == ["r-0", "r-1"] and chosen.what == "live" and not chosen.by_id
    assert [line.split()[0] for line in chosen.listing] == ["r-0", "r-1"]
    assert cancel_targets(view, strays=True).by_id
    report = CancelReport({"r-0": CancelResult.terminated, "r-1": CancelResult.error}, {"r-1": "boom"})
    assert report.to_json("uc", chosen.selected) == {
        "campaign": "uc",
        "selected": ["r-0", "r-1"],
        "results": {"r-0": "terminated", "r-1": "error"},
        "errors": {"r-1": "boom"},
        "cancelled": 1,
        "ok": False,
    }


@pytest.mark.parametrize(
    ("kwargs", "option", "flag"),
    [
        ({"rate": 0.0}, "rate", "--rate"),
        ({"concurrency": 0}, "concurrency", "--concurrency"),
        ({"limit": -1}, "limit", "--limit"),
    ],
)
def test_option_errors_name_the_option_and_the_cli_names_the_flag(
    write: Write, kwargs: dict[str, float], option: str, flag: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ApplyOptions(**kwargs)  # type: ignore[arg-type]
    assert caught.value.option == option and "--" not in caught.value.message
    assert caught.value.message.startswith(f"{option} must")
    path = manifest(write, 1)
    (value,) = kwargs.values()
    res = CliRunner().invoke(cli, ["apply", str(path), "--yes", flag, str(value)])
    # The CLI refuses it before the library sees it: a usage error naming the flag (exit 64)
    assert res.exit_code == 64 and f"Invalid value for '{flag}'" in res.output, res.output


def test_the_cli_reads_the_library_defaults() -> None:
    params = {p.name: p for p in cli.commands["apply"].params}
    defaults = ApplyOptions()
    for name in ("concurrency", "lookup_grace", "lock_ttl"):
        assert params[name].default == getattr(defaults, name), name
    # --rate's default depends on --sim: its help names the library's (and the simulator's)
    assert f"default {defaults.rate:g};" in (params["rate"].help or "")
    assert params["request_timeout"].default == ApiConfig("u", "o", "t").read_timeout
    watch = inspect.signature(launcher.watch).parameters
    status = {p.name: p.default for p in cli.commands["status"].params}
    assert (status["interval"], status["max_interval"]) == (
        watch["interval"].default,
        watch["max_interval"].default,
    )
    message = {p.name: p.default for p in cli.commands["message"].params}
    assert message["rate"] == inspect.signature(launcher.send_messages).parameters["rate"].default


def test_results_formats_come_from_one_registry(write: Write, tmp_path: Path) -> None:
    params = {p.name: p for p in cli.commands["results"].params}
    assert list(params["output"].type.choices) == list(FORMATS)  # type: ignore[attr-defined]
    plan = build_plan(load_manifest(manifest(write, 2)))
    with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
        led.sync_plan(plan)
        res = build_results(campaign_view(plan, led), plan.schemas)
    g = grouping(res, ["outcome"])
    assert g.records == [{"outcome": "not-launched", "sessions": 2}]
    for fmt in FORMATS.values():
        if fmt.drawn:
            assert fmt.results is None and fmt.groups is None
            continue
        assert fmt.results is not None and fmt.groups is not None
        assert "r-0" in fmt.results(res, None) and "not-launched" in fmt.groups(g), fmt.name
    assert json.loads(FORMATS["json"].groups(g)) == g.records  # type: ignore[misc]


def test_validate_checks_in_the_library_and_a_problem_is_a_result(write: Write) -> None:
    good = check_manifest(str(manifest(write, 2)))
    assert good.ok and good.sessions == 2 and good.to_json()["problems"] == []
    bad_path = write("bad.yaml", "version: 1\ncampaign: uc\nfleets: []\nbogus: 1\n")
    bad = check_manifest(str(bad_path))
    assert not bad.ok and bad.sessions is None
    report = bad.to_json()
    assert report["ok"] is False and "problem" in report["error"]
    assert any(p["field"] == "bogus" and p["line"] == 4 for p in report["problems"]), report
