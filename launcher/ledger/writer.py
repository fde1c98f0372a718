"""The ledger writer of an apply run: the one owner of ledger writes during a run, batching
events into group commits in a worker thread (and renewing the campaign lease)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from launcher.ledger.store import EventKind, Ledger, LedgerEvent


class LedgerWriter:
    """The one owner of ledger writes during a run: batches events into group commits.

    Once the run has lost the campaign lease (`fenced`), only facts that a session exists
    (created, adopted) are still written: anything else could overwrite the new holder's rows.
    """

    def __init__(self, ledger: Ledger, redact: Callable[[str], str]) -> None:
        self.ledger = ledger
        self.redact = redact
        self.fenced = False
        self.beat_ok = True
        self.send, self.recv = anyio.create_memory_object_stream[
            tuple[list[LedgerEvent], bool, anyio.Event | None]
        ](max_buffer_size=math.inf)

    async def run(
        self, recv: MemoryObjectReceiveStream[tuple[list[LedgerEvent], bool, anyio.Event | None]]
    ) -> None:
        async with recv:
            async for first in recv:
                batch = [first]
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                events = [e for evs, _, _ in batch for e in evs]
                if self.fenced:
                    events = [e for e in events if e.kind in FACTS]
                beat = any(hb for _, hb, _ in batch) and not self.fenced
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._write, events, beat)
                for _, _, done in batch:
                    if done is not None:
                        done.set()

    def _write(self, events: list[LedgerEvent], beat: bool) -> None:
        if events:
            self.ledger.write_events(events)
        if beat:
            self.beat_ok = self.ledger.heartbeat()

    async def submit(self, *events: LedgerEvent, wait: bool = True) -> None:
        clean = [dataclasses.replace(e, detail=self.redact(e.detail)) if e.detail else e for e in events]
        done = anyio.Event() if wait else None
        await self.send.send((clean, False, done))
        if done is not None:
            await done.wait()

    async def heartbeat(self) -> bool:
        """Renew the lease; False when the lock row is no longer this run's."""
        done = anyio.Event()
        await self.send.send(([], True, done))
        await done.wait()
        return self.beat_ok and not self.fenced


FACTS = frozenset({EventKind.created, EventKind.adopted, EventKind.lock_lost})
