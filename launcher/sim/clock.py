"""The simulator's time source: real time by default, a `ManualClock` that tests advance; and
`VirtualClock`, the launcher's clock on virtual time (tests, `bench/`, the pacing model).

Everything time-dependent in the simulator reads one clock: session lifecycles (scaled by
`time_scale` simulated seconds per clock second), timestamps, list lag, the rate-limit token
bucket, and the waits of the latency and delayed-response faults. A clock reads seconds on the
Unix epoch scale (timestamps in API bodies come from it).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

# How often a wait on a ManualClock looks at the clock again (real seconds).
_POLL = 0.002


class SimClock(Protocol):
    """What the simulator asks of time."""

    def now(self) -> float:
        """Seconds on the Unix epoch scale; never goes backwards."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` of this clock have passed."""
        ...


class RealClock:
    """Wall time at creation, then advanced by the monotonic clock (immune to clock jumps)."""

    def __init__(self) -> None:
        self._wall = time.time()
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._wall + (time.monotonic() - self._mono)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class ManualClock:
    """Time that moves only when a test calls `advance` (from any thread).

    `sleep` waits (in the server's loop) until the clock has been advanced far enough;
    `sleeping` counts the waits in progress, so a test can see that a request is being held.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._sleeping = 0

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError(f"time cannot go backwards ({seconds})")
        with self._lock:
            self._now += seconds
            return self._now

    @property
    def sleeping(self) -> int:
        """How many `sleep` calls are waiting for the clock to advance."""
        with self._lock:
            return self._sleeping

    async def sleep(self, seconds: float) -> None:
        until = self.now() + seconds
        with self._lock:
            self._sleeping += 1
        try:
            # `advance` runs in another thread (the test's): polling is simpler than a
            # cross-thread wake-up, and this clock only ever serves tests.
            while self.now() < until:  # noqa: ASYNC110
                await anyio.sleep(_POLL)
        finally:
            with self._lock:
                self._sleeping -= 1


class VirtualClock:
    """The launcher's clock (`pacing.Clock`) on virtual time, for tests and models. `drive()`
    (run it beside the code under test; `run(fn)` does both) moves time to the earliest
    sleeper's deadline whenever every task is blocked and no worker thread (the ledger writer)
    is busy: waits cost nothing, and their order is the deadlines' order. `sleeps` records
    every sleep asked for; a model that moves time itself sets `t`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._n = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        ev = anyio.Event()
        heapq.heappush(self._sleepers, (self.t + seconds, next(self._n), ev))
        await ev.wait()

    async def drive(self) -> None:
        limiter = anyio.to_thread.current_default_thread_limiter()
        while True:
            await anyio.wait_all_tasks_blocked()
            if limiter.borrowed_tokens:  # a ledger write is in a thread: let it finish
                await anyio.sleep(0.001)
                continue
            if self._sleepers:
                when, _, ev = heapq.heappop(self._sleepers)
                self.t = max(self.t, when)
                ev.set()
            else:
                await anyio.sleep(0.001)

    async def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fn()` with this clock driven; returns its result."""
        result: list[Any] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.drive)
            result.append(await fn())
            tg.cancel_scope.cancel()
        return result[0]
