"""Another process that holds a campaign's lease, through the store (any backend): a live one
until the block ends, or one that took it and died without releasing it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

_HOLD = """
import os, sys
from pathlib import Path
from launcher.ledger.location import open_ledger
led = open_ledger(Path("."), {campaign!r}, {location!r})
if {takeover}:
    led.acquire_lock(ttl=0.0)  # SQLite: with a TTL of 0 every holder is stale, taken over
else:
    led.acquire_lock()
print(led.lock_holder().owner, flush=True)
if {die}:
    os._exit(0)
sys.stdin.read()
"""


def _start(
    location: str, campaign: str, die: bool, takeover: bool = False
) -> tuple[subprocess.Popen[str], str]:
    code = _HOLD.format(location=str(location), campaign=campaign, die=die, takeover=takeover)
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    owner = proc.stdout.readline().strip()
    assert owner, "the holder process did not take the lease"
    return proc, owner


@contextmanager
def live_holder(location: str, campaign: str, *, takeover: bool = False) -> Iterator[str]:
    """Another live process holds the lease while the block runs; yields its owner (host:pid).
    `takeover` (SQLite): it takes the lease over from whoever holds it, in one transaction
    (as `unlock` then apply would, without the gap in which the holder could take it back)."""
    proc, owner = _start(location, campaign, die=False, takeover=takeover)
    try:
        yield owner
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def dead_holder(location: str, campaign: str) -> str:
    """A process on this host took the lease and ended without releasing it; its owner."""
    proc, owner = _start(location, campaign, die=True)
    proc.wait(timeout=30)
    return owner
