"""The ledger writer of an apply run: the one owner of ledger writes during a run, batching
events into group commits in a worker thread (off the event loop)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from launcher.errors import LockLostError
from launcher.ledger.records import FACTS, LedgerEvent
from launcher.ledger.store import LedgerStore

_Batch = tuple[list[LedgerEvent], anyio.Event | None]


class LedgerWriter:
    """The one owner of ledger writes during a run: batches events into group commits.

    Once the run has lost the campaign lease (`fenced`), only facts that a session exists
    (created, adopted) are still written: anything else could overwrite the new holder's rows.
    """

    def __init__(
        self,
        ledger: LedgerStore,
        redact: Callable[[str], str],
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.ledger = ledger
        self.redact = redact
        self.on_lost = on_lost  # told when the store refuses a write: the lease was taken over
        self.fenced = False
        self.send, self.recv = anyio.create_memory_object_stream[_Batch](max_buffer_size=math.inf)

    async def run(self, recv: MemoryObjectReceiveStream[_Batch]) -> None:
        async with recv:
            async for first in recv:
                batch = [first]
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                events = [e for evs, _ in batch for e in evs]
                if self.fenced:
                    events = [e for e in events if e.kind in FACTS]
                if events:
                    with anyio.CancelScope(shield=True):
                        try:
                            await anyio.to_thread.run_sync(self.ledger.write_events, events)
                        except LockLostError as exc:  # the facts were kept; the rest refused
                            self.fenced = True
                            if self.on_lost is not None:
                                self.on_lost(exc.message)
                for _, done in batch:
                    if done is not None:
                        done.set()

    async def submit(self, *events: LedgerEvent, wait: bool = True) -> None:
        clean = [dataclasses.replace(e, detail=self.redact(e.detail)) if e.detail else e for e in events]
        done = anyio.Event() if wait else None
        await self.send.send((clean, done))
        if done is not None:
            await done.wait()
