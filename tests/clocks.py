"""Virtual time for tests: `FakeClock` (the launcher's `VirtualClock`, driven without anyio's
0.1 s polls), and linked virtual time: the launcher's clock moving a ManualClock simulator's
over a real loopback port, only while no request is in flight (`virtual`, `apply_virtual`)."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx

from launcher import ApiConfig, ApplyOptions, DevinClient, apply_plan
from launcher.ledger.location import open_ledger
from launcher.run.summary import ApplySummary
from launcher.sim import ManualClock, SimServer
from launcher.sim.clock import VirtualClock
from launcher.spec.plan import Plan

__all__ = ["CountingTransport", "FakeClock", "LinkedClock", "apply_virtual", "virtual"]


async def all_tasks_waiting() -> None:
    """Return once every other task of the loop waits on something (a sleep, an event, a
    thread, a socket) and no callback is queued to wake one (a finished task's done-callbacks,
    a thread's result). anyio's `wait_all_tasks_blocked` sleeps 0.1 s each time it finds a task
    still runnable, which a driven clock meets at almost every step (the task it just woke):
    0.1 s of real time per virtual wake-up. Here each look costs one pass of the scheduler."""
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()
    passes = 0
    while True:
        await asyncio.sleep(0)
        passes += 1
        runnable = any(
            task is not this and (task._fut_waiter is None or task._fut_waiter.done())  # type: ignore[attr-defined]
            for task in asyncio.all_tasks()
        )
        # Queued callbacks (`loop._ready`) may wake a task; one that keeps queueing itself
        # (anyio retrying a cancellation into a shielded wait) is not waited on forever.
        if not runnable and (not loop._ready or passes > 100):  # type: ignore[attr-defined]
            return
        if runnable:
            passes = 0


class FakeClock(VirtualClock):
    """`VirtualClock`, driven the same way (time moves to the earliest sleeper's deadline once
    every task waits and no worker thread is busy), but seeing "every task waits" at once.

    `inline_threads=True` runs what the code under test hands to a worker thread (ledger
    calls) in the loop's own thread while `run` lasts: tasks woken at one virtual instant then
    go on in one fixed order, not in the order real threads happen to finish (two creates
    admitted at once each check the lease in a thread before sending: which reaches the
    server first was a coin toss). For runs whose assertions depend on that order."""

    def __init__(self, start: float = 1000.0, *, inline_threads: bool = False) -> None:
        super().__init__(start)
        self.inline_threads = inline_threads

    async def run(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        if not self.inline_threads:
            return await super().run(fn)
        real = anyio.to_thread.run_sync

        async def inline(func: Callable[..., Any], *args: Any, **_: Any) -> Any:
            await anyio.lowlevel.checkpoint()
            return func(*args)

        anyio.to_thread.run_sync = inline  # type: ignore[assignment]
        try:
            return await super().run(fn)
        finally:
            anyio.to_thread.run_sync = real  # type: ignore[assignment]

    def _ready(self) -> bool:
        """Whether time may move now (no worker thread busy: a ledger write finishes first)."""
        return not anyio.to_thread.current_default_thread_limiter().borrowed_tokens

    async def drive(self) -> None:
        while True:
            await all_tasks_waiting()
            if not self._ready() or not self._sleepers:
                await anyio.sleep(0.001)
                continue
            when, _, ev = heapq.heappop(self._sleepers)
            self._advance(when)
            ev.set()

    def _advance(self, when: float) -> None:
        self.t = max(self.t, when)


class CountingTransport(httpx.AsyncBaseTransport):
    """Real HTTP over loopback, counting the requests in flight (the clock waits for them)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.in_flight = 0
        self._idle = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.in_flight += 1
        try:
            resp = await self.inner.handle_async_request(request)
            content = await resp.aread()
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self._idle.set()
        return httpx.Response(resp.status_code, headers=resp.headers, content=content)

    async def idle(self) -> None:
        """Return once no request is in flight (woken by the last answer, not by polling)."""
        while self.in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def aclose(self) -> None:
        await self.inner.aclose()


class LinkedClock(FakeClock):
    """The launcher's virtual clock; each step forward moves the simulator's ManualClock too.
    Time moves only when every task waits, no ledger write is in a thread and no request is in
    flight: a run's waits are exact, and the simulator sees the same seconds pass."""

    def __init__(self, sim: ManualClock, transport: CountingTransport) -> None:
        super().__init__()
        self.sim = sim
        self.transport = transport

    async def drive(self) -> None:
        while True:
            await all_tasks_waiting()
            if self.transport.in_flight:
                await self.transport.idle()
                continue
            if not self._ready() or not self._sleepers:
                await anyio.sleep(0.001)
                continue
            when, _, ev = heapq.heappop(self._sleepers)
            self._advance(when)
            ev.set()

    def _advance(self, when: float) -> None:
        if when > self.t:
            self.sim.advance(when - self.t)
            self.t = when


def virtual(sim: SimServer, go: Callable[[DevinClient, LinkedClock], Awaitable[Any]]) -> Any:
    """Run `go(client, clock)` against `sim` on linked virtual time."""
    assert isinstance(sim.clock, ManualClock)
    transport = CountingTransport()
    clock = LinkedClock(sim.clock, transport)

    async def main() -> Any:
        cfg = ApiConfig(sim.base_url, sim.org_id, sim.token)
        async with DevinClient(cfg, transport=transport) as client:
            return await clock.run(lambda: go(client, clock))

    return anyio.run(main)


def apply_virtual(plan: Plan, sim: SimServer, ledger: Path, **options: Any) -> ApplySummary:
    options.setdefault("rate", 200.0)

    async def go(client: DevinClient, clock: LinkedClock) -> ApplySummary:
        with open_ledger(plan.manifest.path, plan.campaign, ledger) as led:
            return await apply_plan(plan, client, led, ApplyOptions(**options), clock=clock, environ={})

    result: ApplySummary = virtual(sim, go)
    return result
