"""The store seam: `LedgerStore`, what every ledger backend does (SQLite, PostgreSQL), and what
they share (the tables a copy moves, who holds a lease, running store calls off the event loop).

A store keeps one campaign: one row per planned session, an append-only log of every attempt
and its outcome, the lease that keeps two runs of the campaign apart, messages, rollout waves
and earlier launch attempts. No secret value ever enters it.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio

from launcher.errors import LockLostError
from launcher.ledger.records import (
    LOCK_TTL,
    AttemptRecord,
    Change,
    EventKind,
    LaunchState,
    LedgerEvent,
    LockHolder,
    LockLease,
    MessageRecord,
    PlanLike,
    Record,
    plan_diff,
)

# The vocabulary (from `records`) is re-exported: callers import it with the store.
__all__ = [
    "LOCK_TTL",
    "TABLES",
    "AttemptRecord",
    "Change",
    "EventKind",
    "LaunchState",
    "Ledger",
    "LedgerEvent",
    "LedgerStore",
    "LockHolder",
    "LockLease",
    "MessageRecord",
    "PlanLike",
    "Record",
    "copied",
    "host_pid",
    "lease_lost",
    "off_loop",
    "pid_alive",
    "redact_url",
    "who_blocks",
]

# The tables a copy moves, each with its order. Events and waves are copied in their order
# (their meaning) without their ids (the destination numbers them). The lock is not copied:
# a copy starts unlocked.
TABLES: dict[str, str] = {
    "sessions": "key",
    "events": "id",
    "launched_requests": "fingerprint",
    "messages": "session_id, digest",
    "waves": "id",
    "attempts": "key, attempt",
}
NOT_COPIED = frozenset({"id", "campaign", "seq"})


def copied(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as a copy carries it (no ids, no namespace)."""
    return {k: v for k, v in row.items() if k not in NOT_COPIED}


