"""The campaign lease as one run keeps it: acquire, the heartbeat task, the fence check before
every send, and the loss signal. apply, rollout (while following) and message all use this one.

Fencing: the store's lock row carries a generation that every acquisition bumps. A run sends
only while its last successful heartbeat is younger than half the TTL (on its own clock) and the
row still carries its generation; others may take the lease only after a whole TTL of silence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import anyio

from launcher.api.pacing import Clock, MonotonicClock
from launcher.errors import FleetError, LedgerError, LockedError
from launcher.ledger.records import LOCK_TTL, LockLease
from launcher.ledger.store import LedgerStore, off_loop

RELEASE_DEADLINE = 10.0  # seconds a release may take at the end of a run (shielded)
ACQUIRE_EVERY = 0.5  # seconds between tries while another run holds the lease


class Lease:
    """One run's hold on a campaign. Every store call runs off the event loop."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        ttl: float = LOCK_TTL,
        clock: Clock | None = None,
        every: float | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.clock: Clock = clock or MonotonicClock()
        self.every = min(every, ttl / 6) if every is not None else ttl / 6
        self.lost = anyio.Event()  # set once, when the lease is found lost
        self.why: str | None = None
        self.last_beat = self.clock.now()
        self._listeners: list[Callable[[str], None]] = []

    async def acquire(self, wait: float = 0.0) -> LockLease:
        """Take the lease; while another live run holds it, try again for up to `wait`
        seconds, then LockedError (it names the holder and since when)."""
        deadline = self.clock.now() + wait
        while True:
            try:
                lease = await off_loop(self.store.acquire_lock, ttl=self.ttl)
                break
            except LockedError:
                left = deadline - self.clock.now()
                if left <= 0:
                    raise
                await self.clock.sleep(min(ACQUIRE_EVERY, left))
        self.last_beat = self.clock.now()
        return lease

    async def release(self) -> None:
        """Free the lease if it is still ours; shielded, and never raises (end of a run)."""
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(RELEASE_DEADLINE),
            contextlib.suppress(FleetError),
        ):
            await off_loop(self.store.release_lock)

    def on_lost(self, listener: Callable[[str], None]) -> None:
        """Call `listener(why)` once, when the lease is found lost."""
        self._listeners.append(listener)

    def lose(self, why: str) -> None:
        if self.lost.is_set():
            return
        self.why = why
        self.lost.set()
        for listener in self._listeners:
            listener(why)

    async def renew(self) -> bool:
        """One heartbeat. A store error is a missed beat (the fence stops sends once beats
        are missing for half the TTL); a lock row that is no longer ours is a loss."""
        started = self.clock.now()
        try:
            ok = await off_loop(self.store.heartbeat)
        except LedgerError:
            return False
        if not ok:
            self.lose("the lock row is no longer this run's: another run took the campaign over")
            return False
        self.last_beat = started
        return True

    async def keep(self) -> None:
        """The heartbeat task: renew every TTL/6 until cancelled or the lease is lost."""
        while not self.lost.is_set():
            await self.clock.sleep(self.every)
            await self.renew()

    async def held(self) -> bool:
        """The fence, checked right before every send: the last successful heartbeat is
        younger than half the TTL, and the lock row still carries this run's generation."""
        if self.lost.is_set():
            return False
        age = self.clock.now() - self.last_beat
        if age > self.ttl / 2:
            self.lose(f"no successful heartbeat for {age:.1f}s (the lease lasts {self.ttl:g}s)")
            return False
        if not await off_loop(self.store.holds_lock):
            self.lose("another run took the campaign lock over")
            return False
        return True
