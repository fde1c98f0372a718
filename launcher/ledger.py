"""The ledger: a campaign's crash-safe record in SQLite (WAL, synchronous=FULL).

One row per planned session (`sessions`), an append-only log of every create attempt and its
outcome (`events`), a lease row that keeps two applies of one campaign apart (`lock`), and
versioned migrations so old ledgers keep working. No secret value ever enters it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from launcher.errors import LedgerError, LockedError
from launcher.plan import Plan

LOCK_TTL = 60.0  # seconds without a heartbeat after which a lock is stale
LEDGER_DIR = ".devin-fleet"
CANCELLED_OUTCOME = "cancelled"  # status.Outcome.cancelled's value (status imports the ledger)


class LaunchState(StrEnum):
    """Where a planned session stands in launching."""

    planned = "planned"  # not attempted yet (or every attempt surely created nothing)
    pending = "pending"  # an intent was committed; the outcome is not known yet (or crashed)
    created = "created"  # the API answered with a session
    adopted = "adopted"  # found by its identity tag (after an ambiguous attempt, or reconcile)
    refused = "refused"  # the API refused it (a 4xx): nothing was created
    gave_up = "gave_up"  # not sent (API unreachable) or 429s exhausted: surely nothing created
    unknown = "unknown"  # ambiguous attempts not resolved: looked up before anything is resent

    @property
    def launched(self) -> bool:
        return self in (LaunchState.created, LaunchState.adopted)

    @property
    def uncertain(self) -> bool:
        """A session may exist: the identity tag is looked up before anything is sent again."""
        return self in (LaunchState.pending, LaunchState.unknown)


class EventKind(StrEnum):
    """What one line of the attempt log says (the values are stored: never rename one)."""

    intent = "intent"  # about to send a create (durable before the request leaves)
    created = "created"  # the API answered with the session
    adopted = "adopted"  # the session was found by its identity tag
    not_sent = "not_sent"  # nothing reached the server (connect failure): safe to retry
    rate_limited = "rate_limited"  # 429: nothing created
    ambiguous = "ambiguous"  # timeout after sending, dropped connection, 5xx: may exist
    absent = "absent"  # looked up (twice, past the list lag): not there
    lookup_failed = "lookup_failed"  # the lookup itself failed: outcome unknown
    refused = "rejected"  # a 4xx: the API refused the create (stored as "rejected" since v1)
    gave_up = "gave_up"  # attempts or 429s exhausted, nothing created
    unresolved = "unresolved"  # ambiguous attempts exhausted: unknown until looked up
    auth = "auth"  # 401/403: the run stops, the key is untouched
    relaunch = "replace"  # relaunch requested (`apply --replace`)
    cancelled = "cancelled"  # terminated by `cancel`
    duplicate = "duplicate"  # another live session carries this key's identity tag
    lock_lost = "lock_lost"  # this run lost the campaign lease: it stopped sending


# The one table of state transitions: the state an event kind moves its key to (None: none).
TRANSITIONS: dict[EventKind, LaunchState | None] = {
    EventKind.intent: LaunchState.pending,
    EventKind.created: LaunchState.created,
    EventKind.adopted: LaunchState.adopted,
    EventKind.not_sent: LaunchState.planned,
    EventKind.rate_limited: LaunchState.planned,
    EventKind.ambiguous: LaunchState.pending,
    EventKind.absent: LaunchState.planned,
    EventKind.lookup_failed: LaunchState.unknown,
    EventKind.refused: LaunchState.refused,
    EventKind.gave_up: LaunchState.gave_up,
    EventKind.unresolved: LaunchState.unknown,
    EventKind.auth: LaunchState.planned,
    EventKind.relaunch: LaunchState.planned,
    EventKind.cancelled: None,
    EventKind.duplicate: None,
    EventKind.lock_lost: None,
}
# A launched key leaves its state only through a relaunch: nothing else may move it (a late
# event about an earlier attempt is logged, and the row keeps what it knows).
_FROM_LAUNCHED = frozenset({EventKind.relaunch})


class Change(StrEnum):
    """How the manifest differs from the ledger, per key (`plan` shows these)."""

    create = "+"  # to create
    same = "="  # already launched, unchanged
    changed = "~"  # launched, but the manifest changed since (not relaunched unless replaced)
    gone = "-"  # in the ledger, gone from the manifest
    reconcile = "?"  # an earlier attempt's outcome is unknown: apply looks it up first


MIGRATIONS: list[str] = [
    # v1
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE sessions (
        key TEXT PRIMARY KEY,
        fleet TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        item_tag TEXT NOT NULL,
        state TEXT NOT NULL,
        session_id TEXT,
        url TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX sessions_session_id ON sessions(session_id);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        key TEXT NOT NULL,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        attempt INTEGER,
        http_status INTEGER,
        session_id TEXT,
        fingerprint TEXT,
        detail TEXT
    );
    CREATE INDEX events_key ON events(key);
    CREATE TABLE lock (
        campaign TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        acquired_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL
    );
    """,
    # v2: follow-through (status refreshes and cancellation)
    """
    ALTER TABLE sessions ADD COLUMN status TEXT;
    ALTER TABLE sessions ADD COLUMN status_detail TEXT;
    ALTER TABLE sessions ADD COLUMN outcome TEXT;
    ALTER TABLE sessions ADD COLUMN acus_consumed REAL;
    ALTER TABLE sessions ADD COLUMN pull_requests TEXT;
    ALTER TABLE sessions ADD COLUMN structured_output TEXT;
    ALTER TABLE sessions ADD COLUMN refreshed_at REAL;
    ALTER TABLE sessions ADD COLUMN cancelled_at REAL;
    """,
    # v3: typed states: `failed` splits into refused (a 4xx), gave_up (nothing created) and
    # unknown (ambiguous attempts exhausted: looked up before any resend); fencing generation.
    # (Frozen text: the literals are the v3 state values, never to be renamed.)
    """
    UPDATE sessions SET state = CASE
        WHEN last_error LIKE 'gave up after%' THEN 'unknown'
        WHEN last_error LIKE 'could not reach the API%' THEN 'gave_up'
        WHEN last_error LIKE 'rate limited%' THEN 'gave_up'
        ELSE 'refused' END
        WHERE state = 'failed';
    ALTER TABLE lock ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    INSERT OR IGNORE INTO meta VALUES ('lock_generation', '0');
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Record:
    """One planned session as the ledger knows it."""

    key: str
    fleet: str
    fingerprint: str
    item_tag: str
    state: LaunchState
    session_id: str | None
    url: str | None
    attempts: int
    last_error: str | None
    created_at: float | None
    updated_at: float
    status: str | None = None
    status_detail: str | None = None
    outcome: str | None = None
    acus_consumed: float | None = None
    pull_requests: list[dict[str, Any]] | None = None
    structured_output: dict[str, Any] | None = None
    refreshed_at: float | None = None
    cancelled_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Record:
        d = dict(row)
        d["state"] = LaunchState(d["state"])
        for name in ("pull_requests", "structured_output"):
            if d.get(name) is not None:
                d[name] = json.loads(d[name])
        return cls(**d)


@dataclass(frozen=True)
class LedgerEvent:
    """One line of the append-only attempt log; its kind decides the key's new state."""

    key: str
    kind: EventKind
    attempt: int | None = None
    http_status: int | None = None
    session_id: str | None = None
    fingerprint: str | None = None
    detail: str | None = None
    state: LaunchState | None = None  # derived from TRANSITIONS (a given one must agree)
    url: str | None = None

    def __post_init__(self) -> None:
        kind = EventKind(self.kind)
        object.__setattr__(self, "kind", kind)
        expected = TRANSITIONS[kind]
        if self.state is not None and self.state != expected:
            raise ValueError(f"a {kind.value!r} event moves a key to {expected}, not {self.state}")
        object.__setattr__(self, "state", expected)


