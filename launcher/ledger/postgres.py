"""The PostgreSQL ledger backend: a shared ledger for a team (`--ledger postgresql://...`), many
campaigns in one database, each namespaced by its campaign. The store's statements live here;
the connection, retries and migrations in `pg_conn` (with the psycopg driver, an optional extra).

The lease is a row per campaign whose generation only grows, taken by one atomic statement and
timed by the database's clock (`now()`), never a client's. Every write that matters (intents,
outcomes, wave decisions, message intents) checks the generation in its own transaction. No
session state (no session advisory locks, no prepared statements): it works behind PgBouncer in
transaction mode. Transactions are short, with statement and lock timeouts; serialization
failures, deadlocks and dropped connections are retried, and a retried write applies once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from launcher.errors import LedgerError, LockedError
from launcher.ledger.pg_conn import NOW, Cursor, PgConnection
from launcher.ledger.records import (
    CANCELLED_OUTCOME,
    FACTS,
    LOCK_TTL,
    AttemptRecord,
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
from launcher.ledger.store import (
    TABLES,
    LedgerStore,
    copied,
    host_pid,
    lease_lost,
    pid_alive,
)

SESSION_COLUMNS = (
    "key, fleet, fingerprint, item_tag, state, session_id, url, attempts, last_error, created_at, "
    "updated_at, status, status_detail, outcome, acus_consumed, pull_requests, structured_output, "
    "refreshed_at, cancelled_at, launch_attempt"
)


class PostgresLedger(PgConnection, LedgerStore):
    """A campaign's ledger in a PostgreSQL database. Methods are synchronous and thread-safe
    (one connection behind a lock): async callers run them in a worker thread (`off_loop`)."""

    def __init__(self, url: str, campaign: str, *, create: bool = True) -> None:
        PgConnection.__init__(self, url, campaign)
        self._migrate()
        if not self._tx(self._has_campaign, write=False):
            if not create:
                raise LedgerError(
                    f"no ledger for campaign {campaign!r} at {self.where}",
                    path=self.where,
                    hint="run `devin-fleet apply` first, or pass --ledger URL",
                )
            self._tx(self._add_campaign)

    def _fence(self, cur: Cursor) -> bool:
        """Whether this holder's lease is the campaign's (True when it holds none: writes by
        commands that take no lease). The row stays locked until the transaction ends, so a
        takeover waits for this write, and this write never lands after one."""
        if self.lease is None:
            return True
        row = cur.execute(
            "SELECT generation, held FROM fleet_lock WHERE campaign=%s FOR SHARE", (self.campaign,)
        ).fetchone()
        return row is not None and row["held"] and int(row["generation"]) == self.lease.generation

    def _fenced(self, cur: Cursor, what: str) -> None:
        if not self._fence(cur):
            raise lease_lost(what)

    # ------------------------------------------------------------------ the lease

    def acquire_lock(self, *, ttl: float = LOCK_TTL) -> LockLease:
        """One atomic statement takes the lease: when it is free, released, silent for its
        holder's TTL by the database's clock, ours (this process again), or its holder is a
        process on this host that has ended. Every acquisition bumps the generation."""
        host, pid = host_pid()
        seen = self.lock_holder()
        dead = seen is not None and seen.host == host and not pid_alive(seen.pid)
        params = {"c": self.campaign, "owner": f"{host}:{pid}", "host": host, "pid": pid}
        params |= {"ttl": ttl, "dead": dead, "seen": seen.generation if seen else -1}

        def take(cur: Cursor) -> int | None:
            row = cur.execute(
                "INSERT INTO fleet_lock AS l (campaign, held, owner, host, pid, acquired_at, "
                f"heartbeat_at, ttl, generation) VALUES (%(c)s, true, %(owner)s, %(host)s, "
                f"%(pid)s, {NOW}, {NOW}, %(ttl)s, 1) ON CONFLICT (campaign) DO UPDATE SET "
                "held=true, owner=excluded.owner, host=excluded.host, pid=excluded.pid, "
                "acquired_at=excluded.acquired_at, heartbeat_at=excluded.heartbeat_at, "
                "ttl=excluded.ttl, generation=l.generation + 1 WHERE NOT l.held "
                f"OR l.heartbeat_at < {NOW} - l.ttl OR (l.host = %(host)s AND l.pid = %(pid)s) "
                "OR (%(dead)s AND l.generation = %(seen)s) RETURNING generation",
                params,
            ).fetchone()
            return None if row is None else int(row["generation"])

        generation = self._tx(take)
        if generation is None:
            holder = self.lock_holder()
            owner, since = (holder.owner, holder.acquired_at) if holder else ("another run", 0.0)
            raise LockedError(self.campaign, owner, since, self.where)
        self.lease = LockLease(generation, ttl)
        return self.lease

    def heartbeat(self) -> bool:
        generation = self.lease.generation if self.lease else -1

        def beat(cur: Cursor) -> bool:
            cur.execute(
                f"UPDATE fleet_lock SET heartbeat_at={NOW} WHERE campaign=%s AND generation=%s AND held",
                (self.campaign, generation),
            )
            return bool(cur.rowcount == 1)

        return self._tx(beat)

    def holds_lock(self) -> bool:
        if self.lease is None:
            return False
        try:
            return self._tx(self._fence, write=False)
        except LedgerError:
            return False  # cannot prove the lease is ours: do not send

    def lock_holder(self) -> LockHolder | None:
        def read(cur: Cursor) -> LockHolder | None:
            row = cur.execute(
                "SELECT * FROM fleet_lock WHERE campaign=%s AND held", (self.campaign,)
            ).fetchone()
            if row is None:
                return None
            return LockHolder(
                row["owner"], row["host"], int(row["pid"]), float(row["acquired_at"]),
                float(row["heartbeat_at"]), int(row["generation"]),
            )  # fmt: skip

        return self._tx(read, write=False)

    def release_lock(self) -> None:
        generation = self.lease.generation if self.lease else -1
        self._tx(
            lambda c: c.execute(
                "UPDATE fleet_lock SET held=false WHERE campaign=%s AND generation=%s",
                (self.campaign, generation),
            )
        )
        self.lease = None

    def break_lock(self) -> LockHolder | None:
        holder = self.lock_holder()
        self._tx(
            lambda c: c.execute("UPDATE fleet_lock SET held=false WHERE campaign=%s", (self.campaign,))
        )
        return holder

    # ------------------------------------------------------------------ records

    def _select(self, query: str, *params: Any) -> list[dict[str, Any]]:
        return self._tx(
            lambda c: list(c.execute(query, (self.campaign, *params)).fetchall()), write=False
        )

    # ------------------------------------------------------------------ the target

    def target(self) -> tuple[str, str] | None:
        q = "SELECT target_base_url, target_org_id FROM fleet_campaigns WHERE campaign=%s"
        rows = self._select(q)
        if not rows or rows[0]["target_base_url"] is None or rows[0]["target_org_id"] is None:
            return None
        return rows[0]["target_base_url"], rows[0]["target_org_id"]

    def bind_target(self, base_url: str, org_id: str) -> tuple[str, str]:
        def bind(cur: Cursor) -> tuple[str, str]:
            cur.execute(
                "UPDATE fleet_campaigns SET target_base_url=%s, target_org_id=%s "
                "WHERE campaign=%s AND target_base_url IS NULL",
                (base_url, org_id, self.campaign),
            )
            row = cur.execute(
                "SELECT target_base_url, target_org_id FROM fleet_campaigns WHERE campaign=%s",
                (self.campaign,),
            ).fetchone()
            return row["target_base_url"], row["target_org_id"]

        return self._tx(bind)

    def org_list_lag(self, base_url: str, org_id: str) -> tuple[float, float] | None:
        q = "SELECT list_lag, measured_at FROM fleet_org_facts WHERE base_url=%s AND org_id=%s"
        rows = self._tx(lambda c: c.execute(q, (base_url.rstrip("/"), org_id)).fetchall(), write=False)
        return (rows[0]["list_lag"], rows[0]["measured_at"]) if rows else None

    def remember_list_lag(self, base_url: str, org_id: str, lag: float, at: float) -> None:
        # one row per org, shared by every campaign of this database
        self._tx(
            lambda c: c.execute(
                "INSERT INTO fleet_org_facts (base_url, org_id, list_lag, measured_at) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (base_url, org_id) DO UPDATE SET "
                "list_lag=EXCLUDED.list_lag, measured_at=EXCLUDED.measured_at",
                (base_url.rstrip("/"), org_id, lag, at),
            )
        )

    def records(self) -> dict[str, Record]:
        rows = self._select(
            f"SELECT {SESSION_COLUMNS} FROM fleet_sessions WHERE campaign=%s ORDER BY seq"
        )
        return {r["key"]: Record.from_row(r) for r in rows}

    def record(self, key: str) -> Record | None:
        q = f"SELECT {SESSION_COLUMNS} FROM fleet_sessions WHERE campaign=%s AND key=%s"
        rows = self._select(q, key)
        return Record.from_row(rows[0]) if rows else None

    def known_session_ids(self, key: str) -> set[str]:
        return self.session_ids_by_key().get(key, set())

    def session_ids_by_key(self) -> dict[str, set[str]]:
        rows = self._select(
            "SELECT key, session_id FROM fleet_events WHERE campaign=%s AND session_id IS NOT NULL "
            "UNION SELECT key, session_id FROM fleet_attempts WHERE campaign=%s AND session_id "
            "IS NOT NULL",
            self.campaign,
        )
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r["key"], set()).add(r["session_id"])
        return out

    def events(self, key: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT id, key, at, kind, attempt, http_status, session_id, fingerprint, detail, "
        q += "launch_attempt FROM fleet_events WHERE campaign=%s"
        if key is None:
            return self._select(q + " ORDER BY id")
        return self._select(q + " AND key=%s ORDER BY id", key)

    def intent_fingerprints(self) -> dict[str, str]:
        rows = self._select(
            "SELECT key, fingerprint FROM fleet_events WHERE campaign=%s AND kind=%s AND "
            "fingerprint IS NOT NULL ORDER BY id",
            EventKind.intent.value,
        )
        return {r["key"]: r["fingerprint"] for r in rows}

    def sync_plan(self, plan: PlanLike) -> None:
        retryable = (LaunchState.planned, LaunchState.refused, LaunchState.gave_up)
        c = self.campaign

        def sync(cur: Cursor) -> None:
            rows = cur.execute(
                "SELECT key, state, fingerprint FROM fleet_sessions WHERE campaign=%s FOR UPDATE", (c,)
            ).fetchall()
            existing = {r["key"]: (LaunchState(r["state"]), r["fingerprint"]) for r in rows}
            new = [s for s in plan.sessions if s.key not in existing]
            cur.executemany(
                "INSERT INTO fleet_sessions (campaign, key, fleet, fingerprint, item_tag, state, "
                f"updated_at) VALUES (%s, %s, %s, %s, %s, %s, {NOW})",
                [
                    (c, s.key, s.fleet, s.fingerprint, s.identity_tag, LaunchState.planned.value)
                    for s in new
                ],
            )
            moved = [
                (s.fingerprint, c, s.key)
                for s in plan.sessions
                if (have := existing.get(s.key)) and have[0] in retryable and have[1] != s.fingerprint
            ]
            cur.executemany(
                f"UPDATE fleet_sessions SET fingerprint=%s, updated_at={NOW} "
                "WHERE campaign=%s AND key=%s",
                moved,
            )
            keys = {s.key for s in plan.sessions}
            gone = [
                (c, k) for k, (st, _) in existing.items() if k not in keys and st == LaunchState.planned
            ]
            cur.executemany("DELETE FROM fleet_sessions WHERE campaign=%s AND key=%s", gone)
            cur.executemany(
                "INSERT INTO fleet_launched_requests VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(c, s.fingerprint, json.dumps(s.stored, sort_keys=True)) for s in plan.sessions],
            )

        self._tx(sync)

    def launched_request(self, fingerprint: str) -> dict[str, Any] | None:
        q = "SELECT request FROM fleet_launched_requests WHERE campaign=%s AND fingerprint=%s"
        rows = self._select(q, fingerprint)
        return dict(json.loads(rows[0]["request"])) if rows else None

    # ------------------------------------------------------------------ messages

    def messages(self) -> dict[tuple[str, str], MessageRecord]:
        rows = self._select("SELECT * FROM fleet_messages WHERE campaign=%s")
        return {(r["session_id"], r["digest"]): MessageRecord(**copied(r)) for r in rows}

    def message_intent(self, key: str, session_id: str, digest: str, text: str) -> None:
        def intent(cur: Cursor) -> None:
            self._fenced(cur, "message intent")
            cur.execute(
                "INSERT INTO fleet_messages (campaign, session_id, digest, key, text, state, "
                f"intent_at) VALUES (%s, %s, %s, %s, %s, 'pending', {NOW}) ON CONFLICT "
                "(campaign, session_id, digest) DO UPDATE SET state='pending', detail=NULL, "
                "intent_at=excluded.intent_at WHERE fleet_messages.state != 'sent'",
                (self.campaign, session_id, digest, key, text),
            )

        self._tx(intent)

    def message_outcome(
        self, session_id: str, digest: str, state: str, detail: str | None = None
    ) -> None:
        self._tx(
            lambda c: c.execute(
                "UPDATE fleet_messages SET state=%s, detail=%s, sent_at=CASE WHEN %s='sent' THEN "
                f"{NOW} ELSE sent_at END WHERE campaign=%s AND session_id=%s AND digest=%s",
                (state, detail, state, self.campaign, session_id, digest),
            )
        )

    # ------------------------------------------------------------------ events

    def write_events(self, events: Iterable[LedgerEvent]) -> None:
        batch = list(events)
        refused: list[LedgerEvent] = []

        def write(cur: Cursor) -> None:
            todo = batch
            if not self._fence(cur):  # facts that a session exists are kept whoever holds it
                todo = [e for e in batch if e.kind in FACTS]
                refused[:] = [e for e in batch if e.kind not in FACTS]
            _write_events(cur, self.campaign, todo)

        self._tx(write, once=True)
        if refused:
            raise lease_lost(f"{len(refused)} event(s)")

    def keep_session(self, key: str, session_id: str, url: str | None) -> None:
        def keep(cur: Cursor) -> None:
            cur.execute(
                "INSERT INTO fleet_events (campaign, key, at, kind, session_id, detail) "
                f"VALUES (%s, %s, {NOW}, %s, %s, %s)",
                (self.campaign, key, EventKind.adopted.value, session_id, "keeper of duplicates"),
            )
            cur.execute(
                f"UPDATE fleet_sessions SET session_id=%s, url=%s, updated_at={NOW} "
                "WHERE campaign=%s AND key=%s",
                (session_id, url, self.campaign, key),
            )

        self._tx(keep, once=True)

    def update_status(self, updates: Iterable[Mapping[str, Any]]) -> None:
        rows = [
            (u["status"], u["status_detail"], u["outcome"], u["acus_consumed"])
            + (json.dumps(u.get("pull_requests") or []), dumps(u.get("structured_output")))
            + (self.campaign, u["session_id"])
            for u in updates
        ]
        self._tx(
            lambda c: c.executemany(
                "UPDATE fleet_sessions SET status=%s, status_detail=%s, outcome=%s, acus_consumed=%s, "
                f"pull_requests=%s, structured_output=%s, refreshed_at={NOW} WHERE campaign=%s "
                "AND session_id=%s",
                rows,
            )
        )

    def mark_cancelled(self, keys: Iterable[str], *, archived: bool = False) -> None:
        keys, c = list(keys), self.campaign

        def mark(cur: Cursor) -> None:
            cur.executemany(
                f"UPDATE fleet_sessions SET cancelled_at={NOW}, outcome=%s WHERE campaign=%s AND key=%s",
                [(CANCELLED_OUTCOME, c, k) for k in keys],
            )
            cur.executemany(
                "INSERT INTO fleet_events (campaign, key, at, kind, detail) "
                f"VALUES (%s, %s, {NOW}, %s, %s)",
                [(c, k, EventKind.cancelled.value, "archived" if archived else None) for k in keys],
            )

        self._tx(mark, once=True)

    # ------------------------------------------------------------------ rollout waves

    def record_wave(self, wave: int, decision: str, detail: str | None = None) -> None:
        def record(cur: Cursor) -> None:
            self._fenced(cur, f"wave {wave} {decision}")
            cur.execute(
                "INSERT INTO fleet_waves (campaign, wave, at, decision, detail) "
                f"VALUES (%s, %s, {NOW}, %s, %s)",
                (self.campaign, wave, decision, detail),
            )

        self._tx(record, once=True)

    def wave_log(self) -> list[dict[str, Any]]:
        q = "SELECT id, wave, at, decision, detail FROM fleet_waves WHERE campaign=%s ORDER BY id"
        return self._select(q)

    # ------------------------------------------------------------------ launch attempts

    def relaunch(
        self, key: str, *, live: bool, keep: bool, request: str, expected: int | None = None
    ) -> int | None:
        c = self.campaign

        def run(cur: Cursor) -> int | None:
            row = cur.execute(
                f"SELECT {SESSION_COLUMNS} FROM fleet_sessions WHERE campaign=%s AND key=%s FOR UPDATE",
                (c, key),
            ).fetchone()
            if row is not None and expected is not None and row["launch_attempt"] != expected:
                return None
            if row is None or not LaunchState(row["state"]).launched:
                raise LedgerError(f"cannot relaunch {key!r}: it is not launched", path=self.where)
            n = int(row["launch_attempt"])
            termination = "none" if not live else "kept" if keep else "pending"
            earlier = {k: row[k] for k in _ATTEMPT_FROM_ROW}
            earlier |= {"key": key, "attempt": n, "termination": termination, "request": request}
            earlier["superseded_at"] = time.time()
            _insert_attempts(cur, c, [earlier], ignore=False)
            cur.execute(
                "UPDATE fleet_sessions SET state=%s, launch_attempt=%s, attempts=0, last_error=NULL, "
                "session_id=NULL, url=NULL, status=NULL, status_detail=NULL, outcome=NULL, "
                "acus_consumed=NULL, pull_requests=NULL, structured_output=NULL, refreshed_at=NULL, "
                f"cancelled_at=NULL, created_at=NULL, updated_at={NOW} WHERE campaign=%s AND key=%s",
                (LaunchState.planned.value, n + 1, c, key),
            )
            detail = f"relaunch ({request}): attempt {n} -> {n + 1}"
            detail += f" (earlier: {termination})" if live else ""
            cur.execute(
                "INSERT INTO fleet_events (campaign, key, at, kind, session_id, fingerprint, detail, "
                f"launch_attempt) VALUES (%s, %s, {NOW}, %s, %s, %s, %s, %s)",
                (c, key, EventKind.relaunch.value, row["session_id"], row["fingerprint"], detail, n + 1),
            )
            return n + 1

        return self._tx(run, idempotent=False)

    def attempt_history(self, key: str | None = None) -> list[AttemptRecord]:
        q = "SELECT * FROM fleet_attempts WHERE campaign=%s"
        rows = (
            self._select(q + " AND key=%s ORDER BY key, attempt", key)
            if key
            else self._select(q + " ORDER BY key, attempt")
        )
        return [AttemptRecord.from_row(r) for r in rows]

    def set_termination(self, key: str, attempt: int, termination: str) -> None:
        c = self.campaign

        def mark(cur: Cursor) -> None:
            cur.execute(
                "UPDATE fleet_attempts SET termination=%s WHERE campaign=%s AND key=%s AND attempt=%s",
                (termination, c, key, attempt),
            )
            if termination == "done":
                cur.execute(
                    "INSERT INTO fleet_events (campaign, key, at, kind, detail, launch_attempt) "
                    f"VALUES (%s, %s, {NOW}, %s, %s, %s)",
                    (c, key, EventKind.cancelled.value, "earlier attempt ended", attempt),
                )

        self._tx(mark, once=True)

    def remember_attempts(self, attempts: Iterable[AttemptRecord]) -> int:
        rows = [_attempt_row(a) for a in attempts]
        if not rows:
            return 0
        return self._tx(lambda c: _insert_attempts(c, self.campaign, rows, ignore=True))

    # ------------------------------------------------------------------ copies

    def export_rows(self) -> dict[str, list[dict[str, Any]]]:
        def export(cur: Cursor) -> dict[str, list[dict[str, Any]]]:
            out = {}
            for table, order in TABLES.items():
                q = f"SELECT * FROM fleet_{table} WHERE campaign=%s ORDER BY {order}"
                rows = cur.execute(q, (self.campaign,)).fetchall()
                out[table] = [copied(r) for r in rows]
            out["sessions"].sort(key=lambda r: r["key"])
            return out

        return self._tx(export, write=False)

    def import_rows(self, rows: Mapping[str, list[dict[str, Any]]]) -> None:
        def load(cur: Cursor) -> None:
            for table in TABLES:
                q = f"SELECT 1 FROM fleet_{table} WHERE campaign=%s LIMIT 1"
                if cur.execute(q, (self.campaign,)).fetchone():
                    raise LedgerError(
                        f"ledger {self.where} is not empty: a copy goes into a new ledger only",
                        path=self.where,
                        hint="pick a destination that holds no ledger for this campaign",
                    )
            for table in TABLES:
                for row in rows.get(table, []):
                    values = {"campaign": self.campaign, **row}
                    columns = ", ".join(values)
                    marks = ", ".join(f"%({c})s" for c in values)
                    cur.execute(f"INSERT INTO fleet_{table} ({columns}) VALUES ({marks})", values)

        self._tx(load, idempotent=False)


_ATTEMPT_FROM_ROW = [
    *("session_id", "url", "fingerprint", "status", "status_detail", "outcome"),
    *("acus_consumed", "pull_requests", "structured_output", "created_at"),
]
ATTEMPT_COLUMNS = ["key", "attempt", *_ATTEMPT_FROM_ROW, "superseded_at", "termination", "request"]


def _attempt_row(a: AttemptRecord) -> dict[str, Any]:
    row = {c: getattr(a, c) for c in ATTEMPT_COLUMNS}
    row["pull_requests"] = dumps(a.pull_requests)
    row["structured_output"] = dumps(a.structured_output)
    return row


def _insert_attempts(cur: Cursor, campaign: str, rows: list[dict[str, Any]], *, ignore: bool) -> int:
    columns = ", ".join(["campaign", *ATTEMPT_COLUMNS])
    marks = ", ".join(["%(campaign)s", *(f"%({c})s" for c in ATTEMPT_COLUMNS)])
    tail = " ON CONFLICT DO NOTHING" if ignore else ""
    added = 0
    for row in rows:
        cur.execute(
            f"INSERT INTO fleet_attempts ({columns}) VALUES ({marks}){tail}",
            {**row, "campaign": campaign},
        )
        added += cur.rowcount
    return added


def _write_events(cur: Cursor, campaign: str, events: list[LedgerEvent]) -> None:
    """Append events and apply their transitions: states read once, moved in order here."""
    if not events:
        return
    keys = sorted({e.key for e in events})
    rows = cur.execute(
        "SELECT key, state FROM fleet_sessions WHERE campaign=%s AND key = ANY(%s) FOR UPDATE",
        (campaign, keys),
    ).fetchall()
    state = {r["key"]: LaunchState(r["state"]) for r in rows}
    cur.executemany(
        "INSERT INTO fleet_events (campaign, key, at, kind, attempt, http_status, session_id, "
        f"fingerprint, detail, launch_attempt) VALUES (%s, %s, {NOW}, %s, %s, %s, %s, %s, %s, %s)",
        [
            (campaign, e.key, e.kind.value, e.attempt, e.http_status, e.session_id, e.fingerprint)
            + (e.detail, e.launch_attempt)
            for e in events
        ],
    )
    where = f"updated_at={NOW} WHERE campaign=%s AND key=%s"
    for e in events:
        new = transition(state[e.key], e.kind) if e.key in state else None
        if new is None:
            continue
        state[e.key] = new
        if e.kind == EventKind.intent:
            cur.execute(
                f"UPDATE fleet_sessions SET state=%s, attempts=attempts+1, {where}",
                (new.value, campaign, e.key),
            )
        elif new.launched:
            cur.execute(
                "UPDATE fleet_sessions SET state=%s, session_id=%s, url=%s, last_error=NULL, "
                f"created_at={NOW}, fingerprint=COALESCE(%s, fingerprint), "
                f"launch_attempt=COALESCE(%s, launch_attempt), {where}",
                (new.value, e.session_id, e.url, e.fingerprint, e.launch_attempt, campaign, e.key),
            )
        else:
            cur.execute(
                f"UPDATE fleet_sessions SET state=%s, last_error=COALESCE(%s, last_error), {where}",
                (new.value, e.detail, campaign, e.key),
            )
