"""`devin-fleet sim`: a real process that prints what to export and serves until stopped."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx


def test_sim_command_prints_exports_serves_and_stops_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "launcher",
            "sim",
            "--port",
            "0",
            "--token",
            "cog_cli_test",
            "--org",
            "org-cli",
            "--profile",
            "mixed",
            "--introspection",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        env: dict[str, str] = {}
        assert proc.stdout is not None
        for _ in range(4):
            m = re.match(r"export (\w+)=(\S+)", proc.stdout.readline().strip())
            assert m, "expected an export line"
            env[m.group(1)] = m.group(2)
        assert env["DEVIN_API_KEY"] == "cog_cli_test" and env["DEVIN_ORG_ID"] == "org-cli"
        # the simulator's list lag, known exactly: apply states it instead of assuming 10 s
        assert float(env["DEVIN_FLEET_LIST_LAG"]) >= 0
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", env["DEVIN_API_BASE_URL"])
        base = env["DEVIN_API_BASE_URL"]
        me = httpx.get(f"{base}/v3/self", headers={"Authorization": "Bearer cog_cli_test"}, timeout=10)
        assert me.status_code == 200
        assert httpx.get(f"{base}/v3/self", timeout=10).status_code == 401
        assert httpx.get(f"{base}/_sim/stats", timeout=10).json()["requests"]["GET /v3/self"] == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, errs = proc.communicate(timeout=15)
    assert proc.returncode == 0, errs
    assert "Traceback" not in errs
