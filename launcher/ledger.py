"""The ledger: a campaign's crash-safe record in SQLite (WAL, synchronous=FULL).

One row per planned session (`sessions`), an append-only log of every create attempt and its
outcome (`events`), a lease row that keeps two applies of one campaign apart (`lock`), and
versioned migrations so old ledgers keep working. No secret value ever enters it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, cast

from launcher.errors import LedgerError, LockedError
from launcher.plan import Plan

LOCK_TTL = 60.0  # seconds without a heartbeat after which a lock is stale
LEDGER_DIR = ".devin-fleet"


class LaunchState(StrEnum):
    """Where a planned session stands in launching."""

    planned = "planned"  # not attempted yet
    pending = "pending"  # an intent was committed; the outcome is not known yet (or crashed)
    created = "created"  # the API answered with a session
    adopted = "adopted"  # an ambiguous attempt's session was found by its identity tag
    failed = "failed"  # the API refused it (4xx); nothing was created
    unknown = "unknown"  # ambiguous and could not be resolved yet: the next run looks again

    @property
    def launched(self) -> bool:
        return self in (LaunchState.created, LaunchState.adopted)


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
    # v3: what was launched (for `plan --diff`; secret values are "***" in it) and messages
    # sent to sessions (intent first: exactly once per session and text across crashes)
    """
    CREATE TABLE launched_requests (
        fingerprint TEXT PRIMARY KEY,
        request TEXT NOT NULL
    );
    CREATE TABLE messages (
        session_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        key TEXT NOT NULL,
        text TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT,
        intent_at REAL NOT NULL,
        sent_at REAL,
        PRIMARY KEY (session_id, digest)
    );
    """,
    # v4: rollout waves: what each wave's gate decided, and the overrides (--wave, --skip-gate)
    """
    CREATE TABLE waves (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        wave INTEGER NOT NULL,
        at REAL NOT NULL,
        decision TEXT NOT NULL,
        detail TEXT
    );
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
    """One line of the append-only attempt log."""

    key: str
    kind: str  # intent, created, adopted, not_sent, rate_limited, rejected, ambiguous, absent, ...
    attempt: int | None = None
    http_status: int | None = None
    session_id: str | None = None
    fingerprint: str | None = None
    detail: str | None = None
    state: LaunchState | None = None  # the key's new state, if this event changes it
    url: str | None = None


@dataclass(frozen=True)
class MessageRecord:
    """A message to one session, as the ledger knows it."""

    session_id: str
    digest: str
    key: str
    text: str
    state: str  # pending (intent recorded, outcome unknown), sent, not_sent, rejected
    detail: str | None
    intent_at: float
    sent_at: float | None


def stored_request(
    request: Mapping[str, Any], secret_env: Iterable[tuple[int, str]] = ()
) -> dict[str, Any]:
    """A planned request as the ledger keeps it: the output schema by digest, and each secret
    by the name of the variable it comes from (`env:NAME`), as the fingerprint sees it."""
    out = dict(request)
    env = dict(secret_env)
    if env and isinstance(out.get("session_secrets"), list):
        out["session_secrets"] = [
            dict(s, value=f"env:{env[i]}") if i in env else s
            for i, s in enumerate(out["session_secrets"])
        ]
    schema = out.get("structured_output_schema")
    if schema is not None:
        text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        out["structured_output_schema"] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


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


@contextmanager
def sqlite_errors(path: Path, doing: str) -> Iterator[None]:
    """The one place sqlite3 errors become LedgerErrors: the ledger's path, and what to do."""
    try:
        yield
    except sqlite3.Error as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            hint = "another devin-fleet process is using it; wait for it to finish, then retry"
        elif "malformed" in text or "not a database" in text or "corrupt" in text:
            hint = (
                "the file is damaged or not a devin-fleet ledger; restore it from a backup "
                "(it is the only record of what was launched), or pass --ledger PATH"
            )
        elif "readonly" in text or "unable to open" in text or "permission" in text:
            hint = "check that the file and its folder exist and are readable and writable"
        else:
            hint = "re-run with --debug to see the full error"
        raise LedgerError(f"cannot {doing} ledger {path}: {exc}", path=str(path), hint=hint) from exc


