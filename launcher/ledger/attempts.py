"""Launch attempts in the ledger: the durable relaunch request ("key K: attempt n -> n+1",
written before anything is sent), and every earlier attempt kept whole (its session, outcome,
pull requests and output) in the `attempts` table, with whether it is to be terminated first."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from launcher.api.models import Session
from launcher.errors import LedgerError
from launcher.ledger.store import TRANSITIONS, EventKind, LaunchState, Ledger
from launcher.spec.identity import session_markers
from launcher.spec.plan import attempt_of

ENDED = ("exit", "error")  # a session in these states is not live


@dataclass(frozen=True)
class AttemptRecord:
    """An earlier launch attempt of a key, as it stood when a relaunch superseded it."""

    key: str
    attempt: int
    session_id: str | None
    url: str | None
    fingerprint: str | None
    status: str | None
    status_detail: str | None
    outcome: str | None
    acus_consumed: float | None
    pull_requests: list[dict[str, Any]] | None
    structured_output: dict[str, Any] | None
    created_at: float | None
    superseded_at: float
    termination: str  # none (was not live), pending (to terminate first), done, kept
    request: str  # the relaunch request that superseded it: its selectors, sorted

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AttemptRecord:
        d = dict(row)
        for name in ("pull_requests", "structured_output"):
            if d.get(name) is not None:
                d[name] = json.loads(d[name])
        return cls(**d)

    @property
    def pr_urls(self) -> list[str]:
        return [str(p.get("pr_url") or "") for p in self.pull_requests or [] if p.get("pr_url")]

    def previous(self) -> dict[str, Any]:
        """What prompt templates of the next attempt see as `previous`."""
        return {
            "attempt": self.attempt,
            "session_id": self.session_id,
            "url": self.url,
            "status": self.status,
            "status_detail": self.status_detail,
            "outcome": self.outcome,
            "structured_output": self.structured_output,
            "pull_requests": self.pr_urls,
        }


def relaunch(
    ledger: Ledger, key: str, *, live: bool, keep: bool, request: str, expected: int | None = None
) -> int | None:
    """Record a relaunch of `key` in one durable transaction, before anything is sent: its
    current attempt n is kept whole in `attempts` (to terminate first when `live` and not
    `keep`), and the row becomes attempt n+1, planned and clean. Returns n+1; None when the
    key is no longer at attempt `expected` (another run relaunched it meanwhile)."""
    now = time.time()
    with ledger.transaction() as db:
        row = db.execute("SELECT * FROM sessions WHERE key=?", (key,)).fetchone()
        if row is not None and expected is not None and row["launch_attempt"] != expected:
            return None
        if row is None or not LaunchState(row["state"]).launched:
            raise LedgerError(f"cannot relaunch {key!r}: it is not launched", path=str(ledger.path))
        n = int(row["launch_attempt"])
        termination = "none" if not live else "kept" if keep else "pending"
        db.execute(
            "INSERT INTO attempts (key, attempt, session_id, url, fingerprint, status, "
            "status_detail, outcome, acus_consumed, pull_requests, structured_output, "
            "created_at, superseded_at, termination, request) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                n,
                row["session_id"],
                row["url"],
                row["fingerprint"],
                row["status"],
                row["status_detail"],
                row["outcome"],
                row["acus_consumed"],
                row["pull_requests"],
                row["structured_output"],
                row["created_at"],
                now,
                termination,
                request,
            ),
        )
        db.execute(
            "UPDATE sessions SET state=?, launch_attempt=?, attempts=0, last_error=NULL, "
            "session_id=NULL, url=NULL, status=NULL, status_detail=NULL, outcome=NULL, "
            "acus_consumed=NULL, pull_requests=NULL, structured_output=NULL, "
            "refreshed_at=NULL, cancelled_at=NULL, created_at=NULL, updated_at=? WHERE key=?",
            (TRANSITIONS[EventKind.relaunch], n + 1, now, key),
        )
        db.execute(
            "INSERT INTO events (key, at, kind, session_id, fingerprint, detail, "
            "launch_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                now,
                EventKind.relaunch.value,
                row["session_id"],
                row["fingerprint"],
                f"relaunch ({request}): attempt {n} -> {n + 1}"
                + (f" (earlier: {termination})" if live else ""),
                n + 1,
            ),
        )
    return n + 1


def attempt_history(ledger: Ledger, key: str | None = None) -> list[AttemptRecord]:
    """Every earlier attempt (superseded by a relaunch), by key then attempt."""
    query = "SELECT * FROM attempts" + (" WHERE key=?" if key else "") + " ORDER BY key, attempt"
    with ledger.reading():
        rows = ledger.db.execute(query, (key,) if key else ()).fetchall()
    return [AttemptRecord.from_row(r) for r in rows]


def set_termination(ledger: Ledger, key: str, attempt: int, termination: str) -> None:
    """Record what became of an earlier attempt to terminate first (`done`)."""
    with ledger.transaction() as db:
        db.execute(
            "UPDATE attempts SET termination=? WHERE key=? AND attempt=?",
            (termination, key, attempt),
        )
        if termination == "done":
            db.execute(
                "INSERT INTO events (key, at, kind, detail, launch_attempt) VALUES (?, ?, ?, ?, ?)",
                (key, time.time(), EventKind.cancelled.value, "earlier attempt ended", attempt),
            )


def remember_earlier(ledger: Ledger, earlier: Mapping[str, list[Session]]) -> int:
    """Keep the earlier attempts the API lists and the ledger never saw (a lost ledger rebuilt
    from the API): `results --history` lists them and their pull requests. Returns how many."""
    known = ledger.session_ids_by_key()
    have = {(a.key, a.attempt) for a in attempt_history(ledger)}
    now = time.time()
    rows = []
    for key, sessions in earlier.items():
        for x in sessions:  # earliest first: one per (key, attempt), the earliest
            n = attempt_of(session_markers(x))
            if x.session_id in known.get(key, ()) or (key, n) in have:
                continue
            have.add((key, n))
            prs = json.dumps([p.model_dump() for p in x.pull_requests])
            output = None if x.structured_output is None else json.dumps(x.structured_output)
            live = "none" if x.status in ENDED else "kept"
            rows.append(
                (key, n, x.session_id, x.url, None, x.status, x.status_detail, None)
                + (x.acus_consumed, prs, output, float(x.created_at), now, live, "rebuilt")
            )
    if rows:
        with ledger.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO attempts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    return len(rows)
