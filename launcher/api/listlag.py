"""List lag: how long a created session takes to show up in a tag listing, measured during an
apply from creates that did answer, and the bound a run plans with before it has a figure (the
stated lag, else ASSUMED_LIST_LAG): no create and no resend rests on a listing too young."""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup

from launcher.api.client import DevinClient
from launcher.api.pacing import Clock
from launcher.errors import APIError, AuthError

LAG_PROBE_STEP = 0.25  # seconds between looks while measuring
LAG_PROBE_CAP = 60.0  # a session not listed after this long: the lag is at least this
LAG_SAMPLES = 3
# With nothing measured and nothing stated (`--list-lag`): the API documents no bound, the most
# seen is 5 s (issue 23's reproductions); twice that. A guess, said so in the README.
ASSUMED_LIST_LAG = 10.0


class LagProbe:
    """Started at a run's first ambiguous create: takes the latest created session and lists
    its identity tag every LAG_PROBE_STEP until it shows; the time from the create's answer is
    one sample (an upper bound within a step). Up to LAG_SAMPLES samples; `lag` is the most."""

    def __init__(self, client: DevinClient, clock: Clock, stop: anyio.Event) -> None:
        self.client = client
        self.clock = clock
        self.stop = stop
        self.samples: list[float] = []
        # (identity tag, session id to list by instead, or None; clock time)
        self.last_created: tuple[str, str | None, float] | None = None
        self.running = False
        self.first = anyio.Event()

    @property
    def lag(self) -> float:
        return max(self.samples, default=0.0)

    def bound(self, stated: float | None) -> float:
        """The list lag to plan with: twice the most measured (plus a step), at least the
        stated lag; with no figure, the stated lag, else ASSUMED_LIST_LAG (never zero by
        default: a listing is not trusted before the lag is known)."""
        if self.samples:
            return max(stated or 0.0, 2 * self.lag + LAG_PROBE_STEP)
        return ASSUMED_LIST_LAG if stated is None else stated

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
