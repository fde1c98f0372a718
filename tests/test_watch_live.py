"""`status --watch` on a terminal redraws one live table in place (a real process whose stderr
is a pseudo-terminal); without a terminal it prints one line per refresh. The simulator's
clock moves only when the test says so: sessions stay running until the table was drawn twice."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from launcher import build_plan, load_manifest
from launcher.sim import ManualClock, SimServer
from tests.helpers import apply_all, fleet_manifest, read_terminal

Write = Callable[[str, str], Path]
CURSOR_UP = "\x1b[1A"


def watch(
    path: Path,
    sim: SimServer,
    ledger: Path,
    *,
    tty: bool,
    on_screen: Callable[[str], None] = lambda _: None,
) -> tuple[int, str, str]:
    """Run `status --watch`; on a terminal, `on_screen(everything drawn so far)` after each read."""
    env = {
        **os.environ,
        "DEVIN_API_KEY": sim.token,
        "DEVIN_ORG_ID": sim.org_id,
        "DEVIN_API_BASE_URL": sim.base_url,
        "TERM": "xterm",
    }
    env.pop("NO_COLOR", None)
    cmd = [sys.executable, "-m", "launcher", "status", str(path), "--ledger", str(ledger)]
    cmd += ["--watch", "--interval", "0.2", "--timeout", "60", "-o", "json"]
    if not tty:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        return proc.returncode, proc.stdout, proc.stderr
    master, slave = pty.openpty()
    proc2 = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    term = read_terminal(master, on_screen)
    out, _ = proc2.communicate(timeout=120)
    os.close(master)
    return proc2.returncode, out.decode(), term


def test_watch_redraws_in_place_on_a_terminal_and_prints_lines_otherwise(
    write: Write, make_sim: Callable[..., SimServer], tmp_path: Path
) -> None:
    clock = ManualClock()
    sim = make_sim("mixed", seed=1, clock=clock)
    path = fleet_manifest(write, 12)
    ledger = tmp_path / "l.db"
    apply_all(build_plan(load_manifest(path)), sim, ledger)

    def end_once_drawn_twice(screen: str) -> None:
        if screen.count("campaign fu") >= 2 and clock.now() < end:
            clock.advance(end - clock.now())  # every session ends: the watch exits

    end = clock.now() + 1e6
    code, out, term = watch(path, sim, ledger, tty=True, on_screen=end_once_drawn_twice)
    assert code == 3, term
    assert '"campaign": "fu"' in out  # stdout keeps the JSON only
    assert "campaign fu" in term and "next refresh in" in term  # the live table and its header
    assert CURSOR_UP in term  # redrawn in place, not appended
    assert term.count("campaign fu") >= 2  # more than one refresh drew the same table

    code, out, err = watch(path, sim, ledger, tty=False)
    assert code == 3
    assert CURSOR_UP not in err and "\x1b[" not in err and "campaign fu" not in err
    assert all("requests)" in line for line in err.splitlines() if line.startswith("["))