def redact_url(url: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host` (also in query strings)."""
    url = re.sub(r"(://[^:/@?#]*):[^@/?#]*@", r"\1:***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


class LedgerStore(Protocol):
    """A campaign's ledger, whatever keeps it. Methods are synchronous and thread-safe; async
    code calls them through `off_loop` (a worker thread), never on the event loop.

    Writes are short transactions, each on its own: no caller holds one across an await or a
    network call.
    """

    campaign: str
    where: str  # where it lives, for messages (a path, or a URL without its password)
    lease: LockLease | None  # the lease this store's holder acquired, if any

    def close(self) -> None: ...

    def __enter__(self) -> LedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema_version(self) -> int: ...

    # the target: the API base URL and org the campaign's sessions were launched into
    def target(self) -> tuple[str, str] | None:
        """(base URL, org id) the ledger is bound to; None before its first launch."""
        ...

    def bind_target(self, base_url: str, org_id: str) -> tuple[str, str]:
        """Bind an unbound ledger to (base URL, org id), atomically (the first binder wins);
        returns the binding that holds afterwards."""
        ...

    # what an org's API was seen to do: its list lag (seconds) and when it was measured
    def org_list_lag(self, base_url: str, org_id: str) -> tuple[float, float] | None:
        """(the most list lag measured, when: Unix time) for the org, or None."""
        ...

    def remember_list_lag(self, base_url: str, org_id: str, lag: float, at: float) -> None:
        """Keep the list lag a run measured on the org (replaces the last figure)."""
        ...

    # the lease: one row per campaign with a fencing generation that every acquisition bumps
    def acquire_lock(self, *, ttl: float = LOCK_TTL) -> LockLease:
        """Take the campaign lease (LockedError when another live holder has it)."""
        ...

    def heartbeat(self) -> bool:
        """Renew the lease; False when the lock row is no longer this holder's."""
        ...

    def holds_lock(self) -> bool:
        """Whether the lock row still carries this holder's generation (False when unsure)."""
        ...

    def lock_holder(self) -> LockHolder | None: ...

    def release_lock(self) -> None:
        """Free the lease if it is still this holder's (a taken-over lease stays taken)."""
        ...

    def break_lock(self) -> LockHolder | None:
        """Remove the lock whoever holds it (`devin-fleet unlock`); returns what was removed."""
        ...

    # planned sessions and their attempt log
    def records(self) -> dict[str, Record]: ...

    def record(self, key: str) -> Record | None: ...

    def known_session_ids(self, key: str) -> set[str]:
        """Every session id ever recorded for `key` (earlier attempts, also those a rebuilt
        ledger learnt from the API, and replaced sessions)."""
        ...

    def session_ids_by_key(self) -> dict[str, set[str]]:
        """`known_session_ids` for every key, in one query (apply reads it once at start)."""
        ...

    def events(self, key: str | None = None) -> list[dict[str, Any]]: ...

    def intent_fingerprints(self) -> dict[str, str]:
        """The fingerprint of each key's latest create intent (what its last attempt sent)."""
        ...

    def sync_plan(self, plan: PlanLike) -> None:
        """Make sure every planned key has a row; forget never-attempted keys that left the
        plan; keep each planned request by fingerprint (what `plan --diff` compares a `~` with).
        A launched row keeps the fingerprint it was launched with (so `plan` shows `~`)."""
        ...

    def launched_request(self, fingerprint: str) -> dict[str, Any] | None:
        """The request planned under `fingerprint` (None for ledgers older than v3)."""
        ...

    def write_events(self, events: Iterable[LedgerEvent]) -> None:
        """Append events and apply their state changes (`records.transition`) in one durable
        transaction. A launched key moves only on a relaunch."""
        ...

    def keep_session(self, key: str, session_id: str, url: str | None) -> None:
        """Point a launched key at `session_id`: the keeper of its duplicates (the earliest
        created), when the row held an extra. Logged as an `adopted` event."""
        ...

    def update_status(self, updates: Iterable[Mapping[str, Any]]) -> None:
        """Store refreshed session states (from `status`): one mapping per session."""
        ...

    def mark_cancelled(self, keys: Iterable[str], *, archived: bool = False) -> None: ...

    # messages
    def messages(self) -> dict[tuple[str, str], MessageRecord]:
        """Every message recorded, by (session id, text digest)."""
        ...

    def message_intent(self, key: str, session_id: str, digest: str, text: str) -> None:
        """Durably record that a message is about to be sent (before the POST)."""
        ...

    def message_outcome(
        self, session_id: str, digest: str, state: str, detail: str | None = None
    ) -> None:
        """Record what became of a message: sent, not_sent, rejected, or still pending."""
        ...

    # rollout waves
    def record_wave(self, wave: int, decision: str, detail: str | None = None) -> None:
        """Append a rollout decision for `wave` (1-based): passed, stopped, skipped, forced, ..."""
        ...

    def wave_log(self) -> list[dict[str, Any]]:
        """Every rollout decision, oldest first."""
        ...

    # earlier launch attempts
    def relaunch(
        self, key: str, *, live: bool, keep: bool, request: str, expected: int | None = None
    ) -> int | None:
        """Record a relaunch of `key` in one durable transaction, before anything is sent: its
        current attempt n is kept whole (to terminate first when `live` and not `keep`), and the
        row becomes attempt n+1, planned and clean. Returns n+1; None when the key is no longer
        at attempt `expected` (another run relaunched it meanwhile)."""
        ...

    def attempt_history(self, key: str | None = None) -> list[AttemptRecord]:
        """Every earlier attempt (superseded by a relaunch), by key then attempt."""
        ...

    def set_termination(self, key: str, attempt: int, termination: str) -> None:
        """Record what became of an earlier attempt to terminate first (`done`)."""
        ...

    def remember_attempts(self, attempts: Iterable[AttemptRecord]) -> int:
        """Keep earlier attempts the ledger never saw (a ledger rebuilt from the API); one per
        (key, attempt), the first kept. Returns how many were new."""
        ...

    # copies
    def export_rows(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every table in `TABLES`, as plain data (a copy's source)."""
        ...

    def import_rows(self, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        """Load `export_rows` output into this empty ledger, in one transaction."""
        ...

    def diff(self, plan: PlanLike) -> list[tuple[Change, str, str]]:
        """Compare the plan with the ledger (`records.plan_diff`)."""
        return plan_diff(plan, self.records())


Ledger = LedgerStore  # the name the rest of the package has always used


def lease_lost(what: str) -> LockLostError:
    """A write that matters, refused because the lease is no longer this holder's."""
    return LockLostError(
        f"not recorded ({what}): this run lost the campaign lock",
        hint="another run holds this campaign now; re-run when it is done",
    )


def host_pid() -> tuple[str, int]:
    """Who this process is, as a lease records it."""
    return socket.gethostname(), os.getpid()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stopped(pid: int) -> bool:
    """Whether a local process is stopped (SIGSTOP, Ctrl-Z): its state in /proc is T."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith(("T", "t"))


def who_blocks(holder: LockHolder | None, campaign: str) -> tuple[str, str] | None:
    """When the database is locked: which process most likely holds it (the lease's holder),
    since when, whether it is paused; and what to do. None when no one holds the lease."""
    if holder is None:
        return None
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.acquired_at))
    silent = max(0.0, time.time() - holder.heartbeat_at)
    host, _ = host_pid()
    local = holder.host == host
    state = ""
    if local and not pid_alive(holder.pid):
        state = ", which has ended"
    elif local and _stopped(holder.pid):
        state = ", which is paused (stopped)"
    what = (
        f"locked by {holder.owner}{state}, holder of campaign {campaign!r}'s lease since {since} "
        f"(last heartbeat {silent:.0f}s ago)"
    )
    if local and state.endswith("(stopped)"):
        hint = f"resume it (`kill -CONT {holder.pid}`) or end it (`kill {holder.pid}`), then retry"
    else:
        hint = f"wait for {holder.owner} to finish, then retry (`devin-fleet status` shows the campaign)"
    return what, hint


_T = TypeVar("_T")
_P = ParamSpec("_P")


async def off_loop(call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Run a store call in a worker thread: a store call never blocks the event loop (a
    networked database, an fsync, a busy wait). Cancellation waits for the call to end."""
    return await anyio.to_thread.run_sync(functools.partial(call, *args, **kwargs))
