"""Shared test helpers, one home each: the CLI wrapper, manifest builders, a bounded wait,
exactly-once checks against the simulator, and a scripted Devin API (httpx.MockTransport).
Fixtures (a clean environment, `write`, simulators) live in conftest.py; virtual time (`FakeClock`,
linked virtual time) in clocks.py."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from click.testing import CliRunner, Result

from launcher import ApiConfig, ApplyOptions, DevinClient, apply_plan
from launcher.cli import cli
from launcher.ledger.location import open_ledger
from launcher.run.summary import ApplySummary
from launcher.sim import SimServer
from launcher.spec.identity import markers
from launcher.spec.plan import Plan
from tests.clocks import FakeClock

__all__ = [
    "MIGRATION_SCHEMA",
    "N_MIGRATIONS",
    "OUTPUT_COLUMNS",
    "RULE",
    "SCHEMA",
    "FakeClock",
    "LAUNCHED_MANIFEST",
    "ScriptedAPI",
    "ScriptedLists",
    "Write",
    "apply_all",
    "assert_exactly_once_and_ledger_agrees",
    "campaign",
    "clean",
    "crash_after_sending",
    "created",
    "expected_outcome",
    "fleet_manifest",
    "migration_manifest",
    "run",
    "run_apply",
    "point_cli_at",
    "read_terminal",
    "run_pty",
    "session_json",
    "sessions_per_key",
    "sim_lag",
    "cli_env",
    "wait_for",
]

Write = Callable[[str, str], Path]


# ---------------------------------------------------------------------------------- the CLI


def run(*args: str | Path, input: str | None = None) -> Result:
    """`devin-fleet ARGS...` in-process (click's CliRunner): exit code, stdout, stderr."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def clean(res: Result) -> str:
    """The whole output, after checking nothing escaped as a traceback."""
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    text = res.output
    assert "Traceback" not in text and "ExceptionGroup" not in text, text
    return text


# ---------------------------------------------------------------------------------- manifests


def campaign(
    write: Write,
    n: int,
    *,
    name: str = "demo",
    prompt: str = "Fix {{ item }}",
    extra: str = "",
    top: str = "",
    identity: str = "tags",
) -> Path:
    """A campaign of `n` string items `repo-000`...; `top` adds top-level YAML lines (budget,
    rollout), `extra` adds lines to the session (indented 14 spaces)."""
    items = ", ".join(f"repo-{i:03d}" for i in range(n))
    top_lines = "".join(f"        {line}\n" for line in top.splitlines() if line.strip())
    return write(
        f"{name}.yaml",
        f"""
        version: 1
        campaign: {name}
        identity: {identity}
        defaults:
          max_acu_limit: 3
{top_lines}        fleets:
          - name: f
            for_each:
              items: [{items}]
            session:
              prompt: "{prompt}"
              repos: ["acme/{{{{ item }}}}"]
{extra}
        """,
    )


SCHEMA = {
    "type": "object",
    "required": ["verdict", "files_changed"],
    "properties": {
        "verdict": {"type": "string", "enum": ["fixed", "skipped", "blocked"]},
        "files_changed": {"type": "integer", "minimum": 0},
    },
}


def fleet_manifest(write: Write, n: int, *, name: str = "fu", schema: bool = True) -> Path:
    """A campaign of `n` mapping items (repo, team), keyed by repo, with a schema."""
    items = ", ".join(f"{{repo: r-{i:03d}, team: {'ab'[i % 2]}}}" for i in range(n))
    schema_line = f"structured_output_schema: {json.dumps(SCHEMA)}" if schema else ""
    return write(
        f"{name}.yaml",
        f"""
        version: 1
        campaign: {name}
        defaults:
          max_acu_limit: 3
        budget:
          max_total_acu: 500
        fleets:
          - name: f
            key: "{{{{ item.repo }}}}"
            for_each:
              items: [{items}]
            session:
              prompt: "Fix {{{{ item.repo }}}}"
              repos: ["acme/{{{{ item.repo }}}}"]
              {schema_line}
        """,
    )


# The `results` / `report` campaign (test_results.py, test_report.py).
MIGRATION_SCHEMA = {
    "type": "object",
    "required": ["migrated", "files_changed", "blockers", "stats"],
    "properties": {
        "migrated": {"type": "boolean"},
        "files_changed": {"type": "integer", "minimum": 0},
        "pr_url": {"type": "string"},
        "blockers": {"type": "array", "items": {"type": "string", "enum": ["ci", "tests", "owner"]}},
        "stats": {
            "type": "object",
            "required": ["added"],
            "properties": {"added": {"type": "integer"}, "removed": {"type": "integer"}},
        },
    },
}
OUTPUT_COLUMNS = [
    "output.migrated",
    "output.files_changed",
    "output.pr_url",
    "output.blockers",
    "output.stats.added",
    "output.stats.removed",
]
RULE = "output.migrated and 'owner' not in output.blockers"
N_MIGRATIONS = 24


def migration_manifest(write: Write, rule: str | None = RULE) -> Path:
    """`mig`: 24 mapping items with an output schema and (by default) a success rule."""
    items = ", ".join(f"{{repo: r-{i:03d}, team: {'ab'[i % 2]}}}" for i in range(N_MIGRATIONS))
    return write(
        "mig.yaml",
        f"""
        version: 1
        campaign: mig
        defaults:
          max_acu_limit: 3
        budget:
          max_total_acu: 500
        {f"success_when: {json.dumps(rule)}" if rule else ""}
        fleets:
          - name: f
            key: "{{{{ item.repo }}}}"
            for_each:
              items: [{items}]
            session:
              prompt: "Migrate {{{{ item.repo }}}}"
              repos: ["acme/{{{{ item.repo }}}}"]
              structured_output_schema: {json.dumps(MIGRATION_SCHEMA)}
        """,
    )


def expected_outcome(t: dict[str, Any]) -> str:
    """What the rule makes of the API's final session (computed here, not by the launcher)."""
    default = {
        "delivered": "succeeded",
        "finished": "succeeded",
        "invalid_output": "succeeded",
        "blocked": "succeeded",  # delivered (a PR, valid output): the rule judges its report
        "needs_user": "needs-human",
        "error": "failed",
        "suspended": "failed",
    }[t["planned"]]
    if default != "succeeded":
        return default
    out = t.get("structured_output") or {}
    ok = bool(out.get("migrated")) and "owner" not in (out.get("blockers") or [])
    return "succeeded" if ok else "failed"


# Three sessions with a session secret, launched (`launched` in conftest.py: plan --diff, markdown).
LAUNCHED_MANIFEST = """
version: 1
campaign: d
fleets:
  - name: f
    key: "{{ item.repo }}"
    for_each:
      items: [{repo: r-0, acu: 3}, {repo: r-1, acu: 3}, {repo: r-2, acu: 3}]
    session:
      prompt: |
        Upgrade {{ item.repo }} to Python 3.12.
        Open a pull request.
      max_acu_limit: "{{ item.acu }}"
      structured_output_schema: {type: object, properties: {done: {type: boolean}}}
      session_secrets:
        - key: TOKEN
          value: {env: GH_TOKEN}
"""


# ---------------------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> bool:
    """Poll until `predicate()` holds; the bound only turns a hang into a failure (it raises),
    it is not a timing assertion. Returns True, so `assert wait_for(...)` reads naturally."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout} s")
        time.sleep(0.005)
    return True


# ---------------------------------------------------------------------------------- the simulator


def cli_env(sim: SimServer) -> dict[str, str]:
    """The environment that points the CLI at `sim`."""
    return {
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
    }


def point_cli_at(sim: SimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI (and anything reading the environment) at `sim`."""
    for name, value in cli_env(sim).items():
        monkeypatch.setenv(name, value)


def sim_lag(sim: SimServer) -> float:
    """The simulator's list lag: known exactly, so library runs state it (`list_lag`)."""
    return sim.profile.faults.list_lag_seconds


def run_apply(
    plan: Plan,
    sim: SimServer,
    ledger_path: Path,
    *,
    token: str | None = None,
    read_timeout: float = 30.0,
    environ: dict[str, str] | None = None,
    **options: Any,
) -> ApplySummary:
    """Apply `plan` on `sim` through the library (rate 200, concurrency 8 unless given)."""
    cfg = ApiConfig(sim.base_url, sim.org_id, token or sim.token, read_timeout=read_timeout)
    options.setdefault("rate", 200.0)
    options.setdefault("concurrency", 8)
    options.setdefault("list_lag", sim_lag(sim))

    async def go() -> ApplySummary:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as ledger:
                return await apply_plan(
                    plan, client, ledger, ApplyOptions(**options), environ=environ or {}
                )

    return anyio.run(go)


def apply_all(
    plan: Plan, sim: SimServer, ledger: Path, *, environ: dict[str, str] | None = None, **options: Any
) -> None:
    """Launch the whole plan on `sim` through the library; every session must be created."""
    cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
    options.setdefault("rate", 500.0)
    options.setdefault("list_lag", sim_lag(sim))

    async def go() -> None:
        async with DevinClient(cfg) as client:
            with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
                summary = await apply_plan(
                    plan, client, led, ApplyOptions(**options), environ=environ or {}
                )
                assert summary.exit_code == 0, summary.to_json()

    anyio.run(go)


def crash_after_sending(plan: Plan, sim: SimServer, ledger_path: Path, key: str) -> None:
    """A run killed right after `key`'s create reached the API: the plan and the intent are
    in the ledger, the session exists at the simulator, its answer was never recorded."""
    from launcher.ledger.store import EventKind, LedgerEvent

    s = next(x for x in plan.sessions if x.key == key)
    with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as led:
        led.sync_plan(plan)
        led.write_events([LedgerEvent(s.key, EventKind.intent, 1, fingerprint=s.fingerprint)])
    httpx.post(
        f"{sim.base_url}/v3/organizations/{sim.org_id}/sessions",
        json=s.request,
        headers={"Authorization": f"Bearer {sim.token}"},
    ).raise_for_status()


def sessions_per_key(plan: Plan, sim: SimServer) -> Counter[str]:
    """How many of the simulator's sessions carry each planned key's identity, by tag or title
    suffix (`identity: title`)."""
    by_tag = {s.identity_tag: s.key for s in plan.sessions}
    counts: Counter[str] = Counter()
    for s in sim.sessions():
        for tag in markers(s["tags"], s["title"]):
            if tag in by_tag:
                counts[by_tag[tag]] += 1
    return counts


def assert_exactly_once_and_ledger_agrees(plan: Plan, sim: SimServer, ledger_path: Path) -> None:
    counts = sessions_per_key(plan, sim)
    assert counts == {s.key: 1 for s in plan.sessions}, counts
    tag_to_id = {t: s["session_id"] for s in sim.sessions() for t in markers(s["tags"], s["title"])}
    with open_ledger(plan.manifest.path, plan.campaign, ledger_path) as ledger:
        records = ledger.records()
    for s in plan.sessions:
        r = records[s.key]
        assert r.state.launched, (s.key, r.state, r.last_error)
        assert r.session_id == tag_to_id[s.identity_tag]


# ---------------------------------------------------------------------------------- a scripted API


Handler = Callable[[httpx.Request, "ScriptedAPI"], Awaitable[httpx.Response]]


@dataclass
class ScriptedAPI:
    """A tiny Devin API: creates go to `on_create` (a script), lists to `on_list` (default:
    the sessions created so far, filtered by tag)."""

    on_create: Handler
    on_list: Handler | None = None
    on_self: Handler | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    creates: int = 0
    lists: int = 0

    def new_session(self, body: dict[str, Any], at: float = 0.0) -> dict[str, Any]:
        n = len(self.sessions) + 1
        s = {
            "session_id": f"devin-{n:04d}",
            "url": f"https://app.devin.ai/sessions/{n:04d}",
            "status": "new",
            "tags": list(body.get("tags") or []),
            "org_id": "org-test",
            "created_at": at or n,
            "updated_at": at or n,
            "acus_consumed": 0.0,
            "pull_requests": [],
        }
        self.sessions.append(s)
        return s

    def listing(self, request: httpx.Request) -> httpx.Response:
        tags = request.url.params.get_list("tags")
        items = [s for s in self.sessions if set(tags) <= set(s["tags"])]
        return httpx.Response(200, json={"items": items, "end_cursor": None, "has_next_page": False})

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith("/sessions"):
            self.creates += 1
            return await self.on_create(request, self)
        if request.method == "GET" and request.url.path.endswith("/sessions"):
            self.lists += 1
            if self.on_list is not None:
                return await self.on_list(request, self)
            return self.listing(request)
        if request.url.path.endswith("/self"):
            if self.on_self is not None:
                return await self.on_self(request, self)
            return httpx.Response(200, json={"service_user_id": "su-1"})
        return httpx.Response(404, json={"detail": "not found"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


async def created(request: httpx.Request, api: ScriptedAPI) -> httpx.Response:
    return httpx.Response(200, json=api.new_session(json.loads(request.content)))


def session_json(sid: str, status: str, detail: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "session_id": sid,
        "url": f"https://app.devin.ai/sessions/{sid}",
        "status": status,
        "status_detail": detail,
        "tags": ["fleet:fu"],
        "org_id": "org-x",
        "created_at": 1,
        "updated_at": 1,
        "acus_consumed": 0.5,
        "pull_requests": [],
        **extra,
    }


class ScriptedLists:
    """A MockTransport handler: list answers from a script (the last one repeats)."""

    def __init__(self, script: list[int | list[dict[str, Any]]]) -> None:
        self.script = script
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(f"{request.method} {request.url.path}")
        step = self.script[min(len(self.calls) - 1, len(self.script) - 1)]
        if isinstance(step, int):
            return httpx.Response(step, json={"detail": "scripted failure"})
        return httpx.Response(200, json={"items": step, "end_cursor": None, "has_next_page": False})


# ---------------------------------------------------------------------------------- a terminal

BIN_CLI = Path(sys.executable).with_name("devin-fleet")  # the installed console script


def read_terminal(master: int, on_screen: Callable[[str], None] | None = None) -> str:
    """Everything a pseudo-terminal's child draws until it closes the terminal;
    `on_screen(everything drawn so far)` after each read."""
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
        if on_screen is not None:
            on_screen(b"".join(chunks).decode("utf-8", "replace"))
    return b"".join(chunks).decode("utf-8", "replace")


def run_pty(*args: str | Path, cols: int = 120, rows: int = 40, stdin: str = "") -> str:
    """The installed CLI on a pseudo-terminal `cols` wide: what a person sees."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [str(BIN_CLI), *map(str, args)], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)
    if stdin:
        os.write(master, stdin.encode())
    text = read_terminal(master)
    proc.wait(timeout=120)
    os.close(master)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\]8;[^\x1b]*\x1b\\", "", text).replace("\r", "")