@dataclass(frozen=True)
class LockLease:
    """The campaign lease as its holder knows it: the fencing generation it acquired."""

    generation: int
    ttl: float


def default_ledger_path(manifest_path: Path, campaign: str) -> Path:
    """`.devin-fleet/<campaign>.db` beside the manifest."""
    return manifest_path.parent / LEDGER_DIR / f"{campaign}.db"


def _owner() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """A campaign's ledger. Methods are synchronous; apply calls them from one writer task."""

    def __init__(self, path: Path, campaign: str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.campaign = campaign
        self.lease: LockLease | None = None
        self._reader: sqlite3.Connection | None = None
        if not create and not self.path.exists():
            raise LedgerError(
                f"no ledger for campaign {campaign!r} at {self.path}",
                path=str(self.path),
                hint="run `devin-fleet apply` first, or pass --ledger PATH",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise LedgerError(
                f"cannot open ledger {self.path}: {exc}",
                path=str(self.path),
                hint="is it a devin-fleet ledger? is the folder writable?",
            ) from None
        except OSError as exc:
            raise LedgerError(
                f"cannot create ledger {self.path}: {exc.strerror}", path=str(self.path)
            ) from None

    @classmethod
    def scratch_copy(cls, path: Path, campaign: str) -> Ledger:
        """An in-memory copy of the ledger at `path` (empty when there is none): `plan
        --check-remote` reconciles into it and nothing is written to disk."""
        mem = cls(Path(":memory:"), campaign)
        if Path(path).exists():
            try:
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    src.backup(mem.db)
                finally:
                    src.close()
                mem._migrate()
            except sqlite3.DatabaseError as exc:
                raise LedgerError(f"cannot read ledger {path}: {exc}", path=str(path)) from None
        return mem

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        if self._reader is not None and self._reader is not self.db:
            self._reader.close()
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            raise LedgerError(f"ledger write failed: {exc}", path=str(self.path)) from None

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
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE name='campaign'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('campaign', ?)", (self.campaign,))
            elif row[0] != self.campaign:
                raise LedgerError(
                    f"ledger {self.path} belongs to campaign {row[0]!r}, not {self.campaign!r}",
                    path=str(self.path),
                )

    # ------------------------------------------------------------------ lock

    def acquire_lock(self, *, now: float | None = None, ttl: float = LOCK_TTL) -> LockLease:
        """Take the campaign lease; break it when its holder is gone or silent for `ttl`.

        Every acquisition (and takeover) increments the fencing generation: a holder whose
        generation is no longer the lock row's has lost the lease, whatever its clock says.
        """
        now = time.time() if now is None else now
        host, pid = _owner()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            if row is not None and not (row["host"] == host and row["pid"] == pid):
                dead = row["host"] == host and not _pid_alive(row["pid"])
                stale = now - row["heartbeat_at"] > ttl
                if not (dead or stale):
                    raise LockedError(self.campaign, row["owner"], row["acquired_at"], str(self.path))
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
        """Whether the lock row still carries this holder's generation (one indexed read)."""
        if self.lease is None:
            return False
        try:
            if self._reader is None:  # its own connection: the writer thread owns self.db
                self._reader = (
                    sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
                    if str(self.path) != ":memory:"
                    else self.db
                )
            query = "SELECT generation FROM lock WHERE campaign=?"
            try:
                row = self._reader.execute(query, (self.campaign,)).fetchone()
            except sqlite3.OperationalError:  # busy for a moment: one more look, then decide
                time.sleep(0.05)
                row = self._reader.execute(query, (self.campaign,)).fetchone()
        except sqlite3.Error:
            return False  # cannot prove the lease is ours: do not send
        return row is not None and int(row[0]) == self.lease.generation

    def release_lock(self) -> None:
        generation = self.lease.generation if self.lease else -1
        with self.transaction() as db:
            db.execute("DELETE FROM lock WHERE campaign=? AND generation=?", (self.campaign, generation))
        self.lease = None

    def break_lock(self) -> dict[str, Any] | None:
        """Remove the lock whoever holds it (`devin-fleet unlock`); returns what was removed."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            db.execute("DELETE FROM lock WHERE campaign=?", (self.campaign,))
        return dict(row) if row else None

    # ------------------------------------------------------------------ records

    def records(self) -> dict[str, Record]:
        rows = self.db.execute("SELECT * FROM sessions ORDER BY rowid").fetchall()
        return {r["key"]: Record.from_row(r) for r in rows}

    def record(self, key: str) -> Record | None:
        row = self.db.execute("SELECT * FROM sessions WHERE key=?", (key,)).fetchone()
        return Record.from_row(row) if row else None

    def known_session_ids(self, key: str) -> set[str]:
        """Every session id ever recorded for `key` (earlier attempts, replaced sessions)."""
        rows = self.db.execute(
            "SELECT session_id FROM events WHERE key=? AND session_id IS NOT NULL", (key,)
        ).fetchall()
        return {r[0] for r in rows}

    def session_ids_by_key(self) -> dict[str, set[str]]:
        """`known_session_ids` for every key, in one query (apply reads it once at start)."""
        out: dict[str, set[str]] = {}
        for key, sid in self.db.execute(
            "SELECT key, session_id FROM events WHERE session_id IS NOT NULL"
        ):
            out.setdefault(key, set()).add(sid)
        return out

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        if key is None:
            rows = self.db.execute("SELECT * FROM events ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM events WHERE key=? ORDER BY id", (key,)).fetchall()
        return [dict(r) for r in rows]

    def intent_fingerprints(self) -> dict[str, str]:
        """The fingerprint of each key's latest create intent (what its last attempt sent)."""
        rows = self.db.execute(
            "SELECT key, fingerprint FROM events WHERE kind=? AND fingerprint IS NOT NULL ORDER BY id",
            (EventKind.intent.value,),
        )
        return {k: fp for k, fp in rows}

    def sync_plan(self, plan: Plan, *, replace: Iterable[str] = ()) -> None:
        """Make sure every planned key has a row; forget never-attempted keys that left the plan.

        A launched row keeps the fingerprint it was launched with (so `plan` shows `~`), unless
        the key is in `replace`, which turns it back into `planned` with the new fingerprint.
        """
        now = time.time()
        replace = set(replace)
        retryable = (LaunchState.planned, LaunchState.refused, LaunchState.gave_up)
        existing = {
            r[0]: (LaunchState(r[1]), r[2])
            for r in self.db.execute("SELECT key, state, fingerprint FROM sessions")
        }
        with self.transaction() as db:
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
                elif s.key in replace and have[0].launched:
                    # The relaunch starts clean: nothing of the old session's follow-through
                    # (status, outputs, ACUs, cancellation) may show as the new one's.
                    db.execute(
                        "UPDATE sessions SET state=?, fingerprint=?, "
                        "session_id=NULL, url=NULL, status=NULL, status_detail=NULL, "
                        "outcome=NULL, acus_consumed=NULL, pull_requests=NULL, "
                        "structured_output=NULL, refreshed_at=NULL, cancelled_at=NULL, "
                        "updated_at=? WHERE key=?",
                        (TRANSITIONS[EventKind.relaunch], s.fingerprint, now, s.key),
                    )
                    db.execute(
                        "INSERT INTO events (key, at, kind, fingerprint, detail) VALUES "
                        "(?, ?, ?, ?, 'relaunch requested')",
                        (s.key, now, EventKind.relaunch, s.fingerprint),
                    )
            keys = {s.key for s in plan.sessions}
            gone = [
                k for k, (state, _) in existing.items() if k not in keys and state == LaunchState.planned
            ]
            db.executemany("DELETE FROM sessions WHERE key=?", [(k,) for k in gone])

    def write_events(self, events: Iterable[LedgerEvent]) -> None:
        """Append events and apply their state changes (from TRANSITIONS), in one durable
        transaction. A launched key moves only on `replace`: a later event about it is logged
        and leaves the row as it is."""
        now = time.time()
        with self.transaction() as db:
            for e in events:
                db.execute(
                    "INSERT INTO events (key, at, kind, attempt, http_status, session_id, "
                    "fingerprint, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.key,
                        now,
                        e.kind.value,
                        e.attempt,
                        e.http_status,
                        e.session_id,
                        e.fingerprint,
                        e.detail,
                    ),
                )
                new = TRANSITIONS[e.kind]
                if new is None:
                    continue
                row = db.execute("SELECT state FROM sessions WHERE key=?", (e.key,)).fetchone()
                if row is None:
                    continue
                if LaunchState(row[0]).launched and e.kind not in _FROM_LAUNCHED:
                    continue
                if e.kind == EventKind.intent:
                    db.execute(
                        "UPDATE sessions SET state=?, attempts=attempts+1, updated_at=? WHERE key=?",
                        (new.value, now, e.key),
                    )
                elif new.launched:
                    db.execute(
                        "UPDATE sessions SET state=?, session_id=?, url=?, "
                        "last_error=NULL, created_at=?, fingerprint=COALESCE(?, "
                        "fingerprint), updated_at=? WHERE key=?",
                        (new.value, e.session_id, e.url, now, e.fingerprint, now, e.key),
                    )
                else:
                    db.execute(
                        "UPDATE sessions SET state=?, last_error=COALESCE(?, "
                        "last_error), updated_at=? WHERE key=?",
                        (new.value, e.detail, now, e.key),
                    )

    def update_status(self, updates: Iterable[Mapping[str, Any]]) -> None:
        """Store refreshed session states (from `status`): one mapping per session."""
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
                        "structured_output": None
                        if u.get("structured_output") is None
                        else json.dumps(u["structured_output"]),
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

    # ------------------------------------------------------------------ diff

    def diff(self, plan: Plan) -> list[tuple[Change, str, str]]:
        """Compare the plan with the ledger: (change, key, note) in plan order, then `-` rows."""
        records = self.records()
        out: list[tuple[Change, str, str]] = []
        for s in plan.sessions:
            r = records.get(s.key)
            if r is None or r.state == LaunchState.planned:
                out.append((Change.create, s.key, ""))
            elif r.state in (LaunchState.refused, LaunchState.gave_up):
                what = "refused" if r.state == LaunchState.refused else "gave up"
                out.append((Change.create, s.key, f"retry; last {what}: {r.last_error or '?'}"))
            elif r.state.uncertain:
                out.append((Change.reconcile, s.key, "outcome unknown: apply looks it up first"))
            elif r.fingerprint != s.fingerprint:
                out.append((Change.changed, s.key, f"{r.session_id} (relaunch with --replace)"))
            else:
                out.append((Change.same, s.key, r.session_id or ""))
        keys = {s.key for s in plan.sessions}
        for key, r in records.items():
            if key not in keys and r.state != LaunchState.planned:
                out.append((Change.gone, key, r.session_id or r.state.value))
        return out


def open_ledger(
    manifest_path: Path, campaign: str, path: str | Path | None = None, *, create: bool = True
) -> Ledger:
    """The campaign's ledger: `path` if given, else `.devin-fleet/<campaign>.db` by the manifest."""
    return Ledger(
        Path(path) if path else default_ledger_path(manifest_path, campaign), campaign, create=create
    )
