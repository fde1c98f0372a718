"""The running ceiling (`max_running`): an `Admission` holding each launch while the campaign has
that many sessions not final (one listing by the campaign tag, plus those admitted since that it
may not show yet), polling with backoff through the injected clock."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock, MonotonicClock, sleep_unless
from launcher.errors import APIError, AuthError, ConfigError
from launcher.run.status import classify
from launcher.run.summary import Result
from launcher.spec.identity import session_markers
from launcher.spec.plan import Plan

NOTE_EVERY = 30.0  # seconds between two "holding" notes


class RunningCeiling:
    """An `apply.Admission` that keeps at most `limit` of the campaign's sessions not final.

    Running = sessions carrying the campaign tag whose status is not final in the last listing
    + sessions admitted and not finished launching + launched ones the listing did not show
    yet (list lag). It over-counts rather than under-counts: the ceiling is never exceeded by
    anything this process launches.
    """

    def __init__(
        self,
        plan: Plan,
        client: DevinClient,
        limit: int,
        *,
        clock: Clock | None = None,
        interval: float = 2.0,
        max_interval: float = 30.0,
        note: Callable[[str], None] | None = None,
    ) -> None:
        if limit < 1:
            raise ConfigError.invalid("max_running", "must be at least 1", limit)
        self.plan = plan
        self.client = client
        self.limit = limit
        self.clock = clock or MonotonicClock()
        self.interval = interval
        self.max_interval = max_interval
        self.note = note or (lambda _m: None)
        self.tag_key = {s.identity_tag: s.key for s in plan.sessions}
        self.pending: set[str] = set()  # admitted, launch not finished
        self.launched: set[str] = set()  # created/adopted by this process
        self.listed: set[str] = set()  # keys the last listing showed (any state)
        self.listed_running = 0
        self.listings = 0
        self.holds = 0  # times a launch had to wait
        self._noted: float | None = None  # when a hold was last said

    @property
    def running(self) -> int:
        return self.listed_running + len(self.pending) + len(self.launched - self.listed)

    async def _list(self) -> None:
        running, listed = 0, set()
        async for s in self.client.list_sessions(tags=[self.plan.campaign_tag]):
            if not classify(s.status, s.status_detail, delivered=False).final:
                running += 1
            key = next((self.tag_key[t] for t in session_markers(s) if t in self.tag_key), None)
            if key is not None:
                listed.add(key)
        self.listed_running, self.listed = running, listed
        self.listings += 1

    async def _list_retrying(self, stop: anyio.Event, tries: int = 5) -> None:
        """`_list`, retrying a failed listing (5xx, network) with a pause; raises after `tries`
        (an error then ends the run; in-flight creates are reconciled by the next one)."""
        for attempt in range(1, tries + 1):
            try:
                await self._list()
                return
            except AuthError:
                raise
            except APIError as exc:
                if attempt == tries:
                    raise
                self.note(f"listing the campaign failed, retrying: {exc.message}")
                await sleep_unless(self.clock, self.interval * attempt, stop)
                if stop.is_set():
                    return

    async def admit(self, key: str, stop: anyio.Event) -> bool:
        wait: float | None = None
        if self.listings == 0:
            await self._list_retrying(stop)
        while not stop.is_set():
            if self.running < self.limit:
                self.pending.add(key)
                return True
            before = self.running
            await self._list_retrying(stop)
            if self.running < self.limit or stop.is_set():
                continue
            if wait is None:  # a new hold; said at most every NOTE_EVERY (a big fleet holds often)
                self.holds += 1
                if self._noted is None or self.clock.now() - self._noted >= NOTE_EVERY:
                    self._noted = self.clock.now()
                    self.note(f"holding: {self.running} running (ceiling {self.limit})")
            if wait is None or self.running != before:
                wait = self.interval
            else:
                wait = min(self.max_interval, wait * 1.5)
            await sleep_unless(self.clock, wait, stop)
        return False

    def done(self, key: str, result: Result) -> None:
        self.pending.discard(key)
        if result in (Result.created, Result.adopted):
            self.launched.add(key)
