"""Test helpers for the executor's unit tests: a fake clock whose sleeps advance virtual time
(so backoffs, heartbeats, grace waits and timeouts take no real time), and a scripted Devin API
behind `httpx.MockTransport` (for branches reached otherwise only by long seeded fault runs)."""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx


class FakeClock:
    """`pacing.Clock` on virtual time. `drive()` (run it beside the code under test) moves time
    to the earliest sleeper's deadline whenever every task is blocked and no worker thread
    (the ledger writer) is busy: waits cost nothing, and their order is the deadlines' order."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._n = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
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
