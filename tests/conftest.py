"""Shared fixtures: a clean environment for every test, and helpers that show inputs inline."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

_API_VARS = ("DEVIN_API_KEY", "DEVIN_ORG_ID", "DEVIN_API_BASE_URL", "DEVIN_FLEET_LEDGER")
# A run inside GitHub Actions: no test may comment with the workflow's token or write its files.
_GITHUB_VARS = (
    "GITHUB_TOKEN",
    "GITHUB_REPOSITORY",
    "GITHUB_API_URL",
    "GITHUB_EVENT_PATH",
    "GITHUB_OUTPUT",
    "GITHUB_STEP_SUMMARY",
    "GITHUB_SHA",
)
SLOW_TIMEOUT = 120  # seconds, for tests marked `slow`; every other test has pyproject's 30


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A `slow` test (subprocess kills, long fault runs) gets SLOW_TIMEOUT unless it sets its own."""
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's API key, org or ledger; state lives under tmp_path."""
    for name in (*_API_VARS, *_GITHUB_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    yield


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str], Path]:
    """write("manifest.yaml", '''...''') -> path; dedents so fixtures read inline."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


# ---- simulator fixtures (owned by the simulator work) -------------------------------------

import threading  # noqa: E402  (this section's imports live with it)
from contextlib import ExitStack  # noqa: E402
from typing import Any  # noqa: E402

from launcher.sim import Profile, SimServer, running_simulator  # noqa: E402

# Stopping a simulator takes ~0.2 s of uvicorn's (its 0.1 s tick, then a 0.1 s pause in its
# shutdown): ~30 s over the suite when each test waited for it. A test's simulators are
# stopped in a thread of their own instead, while the next test runs (each listens on a port
# of its own); every such thread is joined, and its error raised, when the session ends.
_STOPPING: list[threading.Thread] = []
_STOP_ERRORS: list[BaseException] = []


def _stop_in_background(stack: ExitStack) -> None:
    def stop() -> None:
        try:
            stack.close()
        except BaseException as exc:  # raised at the end of the session
            _STOP_ERRORS.append(exc)

    thread = threading.Thread(target=stop, name="sim-stop", daemon=True)
    thread.start()
    _STOPPING.append(thread)


@pytest.fixture(scope="session", autouse=True)
def _simulators_stopped() -> Iterator[None]:
    yield
    for thread in _STOPPING:
        thread.join(30)
    assert not [t for t in _STOPPING if t.is_alive()], "a simulator did not stop within 30 s"
    if _STOP_ERRORS:
        raise _STOP_ERRORS[0]


@pytest.fixture
def make_sim(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SimServer]]:
    """make_sim(profile="clean", **kw) -> a running SimServer on a free loopback port.

    Keyword arguments go to `launcher.sim.running_simulator`; introspection defaults to on here
    (tests usually check what the server saw). Every server is stopped after the test (in the
    background: see `_stop_in_background`). Its list lag is known, so CLI runs state it
    (DEVIN_FLEET_LIST_LAG), as `apply --sim` does: without it apply waits the assumed bound
    before its first create.
    """
    stack = ExitStack()
    try:

        def _make(profile: Profile | str = "clean", **kw: Any) -> SimServer:
            kw.setdefault("introspection", True)
            sim = stack.enter_context(running_simulator(profile, **kw))
            monkeypatch.setenv("DEVIN_FLEET_LIST_LAG", str(sim.profile.faults.list_lag_seconds))
            return sim

        yield _make
    finally:
        _stop_in_background(stack)


@pytest.fixture
def sim_server(make_sim: Callable[..., SimServer]) -> SimServer:
    """A running `clean` simulator with introspection on."""
    return make_sim("clean")


@pytest.fixture
def sim_client() -> Iterator[Callable[..., Any]]:
    """sim_client(sim, token=None, **kw) -> an httpx.Client on `sim` with its bearer token.

    `token=""` sends no Authorization header. Clients are closed at teardown.
    """
    import httpx

    with ExitStack() as stack:

        def _client(sim: SimServer, token: str | None = None, **kw: Any) -> httpx.Client:
            token = sim.token if token is None else token
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            headers = {**auth, **kw.pop("headers", {})}
            kw.setdefault("timeout", 10.0)
            return stack.enter_context(httpx.Client(base_url=sim.base_url, headers=headers, **kw))

        yield _client


# ---- a campaign run to its end (test_results.py, test_report.py) -----------------------------

from launcher import build_plan, load_manifest  # noqa: E402
from tests.helpers import (  # noqa: E402
    LAUNCHED_MANIFEST,
    N_MIGRATIONS,
    apply_all,
    migration_manifest,
    point_cli_at,
    run,
)


@pytest.fixture
def mixed_campaign(
    write: Callable[[str, str], Path],
    make_sim: Callable[..., SimServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sim_client: Callable[..., Any],
) -> tuple[Path, Path, dict[str, dict[str, Any]]]:
    """A `mixed` campaign (seed 1) applied and watched to the end; the API's final sessions."""
    sim = make_sim("mixed", time_scale=300, seed=1)
    path = migration_manifest(write)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)
    point_cli_at(sim, monkeypatch)
    res = run("status", path, "--ledger", ledger, "--watch", "--interval", "0.2", "--timeout", "60")
    assert res.exit_code in (3, 6), res.output
    http = sim_client(sim)
    truth = {}
    for s in sim.sessions():
        body = http.get(f"/v3/organizations/{sim.org_id}/sessions/{s['session_id']}").json()
        truth[s["repos"][0].removeprefix("acme/")] = {**body, "planned": s["planned_outcome"]}
    assert len(truth) == N_MIGRATIONS
    assert {"delivered", "needs_user", "error", "suspended"} <= {t["planned"] for t in truth.values()}
    return path, ledger, truth


@pytest.fixture
def launched(
    write: Callable[[str, str], Path],
    make_sim: Callable[..., SimServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Path, Path]:
    """LAUNCHED_MANIFEST (a session secret from GH_TOKEN) launched on a `clean` simulator:
    (manifest path, ledger path)."""
    sim = make_sim("clean")
    path = write("d.yaml", LAUNCHED_MANIFEST)
    ledger = tmp_path / "l.db"
    secret = {"GH_TOKEN": "ghp_supersecretvalue"}
    monkeypatch.setenv("GH_TOKEN", secret["GH_TOKEN"])
    apply_all(build_plan(load_manifest(path), environ=secret), sim, ledger, environ=secret)
    return path, ledger


# ---- the shared ledger's PostgreSQL (owned by the ledger work) -----------------------------

PG_ENV = "DEVIN_FLEET_TEST_PG"  # .ci/pg.sh start prints it; .ci/run exports it


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL ledger URL on a schema of its own (dropped at teardown), on the server
    `DEVIN_FLEET_TEST_PG` names. Without one: skipped locally, a failure under CI=true."""
    import os
    import uuid

    base = os.environ.get(PG_ENV)
    if not base:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} is not set: .ci/run starts a PostgreSQL for these tests")
        pytest.skip(f"no PostgreSQL: set {PG_ENV} (`.ci/pg.sh start` prints a URL)")
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