_F = TypeVar("_F", bound=Callable[..., Any])


def _reads(method: _F) -> _F:
    """Ledger reads translate sqlite3 errors like writes do (through `sqlite_errors`)."""

    @functools.wraps(method)
    def wrapper(self: Ledger, *args: Any, **kwargs: Any) -> Any:
        with sqlite_errors(self.path, "read"):
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class Ledger:
    """A campaign's ledger. Methods are synchronous; apply calls them from one writer task."""

    def __init__(self, path: Path, campaign: str, *, create: bool = True) -> None:
        self.path = Path(path)
        self.campaign = campaign
        if not create and not self.path.exists():
            raise LedgerError(
                f"no ledger for campaign {campaign!r} at {self.path}",
                path=str(self.path),
                hint="run `devin-fleet apply` first, or pass --ledger PATH",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LedgerError(
                f"cannot create ledger {self.path}: {exc.strerror}", path=str(self.path)
            ) from None
        with sqlite_errors(self.path, "open"):
            self.db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with sqlite_errors(self.path, "write"):
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

    def acquire_lock(self, *, now: float | None = None) -> None:
        """Take the campaign lease; break it when its holder is gone or silent for LOCK_TTL."""
        now = time.time() if now is None else now
        host, pid = _owner()
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            if row is not None and not (row["host"] == host and row["pid"] == pid):
                dead = row["host"] == host and not _pid_alive(row["pid"])
                stale = now - row["heartbeat_at"] > LOCK_TTL
                if not (dead or stale):
                    raise LockedError(self.campaign, row["owner"], row["acquired_at"], str(self.path))
            db.execute(
                "INSERT OR REPLACE INTO lock VALUES (?, ?, ?, ?, ?, ?)",
                (self.campaign, f"{host}:{pid}", host, pid, now, now),
            )

    def heartbeat(self) -> None:
        host, pid = _owner()
        with self.transaction() as db:
            db.execute(
                "UPDATE lock SET heartbeat_at=? WHERE campaign=? AND host=? AND pid=?",
                (time.time(), self.campaign, host, pid),
            )

    def release_lock(self) -> None:
        host, pid = _owner()
        with self.transaction() as db:
            db.execute(
                "DELETE FROM lock WHERE campaign=? AND host=? AND pid=?", (self.campaign, host, pid)
            )

    def break_lock(self) -> dict[str, Any] | None:
        """Remove the lock whoever holds it (`devin-fleet unlock`); returns what was removed."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM lock WHERE campaign=?", (self.campaign,)).fetchone()
            db.execute("DELETE FROM lock WHERE campaign=?", (self.campaign,))
        return dict(row) if row else None

    # ------------------------------------------------------------------ records

    @_reads
    def records(self) -> dict[str, Record]:
        rows = self.db.execute("SELECT * FROM sessions ORDER BY rowid").fetchall()
        return {r["key"]: Record.from_row(r) for r in rows}

    @_reads
    def record(self, key: str) -> Record | None:
        row = self.db.execute("SELECT * FROM sessions WHERE key=?", (key,)).fetchone()
        return Record.from_row(row) if row else None

    @_reads
    def known_session_ids(self, key: str) -> set[str]:
        """Every session id ever recorded for `key` (earlier attempts, replaced sessions)."""
        rows = self.db.execute(
            "SELECT session_id FROM events WHERE key=? AND session_id IS NOT NULL", (key,)
        ).fetchall()
        return {r[0] for r in rows}

    @_reads
    def session_ids_by_key(self) -> dict[str, set[str]]:
        """`known_session_ids` for every key, in one query (apply reads it once at start)."""
        out: dict[str, set[str]] = {}
        for key, sid in self.db.execute(
            "SELECT key, session_id FROM events WHERE session_id IS NOT NULL"
        ):
            out.setdefault(key, set()).add(sid)
        return out

    @_reads
    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        if key is None:
            rows = self.db.execute("SELECT * FROM events ORDER BY id").fetchall()
        else:
            rows = self.db.execute("SELECT * FROM events WHERE key=? ORDER BY id", (key,)).fetchall()
        return [dict(r) for r in rows]

    @_reads
    def sync_plan(self, plan: Plan, *, replace: Iterable[str] = ()) -> None:
        """Make sure every planned key has a row; forget never-attempted keys that left the plan.

        A launched row keeps the fingerprint it was launched with (so `plan` shows `~`), unless
        the key is in `replace`, which turns it back into `planned` with the new fingerprint.
        """
        now = time.time()
        replace = set(replace)
        existing = {
            r[0]: (r[1], r[2]) for r in self.db.execute("SELECT key, state, fingerprint FROM sessions")
        }
        with self.transaction() as db:
            for s in plan.sessions:
                have = existing.get(s.key)
                if have is None:
                    db.execute(
                        "INSERT INTO sessions (key, fleet, fingerprint, item_tag, state, "
                        "updated_at) VALUES (?, ?, ?, ?, 'planned', ?)",
                        (s.key, s.fleet, s.fingerprint, s.identity_tag, now),
                    )
                elif have[0] in ("planned", "failed") and have[1] != s.fingerprint:
                    db.execute(
                        "UPDATE sessions SET fingerprint=?, updated_at=? WHERE key=?",
                        (s.fingerprint, now, s.key),
                    )
                elif s.key in replace and LaunchState(have[0]).launched:
                    # The relaunch starts clean: nothing of the old session's follow-through
                    # (status, outputs, ACUs, cancellation) may show as the new one's.
                    db.execute(
                        "UPDATE sessions SET state='planned', fingerprint=?, "
                        "session_id=NULL, url=NULL, status=NULL, status_detail=NULL, "
                        "outcome=NULL, acus_consumed=NULL, pull_requests=NULL, "
                        "structured_output=NULL, refreshed_at=NULL, cancelled_at=NULL, "
                        "updated_at=? WHERE key=?",
                        (s.fingerprint, now, s.key),
                    )
                    db.execute(
                        "INSERT INTO events (key, at, kind, fingerprint, detail) VALUES "
                        "(?, ?, 'replace', ?, 'relaunch requested')",
                        (s.key, now, s.fingerprint),
                    )
            keys = {s.key for s in plan.sessions}
            gone = [k for k, (state, _) in existing.items() if k not in keys and state == "planned"]
            db.executemany("DELETE FROM sessions WHERE key=?", [(k,) for k in gone])
            self._remember_requests(db, plan)

    # ------------------------------------------------------------------ launched requests

    def _remember_requests(self, db: sqlite3.Connection, plan: Plan) -> None:
        """Keep each planned request by fingerprint (what `plan --diff` compares a `~` with).

        Secret values are already "***" in a planned request (kept as the variable's name);
        the output schema is kept by digest, so rows stay small.
        """
        db.executemany(
            "INSERT OR IGNORE INTO launched_requests VALUES (?, ?)",
            [
                (s.fingerprint, json.dumps(stored_request(s.request, s.secret_env), sort_keys=True))
                for s in plan.sessions
            ],
        )

    @_reads
    def launched_request(self, fingerprint: str) -> dict[str, Any] | None:
        """The request planned under `fingerprint` (None for ledgers older than v3)."""
        row = self.db.execute(
            "SELECT request FROM launched_requests WHERE fingerprint=?", (fingerprint,)
        ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    # ------------------------------------------------------------------ messages

    @_reads
    def messages(self) -> dict[tuple[str, str], MessageRecord]:
        """Every message recorded, by (session id, text digest)."""
        rows = self.db.execute("SELECT * FROM messages").fetchall()
        return {(r["session_id"], r["digest"]): MessageRecord(**dict(r)) for r in rows}

    def message_intent(self, key: str, session_id: str, digest: str, text: str) -> None:
        """Durably record that a message is about to be sent (before the POST)."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO messages (session_id, digest, key, text, state, intent_at) VALUES "
                "(?, ?, ?, ?, 'pending', ?) ON CONFLICT (session_id, digest) DO UPDATE SET "
                "state='pending', detail=NULL, intent_at=excluded.intent_at",
                (session_id, digest, key, text, now),
            )

    def message_outcome(
        self, session_id: str, digest: str, state: str, detail: str | None = None
    ) -> None:
        """Record what became of a message: sent, not_sent, rejected, or still pending."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "UPDATE messages SET state=?, detail=?, sent_at=CASE WHEN ?='sent' THEN ? "
                "ELSE sent_at END WHERE session_id=? AND digest=?",
                (state, detail, state, now, session_id, digest),
            )

    def write_events(self, events: Iterable[LedgerEvent]) -> None:
        """Append events and apply their state changes, in one durable transaction."""
        now = time.time()
        with self.transaction() as db:
            for e in events:
                db.execute(
                    "INSERT INTO events (key, at, kind, attempt, http_status, session_id, "
                    "fingerprint, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.key,
                        now,
                        e.kind,
                        e.attempt,
                        e.http_status,
                        e.session_id,
                        e.fingerprint,
                        e.detail,
                    ),
                )
                if e.kind == "intent":
                    db.execute(
                        "UPDATE sessions SET state='pending', attempts=attempts+1, "
                        "updated_at=? WHERE key=?",
                        (now, e.key),
                    )
                if e.state is not None:
                    if e.state.launched:
                        db.execute(
                            "UPDATE sessions SET state=?, session_id=?, url=?, "
                            "last_error=NULL, created_at=?, fingerprint=COALESCE(?, "
                            "fingerprint), updated_at=? WHERE key=?",
                            (e.state.value, e.session_id, e.url, now, e.fingerprint, now, e.key),
                        )
                    else:
                        db.execute(
                            "UPDATE sessions SET state=?, last_error=COALESCE(?, "
                            "last_error), updated_at=? WHERE key=?",
                            (e.state.value, e.detail, now, e.key),
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
                    "UPDATE sessions SET cancelled_at=?, outcome='cancelled' WHERE key=?", (now, key)
                )
                db.execute(
                    "INSERT INTO events (key, at, kind, detail) VALUES (?, ?, 'cancelled', ?)",
                    (key, now, "archived" if archived else None),
                )

    # ------------------------------------------------------------------ rollout waves

    def record_wave(self, wave: int, decision: str, detail: str | None = None) -> None:
        """Append a rollout decision for `wave` (1-based): passed, stopped, skipped, forced, ..."""
        with self.transaction() as db:
            db.execute(
                "INSERT INTO waves (wave, at, decision, detail) VALUES (?, ?, ?, ?)",
                (wave, time.time(), decision, detail),
            )

    @_reads
    def wave_log(self) -> list[dict[str, Any]]:
        """Every rollout decision, oldest first."""
        return [dict(r) for r in self.db.execute("SELECT * FROM waves ORDER BY id").fetchall()]

    # ------------------------------------------------------------------ diff

    @_reads
    def diff(self, plan: Plan) -> list[tuple[Change, str, str]]:
        """Compare the plan with the ledger: (change, key, note) in plan order, then `-` rows."""
        records = self.records()
        out: list[tuple[Change, str, str]] = []
        for s in plan.sessions:
            r = records.get(s.key)
            if r is None or r.state == LaunchState.planned:
                out.append((Change.create, s.key, ""))
            elif r.state == LaunchState.failed:
                out.append((Change.create, s.key, f"retry; last failed: {r.last_error or '?'}"))
            elif r.state in (LaunchState.pending, LaunchState.unknown):
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
