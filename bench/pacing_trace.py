"""`devin-fleet` with a send trace, for bench/pacing_bench.py --trace: the real CLI in its own
process, its pacer's admissions and its creates recorded, written as JSON at exit.

    PACING_TRACE=/tmp/trace.json python bench/pacing_trace.py apply campaign.yaml --yes ...

For every create: its title, when the pacer admitted it (the ticket's send time), the rate it
was paced at, and when the API client was called (after apply's fence), all on the machine's
monotonic clock, which the simulator's `/_sim/creates` also uses. Nothing else changes: this
wraps two methods and then runs the CLI's `main`.
"""

from __future__ import annotations

import atexit
import contextvars
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from launcher.api.client import CreateResult, DevinClient
from launcher.api.pacing import Pacer, Ticket
from launcher.cli import main

_ticket: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("ticket", default=None)
_sends: list[dict[str, Any]] = []
_acquire = Pacer.acquire
_create = DevinClient.create_session


async def _traced_acquire(self: Pacer, *args: Any, **kwargs: Any) -> Ticket | None:
    ticket = await _acquire(self, *args, **kwargs)
    _ticket.set(ticket)  # the task that sends it reads it back (same task, same context)
    return ticket


async def _traced_create(self: DevinClient, body: Mapping[str, Any]) -> CreateResult:
    called = time.monotonic()
    ticket = _ticket.get()
    result = await _create(self, body)
    _sends.append(
        {
            "title": body.get("title"),
            "ticket": ticket.at if ticket else None,
            "rate": ticket.rate if ticket else None,
            "called": called,
            "answered": time.monotonic(),
            "outcome": str(result.outcome),
        }
    )
    return result


def _dump() -> None:
    Path(os.environ["PACING_TRACE"]).write_text(json.dumps(_sends))


if __name__ == "__main__":
    Pacer.acquire = _traced_acquire  # type: ignore[method-assign]
    DevinClient.create_session = _traced_create  # type: ignore[method-assign]
    atexit.register(_dump)
    sys.argv[0] = "devin-fleet"
    main()
