"""List lag: how long a created session takes to show up in a tag listing, measured during an
apply from creates that did answer, and the bound a run plans with before it has a figure (the
stated lag, else what an earlier run measured on the org, else ASSUMED_LIST_LAG): no create
and no resend rests on a listing too young."""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import TaskGroup

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock, sleep_unless
from launcher.errors import APIError, AuthError

LAG_PROBE_STEP = 0.25  # seconds between looks while measuring
LAG_PROBE_CAP = 60.0  # a session not listed after this long: the lag is at least this
LAG_SAMPLES = 3
# With nothing measured and nothing stated (`--list-lag`): the API documents no bound, the most
# seen is 5 s (issue 23's reproductions); twice that. A guess, said so in the README.
ASSUMED_LIST_LAG = 10.0
# A list lag an earlier run measured on the org (kept in the ledger) stands in for a measurement
# this long; then the org is treated as unknown again.
REMEMBERED_FOR = 7 * 86400.0
# At the end of a run that created on an org whose lag is unknown, the first figure is waited
# for this long at most (the next run then plans with it, not with ASSUMED_LIST_LAG).
LAG_SETTLE = 2.0


class LagProbe:
    """Started at a run's first ambiguous create, or its first create when nothing is stated:
    takes the latest created session and lists its identity tag every LAG_PROBE_STEP until it
    shows; the time from the create's answer is one sample (an upper bound within a step). Up
    to LAG_SAMPLES samples; `lag` is the most (kept in the ledger for the org's next runs)."""

    def __init__(self, client: DevinClient, clock: Clock, stop: anyio.Event) -> None:
        self.client = client
        self.clock = clock
        self.stop = stop
        self.samples: list[float] = []
        # the org's lag an earlier run measured, and how long ago (`remember`)
        self.remembered: tuple[float, float] | None = None
        # (identity tag, session id to list by instead, or None; clock time)
        self.last_created: tuple[str, str | None, float] | None = None
        self.running = False
        self.first = anyio.Event()

    @property
    def lag(self) -> float:
        return max(self.samples, default=0.0)

    def remember(self, figure: tuple[float, float] | None, now: float) -> None:
        """Take the org's lag an earlier run measured (`figure`: lag, Unix time measured),
        unless it is older than REMEMBERED_FOR."""
        if figure is not None and 0 <= now - figure[1] <= REMEMBERED_FOR:
            self.remembered = (figure[0], now - figure[1])

    def bound(self, stated: float | None) -> float:
        """The list lag to plan with: twice the most measured (plus a step), at least the
        stated lag; with no figure this run, the stated lag, else twice what an earlier run
        measured on the org (plus a step), else ASSUMED_LIST_LAG (never zero by default: a
        listing is not trusted before the lag is known)."""
        if self.samples:
            return max(stated or 0.0, 2 * self.lag + LAG_PROBE_STEP)
        if stated is not None:
            return stated
        if self.remembered is not None:
            return 2 * self.remembered[0] + LAG_PROBE_STEP
        return ASSUMED_LIST_LAG

    def basis(self, stated: float | None) -> str:
        """Where `bound` comes from, as the run says it."""
        if self.samples:
            return f"twice the {self.lag:.1f}s measured in this run"
        if stated is not None:
            return "stated"
        if self.remembered is not None:
            lag, age = self.remembered
            return f"twice the {lag:.1f}s measured on this org {_age(age)} ago"
        return "assumed: nothing measured on this org yet"

    def lookup_wait(
        self, grace: float, in_transit: float | None = None, stated: float | None = None
    ) -> float:
        """How long after an ambiguous outcome to look its identity tag up: `grace`, at least
        the list lag bound (never the grace alone when nothing was measured: the stated lag,
        else ASSUMED_LIST_LAG), and `in_transit` (the request timeout, when the request got no
        answer), so a create still in transit has landed and shows."""
        wait = max(grace, self.bound(stated))
        return wait if in_transit is None else max(wait, in_transit)

    def created(self, identity_tag: str, session_id: str | None = None) -> None:
        """A create answered; `session_id` when the session is listed by its id (a title
        identity has no tag of its own to list)."""
        self.last_created = (identity_tag, session_id, self.clock.now())

    def start(self, tg: TaskGroup) -> None:
        if not self.running:
            self.running = True
            tg.start_soon(self._run)

    async def first_figure(self) -> None:
        """Wait for the first sample when one is being taken (else return at once)."""
        if self.running and not self.samples and self.last_created is not None:
            await self.first.wait()

    async def settle(self, stated: float | None, note: Callable[[str], None]) -> None:
        """At a run's end, when the org's lag is unknown (nothing stated, measured or
        remembered) and the first sample is being taken: wait for it, LAG_SETTLE at most."""
        if stated is not None or self.remembered is not None or not self.running or self.samples:
            return
        note(f"measuring this org's list lag for the next runs ({LAG_SETTLE:g}s at most)")
        deadline = self.clock.now() + LAG_SETTLE
        while not (self.samples or self.stop.is_set()) and (left := deadline - self.clock.now()) > 0:
            await sleep_unless(self.clock, min(left, LAG_PROBE_STEP), self.first)

    async def _run(self) -> None:
        try:
            measured_at = -1.0
            for _ in range(LAG_SAMPLES):
                while self.last_created is None or self.last_created[2] <= measured_at:
                    if self.stop.is_set():
                        return
                    await self.clock.sleep(LAG_PROBE_STEP)
                tag, session_id, answered = self.last_created
                measured_at = answered
                if not await self._sample(tag, session_id, answered):
                    return
        finally:
            self.first.set()

    async def _sample(self, tag: str, session_id: str | None, answered: float) -> bool:
        while not self.stop.is_set():
            try:
                if session_id is None:
                    seen = [x async for x in self.client.list_sessions(tags=[tag])]
                else:
                    seen = [x async for x in self.client.list_sessions(session_ids=[session_id])]
            except AuthError:
                return False
            except APIError:
                seen = []
            waited = self.clock.now() - answered
            if seen or waited > LAG_PROBE_CAP:
                self.samples.append(max(0.0, waited))
                self.first.set()
                return True
            await self.clock.sleep(LAG_PROBE_STEP)
        return False


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 129600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
