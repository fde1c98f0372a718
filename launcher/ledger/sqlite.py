"""The SQLite ledger backend: a campaign's crash-safe record in one file (WAL, synchronous=FULL),
the embedded default. Every SQLite statement of the project and the one translation of sqlite3
errors into LedgerErrors live here; the store interface is `launcher.ledger.store.LedgerStore`.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from launcher.errors import LedgerError, LockedError
from launcher.ledger.migrations import MIGRATIONS, SCHEMA_VERSION
from launcher.ledger.orgfacts import folder_list_lag, keep_folder_list_lag
from launcher.ledger.records import (
    CANCELLED_OUTCOME,
    FACTS,
    LOCK_TTL,
    EventKind,
    LaunchState,
    LedgerEvent,
    LockHolder,
    LockLease,
    MessageRecord,
    PlanLike,
    Record,
    dumps,
    transition,
)
from launcher.ledger.sqlite_attempts import SqliteAttempts
from launcher.ledger.sqlite_errors import BUSY_TIMEOUT, reads, sqlite_errors
from launcher.ledger.store import (
    TABLES,
    LedgerStore,
    copied,
    host_pid,
    lease_lost,
    pid_alive,
    who_blocks,
)


class SqliteLedger(SqliteAttempts, LedgerStore):
    """A campaign's ledger in a SQLite file. Methods are synchronous and thread-safe (one
    connection behind a lock): async callers run them in a worker thread (`off_loop`)."""

    def __init__(
        self,
        path: Path | str,
        campaign: str,
        *,
        create: bool = True,
        busy_timeout: float = BUSY_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.campaign = campaign
        self.where = str(self.path)
        self.lease: LockLease | None = None
        self._mutex = threading.RLock()
        self._reader: sqlite3.Connection | None = None
        self._memory = str(self.path) == ":memory:"
        if not create and not self._memory and not self.path.exists():
            raise LedgerError(
                f"no ledger for campaign {campaign!r} at {self.path}",
                path=str(self.path),
                hint="run `devin-fleet apply` first, or pass --ledger PATH",
            )
        if not self._memory:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(
                    f"cannot create ledger {self.path}: {exc.strerror}", path=str(self.path)
                ) from None
        with sqlite_errors(self.path, "open", self._blocker):
            self.db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    @staticmethod
    def exists(path: Path | str) -> bool:
        return Path(path).exists()

    @staticmethod
    def campaign_of(path: Path | str) -> str | None:
        """The campaign a ledger file belongs to, read without changing it (None: unreadable)."""
        if not Path(path).exists():
            return None
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE name='campaign'").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        with self._mutex:
            if self._reader is not None and self._reader is not self.db:
                self._reader.close()
            self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (BEGIN IMMEDIATE): callers never await or call the
        network inside it, so a paused process holds the write lock for milliseconds at most."""
        with self._mutex, sqlite_errors(self.path, "write", self._blocker):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def _version(self) -> int:
        row = self.db.execute("PRAGMA user_version").fetchone()
        return int(row[0])

    def _migrate(self) -> None:
        version = self._version()
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.path} has schema v{version}; this devin-fleet "
                f"knows up to v{SCHEMA_VERSION}",
                path=str(self.path),
                hint="upgrade devin-fleet",
            )
        for v in range(version, SCHEMA_VERSION):
            with self.transaction() as db:
                for statement in MIGRATIONS[v].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {v + 1}")
        row = self.db.execute("SELECT value FROM meta WHERE name='campaign'").fetchone()
        if row is not None and row[0] == self.campaign:
            return  # opening reads only: a paused writer elsewhere does not block a reader
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE name='campaign'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('campaign', ?)", (self.campaign,))
            elif row[0] != self.campaign:
                raise LedgerError(
                    f"ledger {self.path} belongs to campaign {row[0]!r}, not {self.campaign!r}",
                    path=str(self.path),
                )

    def schema_version(self) -> int:
        with self._mutex:
            return self._version()

    @reads
    def target(self) -> tuple[str, str] | None:
        rows = dict(self.db.execute("SELECT name, value FROM meta WHERE name LIKE 'target_%'"))
        both = rows.get("target_base_url"), rows.get("target_org_id")
        return (both[0], both[1]) if both[0] is not None and both[1] is not None else None

    def bind_target(self, base_url: str, org_id: str) -> tuple[str, str]:
        with self.transaction() as db:
            for name, value in (("target_base_url", base_url), ("target_org_id", org_id)):
                db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, value))
            rows = dict(db.execute("SELECT name, value FROM meta WHERE name LIKE 'target_%'"))
        return rows["target_base_url"], rows["target_org_id"]

    @reads
    def org_list_lag(self, base_url: str, org_id: str) -> tuple[float, float] | None:
        row = self.db.execute("SELECT value FROM meta WHERE name=?", (_lag(base_url, org_id),))
        got = row.fetchone()
        figures: list[tuple[float, float] | None] = [None]
        if got is not None:
            lag, at = str(got[0]).split()
            figures.append((float(lag), float(at)))
        if not self._memory:  # what the org's other campaigns in this folder measured
            figures.append(folder_list_lag(self.path.parent, base_url, org_id))
        return max(figures, key=lambda f: -1.0 if f is None else f[1])  # the newest figure

    def remember_list_lag(self, base_url: str, org_id: str, lag: float, at: float) -> None:
        with self.transaction() as db:  # a ledger belongs to one org: the org is in the name
            value = f"{lag!r} {at!r}"
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_lag(base_url, org_id), value))
        if not self._memory:
            keep_folder_list_lag(self.path.parent, base_url, org_id, lag, at)

    # ------------------------------------------------------------------ the lease

    def acquire_lock(self, *, ttl: float = LOCK_TTL, now: float | None = None) -> LockLease:
        """Take the campaign lease; break it when its holder is gone or silent for `ttl`.

        Every acquisition (and takeover) increments the fencing generation: a holder whose
        generation is no longer the lock row's has lost the lease, whatever its clock says.
        """
        now = time.time() if now is None else now
        host, pid = host_pid()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            if row is not None and not (row["host"] == host and row["pid"] == pid):
                dead = row["host"] == host and not pid_alive(row["pid"])
                stale = now - row["heartbeat_at"] > ttl
                if not (dead or stale):
                    raise LockedError(self.campaign, row["owner"], row["acquired_at"], self.where)
            got = db.execute("SELECT value FROM meta WHERE name='lock_generation'").fetchone()
            generation = (int(got[0]) if got else 0) + 1
            db.execute("INSERT OR REPLACE INTO meta VALUES ('lock_generation', ?)", (str(generation),))
            db.execute(
                "INSERT OR REPLACE INTO lock (campaign, owner, host, pid, acquired_at, "
                "heartbeat_at, generation) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (self.campaign, f"{host}:{pid}", host, pid, now, now, generation),
            )
        self.lease = LockLease(generation, ttl)
        return self.lease

    def heartbeat(self) -> bool:
        """Renew the lease; False when the lock row is no longer ours (the lease was lost)."""
        generation = self.lease.generation if self.lease else -1
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE lock SET heartbeat_at=? WHERE campaign=? AND generation=?",
                (time.time(), self.campaign, generation),
            )
            return cur.rowcount == 1

    def holds_lock(self) -> bool:
        """Whether the lock row still carries this holder's generation (one indexed read on a
        connection of its own, so it never waits behind a group commit). Any sqlite3 error
        means "not held" on purpose: no create is sent on a lease it cannot prove."""
        if self.lease is None:
            return False
        try:
            row = self._read_lock_row()
        except sqlite3.Error:
            return False
        return row is not None and int(row["generation"]) == self.lease.generation

    def _read_lock_row(self) -> sqlite3.Row | None:
        if self._reader is None:
            self._reader = (
                self.db
                if self._memory
                else sqlite3.connect(self.path, check_same_thread=False, timeout=1.0)
            )
            self._reader.row_factory = sqlite3.Row
        query = "SELECT * FROM lock WHERE campaign=?"
        return cast(sqlite3.Row | None, self._reader.execute(query, (self.campaign,)).fetchone())

    def write_lock_free(self) -> bool:
        """Whether a write could start at once (no process holds the write lock right now)."""
        if self._memory:
            return True
        probe = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            probe.close()

    def _blocker(self) -> tuple[str, str] | None:
        """When the database is locked: who most likely holds it, and what to do."""
        return who_blocks(self.holder_if_readable(), self.campaign)

    def holder_if_readable(self) -> LockHolder | None:
        """The lease's holder as the lock row says, or None (none, or unreadable now)."""
        try:
            row = self._read_lock_row()
        except sqlite3.Error:
            return None
        return None if row is None else _holder(row)

    @reads
    def lock_holder(self) -> LockHolder | None:
        row = self.db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
        return None if row is None else _holder(row)

    def release_lock(self) -> None:
        generation = self.lease.generation if self.lease else -1
        with self.transaction() as db:
            db.execute("DELETE FROM lock WHERE campaign=? AND generation=?", (self.campaign, generation))
        self.lease = None

    def break_lock(self) -> LockHolder | None:
        """Remove the lock whoever holds it (`devin-fleet unlock`); returns what was removed."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            db.execute("DELETE FROM lock WHERE campaign=?", (self.campaign,))
        return None if row is None else _holder(row)

    # ------------------------------------------------------------------ records

    @reads
    def records(self) -> dict[str, Record]:
        rows = self.db.execute("SELECT * FROM sessions ORDER BY rowid").fetchall()
        return {r["key"]: Record.from_row(dict(r)) for r in rows}

    @reads
    def record(self, key: str) -> Record | None:
        row = self.db.execute("SELECT * FROM sessions WHERE key=?", (key,)).fetchone()
        return Record.from_row(dict(row)) if row else None

    @reads
    def known_session_ids(self, key: str) -> set[str]:
        rows = self.db.execute(
            "SELECT session_id FROM events WHERE key=? AND session_id IS NOT NULL UNION "
            "SELECT session_id FROM attempts WHERE key=? AND session_id IS NOT NULL",
            (key, key),
        ).fetchall()
        return {r[0] for r in rows}

    @reads
    def session_ids_by_key(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for key, sid in self.db.execute(
            "SELECT key, session_id FROM events WHERE session_id IS NOT NULL UNION "
            "SELECT key, session_id FROM attempts WHERE session_id IS NOT NULL"
        ):
            out.setdefault(key, set()).add(sid)
        return out

    @reads
    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        if key is None:
            rows = self.db.execute("SELECT * FROM events ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM events WHERE key=? ORDER BY id", (key,)).fetchall()
        return [dict(r) for r in rows]

    @reads
    def intent_fingerprints(self) -> dict[str, str]:
        rows = self.db.execute(
            "SELECT key, fingerprint FROM events WHERE kind=? AND fingerprint IS NOT NULL ORDER BY id",
            (EventKind.intent.value,),
        )
        return {k: fp for k, fp in rows}

    def sync_plan(self, plan: PlanLike) -> None:
        now = time.time()
        retryable = (LaunchState.planned, LaunchState.refused, LaunchState.gave_up)
        with self.transaction() as db:  # the read belongs to the write: one transaction
            existing = {
                r[0]: (LaunchState(r[1]), r[2])
                for r in db.execute("SELECT key, state, fingerprint FROM sessions")
            }
            for s in plan.sessions:
                have = existing.get(s.key)
                if have is None:
                    db.execute(
                        "INSERT INTO sessions (key, fleet, fingerprint, item_tag, state, "
                        "updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                        (s.key, s.fleet, s.fingerprint, s.identity_tag, LaunchState.planned, now),
                    )
                elif have[0] in retryable and have[1] != s.fingerprint:
                    db.execute(
                        "UPDATE sessions SET fingerprint=?, updated_at=? WHERE key=?",
                        (s.fingerprint, now, s.key),
                    )
            keys = {s.key for s in plan.sessions}
            gone = [
                k for k, (state, _) in existing.items() if k not in keys and state == LaunchState.planned
            ]
            db.executemany("DELETE FROM sessions WHERE key=?", [(k,) for k in gone])
            db.executemany(
                "INSERT OR IGNORE INTO launched_requests VALUES (?, ?)",
                [(s.fingerprint, json.dumps(s.stored, sort_keys=True)) for s in plan.sessions],
            )

    @reads
    def launched_request(self, fingerprint: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT request FROM launched_requests WHERE fingerprint=?", (fingerprint,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # ------------------------------------------------------------------ messages

    @reads
    def messages(self) -> dict[tuple[str, str], MessageRecord]:
        rows = self.db.execute("SELECT * FROM messages").fetchall()
        return {(r["session_id"], r["digest"]): MessageRecord(**dict(r)) for r in rows}

    def message_intent(self, key: str, session_id: str, digest: str, text: str) -> None:
        now = time.time()
        with self.transaction() as db:
            if not self._fence(db):
                raise lease_lost("a message intent")
            db.execute(
                "INSERT INTO messages (session_id, digest, key, text, state, intent_at) VALUES "
                "(?, ?, ?, ?, 'pending', ?) ON CONFLICT (session_id, digest) DO UPDATE SET "
                "state='pending', detail=NULL, intent_at=excluded.intent_at "
                "WHERE messages.state != 'sent'",  # a delivered message stays delivered
                (session_id, digest, key, text, now),
            )

    def message_outcome(
        self, session_id: str, digest: str, state: str, detail: str | None = None
    ) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET state=?, detail=?, sent_at=CASE WHEN ?='sent' THEN ? "
                "ELSE sent_at END WHERE session_id=? AND digest=?",
                (state, detail, state, now, session_id, digest),
            )

    # ------------------------------------------------------------------ events

    def _fence(self, db: sqlite3.Connection) -> bool:
        """Whether this holder's lease is the campaign's (True when it holds none), read in
        the write's own transaction: no write that matters lands after a takeover."""
        if self.lease is None:
            return True
        row = db.execute("SELECT generation FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
        return row is not None and int(row[0]) == self.lease.generation

    def write_events(self, events: Iterable[LedgerEvent]) -> None:
        now = time.time()
        batch, refused = list(events), []
        with self.transaction() as db:
            if not self._fence(db):  # facts that a session exists are kept whoever holds it
                refused = [e for e in batch if e.kind not in FACTS]
                batch = [e for e in batch if e.kind in FACTS]
            for e in batch:
                db.execute(
                    "INSERT INTO events (key, at, kind, attempt, http_status, session_id, "
                    "fingerprint, detail, launch_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (e.key, now, e.kind.value, e.attempt, e.http_status, e.session_id)
                    + (e.fingerprint, e.detail, e.launch_attempt),
                )
                row = db.execute("SELECT state FROM sessions WHERE key=?", (e.key,)).fetchone()
                new = None if row is None else transition(LaunchState(row[0]), e.kind)
                if new is None:
                    continue
                if e.kind == EventKind.intent:
                    db.execute(
                        "UPDATE sessions SET state=?, attempts=attempts+1, updated_at=? WHERE key=?",
                        (new.value, now, e.key),
                    )
                elif new.launched:
                    db.execute(
                        "UPDATE sessions SET state=?, session_id=?, url=?, last_error=NULL, "
                        "created_at=?, fingerprint=COALESCE(?, fingerprint), launch_attempt="
                        "COALESCE(?, launch_attempt), updated_at=? WHERE key=?",
                        (new.value, e.session_id, e.url, now, e.fingerprint, e.launch_attempt)
                        + (now, e.key),
                    )
                else:
                    db.execute(
                        "UPDATE sessions SET state=?, last_error=COALESCE(?, last_error), "
                        "updated_at=? WHERE key=?",
                        (new.value, e.detail, now, e.key),
                    )
        if refused:
            raise lease_lost(f"{len(refused)} event(s)")

    def keep_session(self, key: str, session_id: str, url: str | None) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO events (key, at, kind, session_id, detail) VALUES (?, ?, ?, ?, ?)",
                (key, now, EventKind.adopted.value, session_id, "keeper of duplicates"),
            )
            db.execute(
                "UPDATE sessions SET session_id=?, url=?, updated_at=? WHERE key=?",
                (session_id, url, now, key),
            )

    def update_status(self, updates: Iterable[Mapping[str, Any]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "UPDATE sessions SET status=:status, status_detail=:status_detail, "
                "outcome=:outcome, acus_consumed=:acus_consumed, pull_requests=:pull_requests, "
                "structured_output=:structured_output, refreshed_at=:now WHERE session_id=:session_id",
                [
                    {
                        **u,
                        "now": now,
                        "pull_requests": json.dumps(u.get("pull_requests") or []),
                        "structured_output": dumps(u.get("structured_output")),
                    }
                    for u in updates
                ],
            )

    def mark_cancelled(self, keys: Iterable[str], *, archived: bool = False) -> None:
        now = time.time()
        with self.transaction() as db:
            for key in keys:
                db.execute(
                    "UPDATE sessions SET cancelled_at=?, outcome=? WHERE key=?",
                    (now, CANCELLED_OUTCOME, key),
                )
                db.execute(
                    "INSERT INTO events (key, at, kind, detail) VALUES (?, ?, ?, ?)",
                    (key, now, EventKind.cancelled.value, "archived" if archived else None),
                )

    # ------------------------------------------------------------------ rollout waves

    def record_wave(self, wave: int, decision: str, detail: str | None = None) -> None:
        with self.transaction() as db:
            if not self._fence(db):
                raise lease_lost(f"wave {wave} {decision}")
            db.execute(
                "INSERT INTO waves (wave, at, decision, detail) VALUES (?, ?, ?, ?)",
                (wave, time.time(), decision, detail),
            )

    @reads
    def wave_log(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM waves ORDER BY id").fetchall()]

    # ------------------------------------------------------------------ copies

    @reads
    def export_rows(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for table, order in TABLES.items():
            rows = self.db.execute(f"SELECT * FROM {table} ORDER BY {order}").fetchall()
            out[table] = [copied(dict(r)) for r in rows]
        return out

    def import_rows(self, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        with self.transaction() as db:
            if any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in TABLES):
                raise LedgerError(
                    f"ledger {self.where} is not empty: a copy goes into a new ledger only",
                    path=self.where,
                    hint="pick a destination that holds no ledger for this campaign",
                )
            for table in TABLES:
                for row in rows.get(table, []):
                    columns = ", ".join(row)
                    marks = ", ".join(f":{c}" for c in row)
                    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", row)


def _holder(row: sqlite3.Row) -> LockHolder:
    return LockHolder(
        owner=row["owner"],
        host=row["host"],
        pid=int(row["pid"]),
        acquired_at=float(row["acquired_at"]),
        heartbeat_at=float(row["heartbeat_at"]),
        generation=int(row["generation"]),
    )


def _lag(base_url: str, org_id: str) -> str:
    return f"list_lag {base_url.rstrip('/')} {org_id}"
