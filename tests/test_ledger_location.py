"""Where a ledger lives: a plain path, `sqlite:` URLs, a server URL (its password never shown),
an unknown scheme refused clearly; the CLI takes any of them in `--ledger`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from launcher import build_plan, load_manifest
from launcher.cli import cli
from launcher.errors import LedgerError
from launcher.ledger.location import (
    default_ledger_path,
    describe,
    ledger_exists,
    ledger_location,
    open_ledger,
    redact_url,
)
from launcher.ledger.records import EventKind, LedgerEvent
from tests.helpers import fleet_manifest

Write = Callable[[str, str], Path]


def test_paths_and_sqlite_urls_name_the_same_file(tmp_path: Path) -> None:
    target = tmp_path / "a" / "l.db"
    with open_ledger(Path("."), "c", f"sqlite:///{target}") as led:
        led.record_wave(1, "passed")
    for location in (str(target), f"sqlite://{target}", f"sqlite:{target}", target):
        assert ledger_exists(Path("."), "c", location)
        with open_ledger(Path("."), "c", location, create=False) as led:
            assert [w["wave"] for w in led.wave_log()] == [1]
    manifest = tmp_path / "m.yaml"
    assert ledger_location(manifest, "c") == str(default_ledger_path(manifest, "c"))
    assert default_ledger_path(manifest, "c") == tmp_path / ".devin-fleet" / "c.db"


def test_an_unknown_scheme_or_an_empty_url_is_refused_with_a_hint() -> None:
    with pytest.raises(LedgerError, match="unknown ledger location 'mysql://h/db'") as info:
        open_ledger(Path("."), "c", "mysql://h/db")
    assert "postgresql://" in (info.value.hint or "")
    with pytest.raises(LedgerError, match="names no file"):
        open_ledger(Path("."), "c", "sqlite://")


def test_a_password_in_a_ledger_url_is_never_shown() -> None:
    url = "postgresql://fleet:s3cr3t@db.example:5432/fleet?sslmode=require&password=other"
    shown = redact_url(url)
    assert "s3cr3t" not in shown and "other" not in shown
    assert shown == "postgresql://fleet:***@db.example:5432/fleet?sslmode=require&password=***"
    assert describe(url) == shown and describe("/a/b.db") == "/a/b.db"
    assert redact_url("postgresql://fleet@db/x") == "postgresql://fleet@db/x"


def test_the_cli_reads_a_ledger_given_as_a_url(write: Write, tmp_path: Path) -> None:
    path = fleet_manifest(write, 2)
    plan = build_plan(load_manifest(path))
    ledger = tmp_path / "l.db"
    with open_ledger(path, plan.campaign, ledger) as led:
        led.sync_plan(plan)
        led.write_events([LedgerEvent("r-000", EventKind.created, session_id="devin-1")])
    res = CliRunner().invoke(cli, ["plan", str(path), "--ledger", f"sqlite:///{ledger}", "-o", "json"])
    assert res.exit_code == 0, res.output
    changes = {s["key"]: s["change"] for s in json.loads(res.stdout)["sessions"]}
    assert changes == {"r-000": "=", "r-001": "+"}


def test_a_server_that_cannot_be_reached_is_one_message_without_the_password() -> None:
    pytest.importorskip("psycopg")
    url = "postgresql://fleet:hunter2@127.0.0.1:1/fleet?connect_timeout=2"
    with pytest.raises(LedgerError) as info:
        open_ledger(Path("."), "c", url)
    text = f"{info.value.message} {info.value.hint} {info.value.path}"
    assert "hunter2" not in text and "fleet:***@127.0.0.1:1" in text
    assert info.value.message.startswith("cannot connect to ledger postgresql://")
