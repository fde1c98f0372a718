"""Errors as users meet them, through the real CLI: one located message and the right exit code
however deep an error was raised, no traceback without --debug, exit 5 only for credentials and
the breaker, and the small things (bare command, schema output, read-only warnings)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from launcher.cli import cli
from launcher.errors import ExitCode, FleetError, LockedError, SecretError, fleet_errors
from launcher.sim import SimServer
from tests.helpers import clean, fleet_manifest, run

Write = Callable[[str, str], Path]


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch, sim_server: SimServer) -> SimServer:
    monkeypatch.setenv("DEVIN_API_KEY", sim_server.token)
    monkeypatch.setenv("DEVIN_ORG_ID", sim_server.org_id)
    monkeypatch.setenv("DEVIN_API_BASE_URL", sim_server.base_url)
    return sim_server


def secret_manifest(write: Write) -> Path:
    return write(
        "sec.yaml",
        """
        version: 1
        campaign: sec
        fleets:
          - name: bumps
            key: "{{ item }}"
            for_each:
              items: [a, b]
            session:
              prompt: "Bump {{ item }}"
              session_secrets:
                - key: NPM_TOKEN
                  value: {env: FLEET_TEST_REGISTRY_TOKEN}
        """,
    )


# =========================================================================== deep errors


def test_fleet_error_raised_inside_a_task_group_renders_as_its_message() -> None:
    async def deep() -> None:
        async def task() -> None:
            raise LockedError("c", "host:1", 0.0, "/x.db")

        async with anyio.create_task_group() as tg:
            tg.start_soon(task)

    @cli.command("boom-test")
    def boom() -> None:
        anyio.run(deep)

    try:
        res = run("boom-test")
        out = clean(res)
        assert res.exit_code == ExitCode.locked  # the error's own code, through the group
        assert out.count("error: campaign 'c' is locked by host:1") == 1
        assert "hint: wait for it to finish" in out
        res = run("--debug", "boom-test")  # --debug keeps the traceback
        assert isinstance(res.exception, BaseExceptionGroup)
    finally:
        cli.commands.pop("boom-test")


def test_only_groups_made_of_fleet_errors_are_rendered() -> None:
    leaf = SecretError(["X"])
    assert fleet_errors(ExceptionGroup("g", [ExceptionGroup("h", [leaf])])) == [leaf]
    assert fleet_errors(ExceptionGroup("g", [leaf, ValueError("bug")])) == []
    assert fleet_errors(ValueError("bug")) == []
    assert fleet_errors(leaf) == [leaf]
    assert isinstance(leaf, FleetError)


def test_apply_with_a_secret_variable_unset_is_one_message(
    write: Write, sim_env: SimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FLEET_TEST_REGISTRY_TOKEN", raising=False)
    path = secret_manifest(write)
    res = run("apply", path, "-y", "--ledger", tmp_path / "l.db")
    out = clean(res)
    assert res.exit_code == ExitCode.error, out
    assert "error: environment variable(s) for session secrets not set: FLEET_TEST_REGISTRY_TOKEN" in out
    assert "hint: export them before apply" in out
    assert sim_env.stats()["sessions"] == 0


@pytest.fixture
def lock_holder(tmp_path: Path, write: Write) -> Iterator[tuple[Path, Path]]:
    """Another process holding the campaign lock (through the ledger API) until teardown."""
    path = fleet_manifest(write, 2)
    ledger = tmp_path / "l.db"
    code = (
        "import sys\n"
        "from launcher.ledger.sqlite import SqliteLedger\n"
        f"led = SqliteLedger({str(ledger)!r}, 'fu')\n"
        "led.acquire_lock()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        yield path, ledger
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait()


def test_apply_while_the_lock_is_held_is_one_message(
    lock_holder: tuple[Path, Path], sim_env: SimServer
) -> None:
    path, ledger = lock_holder
    res = run("apply", path, "-y", "--ledger", ledger, "--lock-timeout", "0")
    out = clean(res)
    assert res.exit_code == ExitCode.locked, out
    assert out.count("error: campaign 'fu' is locked by ") == 1
    assert "hint: wait for it to finish; if that process is gone, run `devin-fleet unlock" in out
    assert sim_env.stats()["sessions"] == 0


# =========================================================================== small things


def test_bare_command_prints_help_and_exits_0() -> None:
    res = run()
    assert res.exit_code == ExitCode.ok, res.output
    assert "Usage: devin-fleet" in res.output or "Usage: cli" in res.output
    assert "Commands:" in res.output and "apply" in res.output


# =========================================================================== unreachable API


@pytest.fixture
def dead_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback URL nobody listens on: a bound socket that never listens refuses connects."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setenv("DEVIN_API_KEY", "cog_test")
        monkeypatch.setenv("DEVIN_ORG_ID", "org-1")
        monkeypatch.setenv("DEVIN_API_BASE_URL", url)
        yield url


def test_status_against_an_unreachable_api_names_the_url_and_exits_1(
    write: Write, tmp_path: Path, dead_url: str, make_sim: Callable[..., SimServer]
) -> None:
    from launcher import build_plan, load_manifest
    from tests.helpers import apply_all

    path = fleet_manifest(write, 2)
    apply_all(build_plan(load_manifest(path)), make_sim("clean"), tmp_path / "l.db")
    # That ledger belongs to the simulator's org (refused elsewhere: test_org_binding.py); a
    # fresh ledger, rebuilt from the API, meets the unreachable API first.
    res = run("status", path, "--ledger", tmp_path / "fresh.db")
    out = clean(res)
    assert res.exit_code == ExitCode.error, out
    assert f"error: cannot reach the API at {dead_url}" in out
    assert "hint: check DEVIN_API_BASE_URL (or --base-url) and the network" in out


def test_apply_against_an_unreachable_api_creates_nothing_and_exits_1(
    write: Write, tmp_path: Path, dead_url: str
) -> None:
    from launcher.ledger.location import ledger_exists, open_ledger

    path = fleet_manifest(write, 2)
    res = run("apply", path, "-y", "--ledger", tmp_path / "l.db")
    out = clean(res)
    assert res.exit_code == ExitCode.error, out
    assert f"error: cannot reach the API at {dead_url}" in out
    assert "hint: check DEVIN_API_BASE_URL" in out
    if ledger_exists(path, "fu", tmp_path / "l.db"):
        with open_ledger(path, "fu", tmp_path / "l.db", create=False) as led:
            assert led.events() == []


def test_schema_output_reproduces_the_committed_file_byte_for_byte() -> None:
    committed = (
        Path(__file__).resolve().parent.parent / "schemas" / "manifest.schema.json"
    ).read_bytes()
    res = CliRunner().invoke(cli, ["schema"])
    assert res.exit_code == 0
    assert res.stdout_bytes == committed


# =========================================================================== read-only commands


@pytest.mark.usefixtures("sim_env")
def test_read_only_commands_do_not_warn_about_unset_secret_variables(
    write: Write, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, ledger = secret_manifest(write), tmp_path / "l.db"
    monkeypatch.setenv("FLEET_TEST_REGISTRY_TOKEN", "value-never-printed")
    assert run("apply", path, "-y", "--ledger", ledger, "--rate", "100").exit_code == 0
    monkeypatch.delenv("FLEET_TEST_REGISTRY_TOKEN")
    warning = "warning: environment variable(s) for session secrets not set"
    for args in (
        ("status", path),
        ("status", path, "--offline"),
        ("results", path),
        ("cancel", path, "-y"),
        ("unlock", path),
    ):
        res = run(*args, "--ledger", ledger)
        assert warning not in clean(res), args
        assert res.exit_code in (0, 4), (args, res.output)
    res = run("plan", path, "--ledger", ledger)  # plan still tells, before anyone applies
    assert res.exit_code == 0 and f"{warning}: FLEET_TEST_REGISTRY_TOKEN" in clean(res)
    res = run("apply", path, "-y", "--ledger", ledger)  # apply refuses: one error, no warning
    out = clean(res)
    assert res.exit_code == ExitCode.error and warning not in out
    assert out.count("FLEET_TEST_REGISTRY_TOKEN") == 1


def test_status_of_a_missing_manifest_says_file_not_found_not_nothing_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("status", "results", "unlock"):
        res = run(command, "nosuch.yaml")
        out = clean(res)
        assert res.exit_code == ExitCode.error
        assert out.startswith("nosuch.yaml: file not found\n"), out
        assert "nothing was sent" not in out
    res = run("apply", "nosuch.yaml", "-y")  # a command that sends still says so
    assert res.exit_code == ExitCode.error and "nothing was sent" in clean(res)


# =========================================================================== ledger errors


def test_a_ledger_that_cannot_be_opened_is_one_located_message(write: Write, tmp_path: Path) -> None:
    path = fleet_manifest(write, 1)
    (tmp_path / "garbage.db").write_bytes(b"not sqlite at all" * 100)
    ledger = tmp_path / "garbage.db"
    for args in (("status", "--offline"), ("plan",)):
        res = run(args[0], path, *args[1:], "--ledger", ledger)
        out = clean(res)
        assert res.exit_code == ExitCode.error, out
        assert f"error: cannot open ledger {ledger}: file is not a database" in out
        assert "hint: the file is damaged or not a devin-fleet ledger" in out


# =========================================================================== pydantic errors


def test_an_invalid_simulator_profile_reads_like_a_manifest_problem(write: Write) -> None:
    bad = write("bad-profile.yaml", "platforms: linux\nmembers: [1]\nsurprise: 1\n")
    res = run("apply", fleet_manifest(write, 1), "--sim", "--sim-profile", bad, "-y")
    out = clean(res)
    assert res.exit_code == ExitCode.error, out
    assert f"{bad}: platforms: expected a list; got 'linux'" in out
    assert f"{bad}: members[0]: expected a string; got 1" in out
    assert f"{bad}: surprise: unknown field" in out
    assert "pydantic" not in out and "Input should be" not in out and "https://" not in out


def test_an_unreadable_api_session_says_what_is_wrong_without_pydantic_words() -> None:
    import httpx

    from launcher.api.client import ApiConfig, DevinClient
    from launcher.errors import APIError

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"session_id": 5, "status": "new"}, request=request)

    async def go() -> None:
        cfg = ApiConfig("https://api.example.test", "org-1", "cog_x")
        async with DevinClient(cfg, transport=httpx.MockTransport(handler)) as c:
            await c.get_session("devin-1")

    with pytest.raises(APIError) as info:
        anyio.run(go)
    text = info.value.message
    assert text.startswith("unreadable session object from the API: session_id: expected a string")
    assert "Input should be" not in text and "https://" not in text
