"""The SQLite ledger's launch attempts: a relaunch records the attempt it supersedes (in the same
transaction as the key's new attempt), and the attempt history (`results --history`, lineage).
A part of `SqliteLedger`, kept apart to keep each module readable."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from launcher.errors import LedgerError
from launcher.ledger.records import AttemptRecord, EventKind, LaunchState, dumps
from launcher.ledger.sqlite_errors import reads


class SqliteAttempts:
    """The launch-attempt statements of `SqliteLedger` (which provides the connection)."""

    if TYPE_CHECKING:
        db: sqlite3.Connection
        where: str

        def transaction(self) -> AbstractContextManager[sqlite3.Connection]: ...

    def relaunch(
        self, key: str, *, live: bool, keep: bool, request: str, expected: int | None = None
    ) -> int | None:
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM sessions WHERE key=?", (key,)).fetchone()
            if row is not None and expected is not None and row["launch_attempt"] != expected:
                return None
            if row is None or not LaunchState(row["state"]).launched:
                raise LedgerError(f"cannot relaunch {key!r}: it is not launched", path=self.where)
            n = int(row["launch_attempt"])
            termination = "none" if not live else "kept" if keep else "pending"
            earlier = {c: row[c] for c in _ATTEMPT_FROM_ROW}
            earlier.update(key=key, attempt=n, superseded_at=now, termination=termination)
            earlier["request"] = request
            self._insert_attempt(db, earlier, ignore=False)
            db.execute(
                "UPDATE sessions SET state=?, launch_attempt=?, attempts=0, last_error=NULL, "
                "session_id=NULL, url=NULL, status=NULL, status_detail=NULL, outcome=NULL, "
                "acus_consumed=NULL, pull_requests=NULL, structured_output=NULL, "
                "refreshed_at=NULL, cancelled_at=NULL, created_at=NULL, updated_at=? WHERE key=?",
                (LaunchState.planned.value, n + 1, now, key),
            )
            detail = f"relaunch ({request}): attempt {n} -> {n + 1}" + (
                f" (earlier: {termination})" if live else ""
            )
            db.execute(
                "INSERT INTO events (key, at, kind, session_id, fingerprint, detail, "
                "launch_attempt) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, now, EventKind.relaunch.value, row["session_id"], row["fingerprint"])
                + (detail, n + 1),
            )
        return n + 1

    @staticmethod
    def _insert_attempt(db: sqlite3.Connection, values: Mapping[str, Any], *, ignore: bool) -> int:
        columns = ", ".join(ATTEMPT_COLUMNS)
        marks = ", ".join(f":{c}" for c in ATTEMPT_COLUMNS)
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        cur = db.execute(f"{verb} INTO attempts ({columns}) VALUES ({marks})", dict(values))
        return cur.rowcount

    @reads
    def attempt_history(self, key: str | None = None) -> list[AttemptRecord]:
        query = "SELECT * FROM attempts" + (" WHERE key=?" if key else "") + " ORDER BY key, attempt"
        rows = self.db.execute(query, (key,) if key else ()).fetchall()
        return [AttemptRecord.from_row(dict(r)) for r in rows]

    def set_termination(self, key: str, attempt: int, termination: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE attempts SET termination=? WHERE key=? AND attempt=?",
                (termination, key, attempt),
            )
            if termination == "done":
                db.execute(
                    "INSERT INTO events (key, at, kind, detail, launch_attempt) VALUES (?, ?, ?, ?, ?)",
                    (key, time.time(), EventKind.cancelled.value, "earlier attempt ended", attempt),
                )

    def remember_attempts(self, attempts: Iterable[AttemptRecord]) -> int:
        rows = [_attempt_row(a) for a in attempts]
        if not rows:
            return 0
        with self.transaction() as db:
            return sum(self._insert_attempt(db, r, ignore=True) for r in rows)


ATTEMPT_COLUMNS = (
    *("key", "attempt", "session_id", "url", "fingerprint", "status", "status_detail"),
    *("outcome", "acus_consumed", "pull_requests", "structured_output", "created_at"),
    *("superseded_at", "termination", "request"),
)
_ATTEMPT_FROM_ROW = ATTEMPT_COLUMNS[2:12]  # session_id .. created_at: a session row's columns


def _attempt_row(a: AttemptRecord) -> dict[str, Any]:
    row = {c: getattr(a, c) for c in ATTEMPT_COLUMNS}
    row["pull_requests"] = dumps(a.pull_requests)
    row["structured_output"] = dumps(a.structured_output)
    return row
