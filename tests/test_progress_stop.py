"""After a stop (Ctrl-C, --timeout, the breaker) the progress shows what was done: sessions that
were never started do not advance the bar, and the last line says how many were stopped."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import anyio

from launcher import ApiConfig, ApplyOptions, DevinClient, apply_plan, build_plan, load_manifest
from launcher.ledger.location import open_ledger
from launcher.run.summary import ApplySummary, Result
from launcher.sim import SimServer
from launcher.views.progress import ProgressReporter
from tests.helpers import fleet_manifest, sim_lag

Write = Callable[[str, str], Path]


def test_plain_lines_after_a_stop_show_what_was_done() -> None:
    stream = io.StringIO()
    rep = ProgressReporter("apply", stream=stream, every=0.0, force_terminal=False)
    rep.start(40)
    for i in range(9):
        rep.advance(f"k{i}", Result.created)
    for i in range(9, 40):
        rep.advance(f"k{i}", Result.not_started)
    rep.finish()
    text = stream.getvalue()
    assert text.rstrip().endswith("apply: 9/40 created=9; stopped: 31 not started")
    assert "40/40" not in text and "not_started=" not in text


def test_the_live_bar_stops_where_the_work_stopped() -> None:
    stream = io.StringIO()
    rep = ProgressReporter("apply", stream=stream, force_terminal=True)
    rep.start(4)
    rep.advance("a", Result.created)
    rep.advance("b", Result.not_started)
    rep.advance("c", Result.not_started)
    rep.advance("d", Result.not_started)
    rep.finish()
    text = stream.getvalue()
    assert "1/4" in text and "created=1; stopped: 3 not started" in text
    assert "4/4" not in text


class _StopAfter(ProgressReporter):
    """The real reporter, which also presses "Ctrl-C" (sets `stop`) after `n` creates."""

    def __init__(self, n: int, stop: anyio.Event, stream: io.StringIO) -> None:
        super().__init__("apply", stream=stream, every=0.0, force_terminal=False)
        self.n, self.stop, self.seen = n, stop, Counter[str]()

    def advance(self, key: str, result: Result | str) -> None:
        self.seen[key] += 1
        super().advance(key, result)
        if result == Result.created and self.counts[Result.created] >= self.n:
            self.stop.set()


def test_apply_stopped_part_way_reports_every_key_once_and_the_bar_shows_what_was_done(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    sim = make_sim("clean")
    plan = build_plan(load_manifest(fleet_manifest(write, 8)))
    stream = io.StringIO()

    async def go() -> tuple[ApplySummary, _StopAfter]:
        stop, interrupted = anyio.Event(), anyio.Event()
        reporter = _StopAfter(2, stop, stream)
        async with DevinClient(ApiConfig(sim.base_url, sim.org_id, sim.token)) as client:
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                summary = await apply_plan(
                    plan,
                    client,
                    led,
                    ApplyOptions(concurrency=1, rate=500.0, list_lag=sim_lag(sim)),
                    reporter=reporter,
                    environ={},
                    stop=stop,
                    interrupted=interrupted,
                )
        return summary, reporter

    summary, reporter = anyio.run(go)
    created = summary.count(Result.created)
    assert created >= 2 and summary.count(Result.not_started) == 8 - created
    assert set(reporter.seen) == {s.key for s in plan.sessions}
    assert set(reporter.seen.values()) == {1}  # every key reported once
    last = stream.getvalue().rstrip().splitlines()[-1]
    assert last == f"apply: {created}/8 created={created}; stopped: {8 - created} not started"


def test_creates_cancelled_by_the_drain_timeout_still_reach_the_reporter(
    write: Write, tmp_path: Path
) -> None:
    """A stop whose in-flight create never answers: after `drain_timeout` the workers and the
    feeder are cancelled; the keys they held are reported all the same (unknown/not started)."""
    import httpx

    plan = build_plan(load_manifest(fleet_manifest(write, 5)))
    stream = io.StringIO()
    seen: Counter[str] = Counter()

    class Recording(ProgressReporter):
        def advance(self, key: str, result: Result | str) -> None:
            seen[key] += 1
            super().advance(key, result)

    async def go() -> ApplySummary:
        stop, sent = anyio.Event(), anyio.Event()

        async def handler(request: httpx.Request) -> httpx.Response:
            if request.method == "GET":  # the start-of-apply reconcile: nothing exists yet
                return httpx.Response(
                    200, json={"items": [], "end_cursor": None, "has_next_page": False}
                )
            sent.set()  # a create that never answers
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        cfg = ApiConfig("https://api.example.test", "org-1", "cog_x")
        reporter = Recording("apply", stream=stream, every=0.0, force_terminal=False)
        async with (
            DevinClient(cfg, transport=httpx.MockTransport(handler)) as client,
            anyio.create_task_group() as tg,
        ):

            async def press_ctrl_c() -> None:
                await sent.wait()
                stop.set()

            tg.start_soon(press_ctrl_c)
            with open_ledger(plan.manifest.path, plan.campaign, tmp_path / "l.db") as led:
                return await apply_plan(
                    plan,
                    client,
                    led,
                    ApplyOptions(
                        concurrency=1, rate=500.0, drain_timeout=0.0, preflight=False, list_lag=0.0
                    ),
                    reporter=reporter,
                    environ={},
                    stop=stop,
                )

    summary = anyio.run(go)
    assert summary.count(Result.unknown) == 1 and summary.count(Result.not_started) == 4
    assert set(seen) == {s.key for s in plan.sessions} and set(seen.values()) == {1}
    last = stream.getvalue().rstrip().splitlines()[-1]
    assert last == "apply: 1/5 unknown=1; stopped: 4 not started"
