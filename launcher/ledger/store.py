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
from launcher.ledger.migrations import MIGRATIONS, SCHEMA_VERSION
from launcher.spec.plan import FP_TAG_PREFIX, Plan

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
    relaunch = "replace"  # a new attempt was recorded (`apply --relaunch`; stored value kept)
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
    changed = "~"  # launched, but the manifest changed since (`--relaunch changed` relaunches)
    gone = "-"  # in the ledger, gone from the manifest
    reconcile = "?"  # an earlier attempt's outcome is unknown: apply looks it up first


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
    launch_attempt: int = 1  # the current attempt (`fleet-attempt:<n>` for n >= 2)

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
    launch_attempt: int | None = None  # which launch attempt of the key it is about

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
    by the name of the variable it comes from (`env:NAME`), as the fingerprint sees it, and
    without the fingerprint tag."""
    out = dict(request)
    env = dict(secret_env)
    if env and isinstance(out.get("session_secrets"), list):
        out["session_secrets"] = [
            dict(s, value=f"env:{env[i]}") if i in env else s
            for i, s in enumerate(out["session_secrets"])
        ]
    if isinstance(out.get("tags"), list):  # the fingerprint tag is derived from all the rest
        out["tags"] = [x for x in out["tags"] if not str(x).startswith(FP_TAG_PREFIX)]
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
        elif "full" in text:  # SQLITE_FULL: "database or disk is full"
            raise LedgerError(
                f"cannot {doing} ledger {path}: the disk is full",
                path=str(path),
                hint="nothing recorded so far was lost (a write that failed rolled back, and "
                "apply looks up any create it could not record); free some space, then re-run",
            ) from exc
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

    @classmethod
    def scratch_copy(cls, path: Path, campaign: str) -> Ledger:
        """An in-memory copy of the ledger at `path` (empty when there is none): `plan
        --check-remote` reconciles into it and nothing is written to disk."""
        mem = cls(Path(":memory:"), campaign)
        if Path(path).exists():
            with sqlite_errors(Path(path), "read"):
                src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                try:
                    src.backup(mem.db)
                finally:
                    src.close()
                mem._migrate()
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

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Reads from modules beside the ledger translate sqlite3 errors like its own."""
        with sqlite_errors(self.path, "read"):
            yield

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
        """Every session id ever recorded for `key` (earlier attempts, also those a rebuilt
        ledger learnt from the API, and replaced sessions)."""
        rows = self.db.execute(
            "SELECT session_id FROM events WHERE key=? AND session_id IS NOT NULL UNION "
            "SELECT session_id FROM attempts WHERE key=? AND session_id IS NOT NULL",
            (key, key),
        ).fetchall()
        return {r[0] for r in rows}

    @_reads
    def session_ids_by_key(self) -> dict[str, set[str]]:
        """`known_session_ids` for every key, in one query (apply reads it once at start)."""
        out: dict[str, set[str]] = {}
        for key, sid in self.db.execute(
            "SELECT key, session_id FROM events WHERE session_id IS NOT NULL UNION "
            "SELECT key, session_id FROM attempts WHERE session_id IS NOT NULL"
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
    def intent_fingerprints(self) -> dict[str, str]:
        """The fingerprint of each key's latest create intent (what its last attempt sent)."""
        rows = self.db.execute(
            "SELECT key, fingerprint FROM events WHERE kind=? AND fingerprint IS NOT NULL ORDER BY id",
            (EventKind.intent.value,),
        )
        return {k: fp for k, fp in rows}

    @_reads
    def sync_plan(self, plan: Plan) -> None:
        """Make sure every planned key has a row; forget never-attempted keys that left the plan.

        A launched row keeps the fingerprint it was launched with (so `plan` shows `~`); only a
        relaunch (`launcher.ledger.attempts.relaunch`) starts a new attempt of it.
        """
        now = time.time()
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
            keys = {s.key for s in plan.sessions}
            gone = [
                k for k, (state, _) in existing.items() if k not in keys and state == LaunchState.planned
            ]
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
                "state='pending', detail=NULL, intent_at=excluded.intent_at "
                "WHERE messages.state != 'sent'",  # a delivered message stays delivered
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
        """Append events and apply their state changes (from TRANSITIONS), in one durable
        transaction. A launched key moves only on `replace`: a later event about it is logged
        and leaves the row as it is."""
        now = time.time()
        with self.transaction() as db:
            for e in events:
                db.execute(
                    "INSERT INTO events (key, at, kind, attempt, http_status, session_id, "
                    "fingerprint, detail, launch_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        e.key,
                        now,
                        e.kind.value,
                        e.attempt,
                        e.http_status,
                        e.session_id,
                        e.fingerprint,
                        e.detail,
                        e.launch_attempt,
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
                        "fingerprint), launch_attempt=COALESCE(?, launch_attempt), "
                        "updated_at=? WHERE key=?",
                        (
                            new.value,
                            e.session_id,
                            e.url,
                            now,
                            e.fingerprint,
                            e.launch_attempt,
                            now,
                            e.key,
                        ),
                    )
                else:
                    db.execute(
                        "UPDATE sessions SET state=?, last_error=COALESCE(?, "
                        "last_error), updated_at=? WHERE key=?",
                        (new.value, e.detail, now, e.key),
                    )

    def keep_session(self, key: str, session_id: str, url: str | None) -> None:
        """Point a launched key at `session_id`: the keeper of its duplicates (the earliest
        created), when the row held an extra. Logged as an `adopted` event."""
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
            elif r.state in (LaunchState.refused, LaunchState.gave_up):
                what = "refused" if r.state == LaunchState.refused else "gave up"
                out.append((Change.create, s.key, f"retry; last {what}: {r.last_error or '?'}"))
            elif r.state.uncertain:
                out.append((Change.reconcile, s.key, "outcome unknown: apply looks it up first"))
            elif r.fingerprint != s.fingerprint:
                out.append((Change.changed, s.key, f"{r.session_id} (relaunch with --relaunch changed)"))
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
