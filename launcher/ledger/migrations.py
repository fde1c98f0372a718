"""The ledger's SQLite schema as its history: one migration per version, applied in order.

Frozen text: a migration, once released, is never edited (old ledgers replay it); state values
written here are the values of their version (see `launcher.ledger.store.LaunchState`).
"""

from __future__ import annotations

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
    # v5: typed states: `failed` splits into refused (a 4xx), gave_up (nothing created) and
    # unknown (ambiguous attempts exhausted: looked up before any resend); fencing generation.
    # (Frozen text: the literals are the v5 state values, never to be renamed.)
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
    # v6: relaunch with lineage: each key's current launch attempt (the `fleet-attempt:` tag of
    # attempts >= 2), and every earlier attempt kept whole (its session, outcome, PRs, output),
    # with the relaunch request (its selectors) that superseded it.
    """
    ALTER TABLE sessions ADD COLUMN launch_attempt INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE events ADD COLUMN launch_attempt INTEGER;
    CREATE TABLE attempts (
        key TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        session_id TEXT,
        url TEXT,
        fingerprint TEXT,
        status TEXT,
        status_detail TEXT,
        outcome TEXT,
        acus_consumed REAL,
        pull_requests TEXT,
        structured_output TEXT,
        created_at REAL,
        superseded_at REAL NOT NULL,
        termination TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (key, attempt)
    );
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

# The PostgreSQL schema (a shared ledger: many campaigns in one database, each row namespaced
# by its campaign; the lease a row per campaign whose generation only grows). Same frozen-text
# rule; applied under a transaction-level advisory lock, one version per transaction.
PG_MIGRATIONS: list[str] = [
    # v1: the SQLite schema at its v6, namespaced, plus the write log that makes a write
    # retried after a dropped connection apply once
    """
    CREATE TABLE fleet_campaigns (campaign TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE fleet_sessions (
        campaign TEXT NOT NULL REFERENCES fleet_campaigns (campaign),
        seq BIGSERIAL,
        key TEXT NOT NULL,
        fleet TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        item_tag TEXT NOT NULL,
        state TEXT NOT NULL,
        session_id TEXT,
        url TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL,
        status TEXT,
        status_detail TEXT,
        outcome TEXT,
        acus_consumed DOUBLE PRECISION,
        pull_requests TEXT,
        structured_output TEXT,
        refreshed_at DOUBLE PRECISION,
        cancelled_at DOUBLE PRECISION,
        launch_attempt INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (campaign, key)
    );
    CREATE INDEX fleet_sessions_session_id ON fleet_sessions (campaign, session_id);
    CREATE TABLE fleet_events (
        id BIGSERIAL PRIMARY KEY,
        campaign TEXT NOT NULL,
        key TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        attempt INTEGER,
        http_status INTEGER,
        session_id TEXT,
        fingerprint TEXT,
        detail TEXT,
        launch_attempt INTEGER
    );
    CREATE INDEX fleet_events_key ON fleet_events (campaign, key);
    CREATE TABLE fleet_launched_requests (
        campaign TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (campaign, fingerprint)
    );
    CREATE TABLE fleet_messages (
        campaign TEXT NOT NULL,
        session_id TEXT NOT NULL,
        digest TEXT NOT NULL,
        key TEXT NOT NULL,
        text TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT,
        intent_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        PRIMARY KEY (campaign, session_id, digest)
    );
    CREATE TABLE fleet_waves (
        id BIGSERIAL PRIMARY KEY,
        campaign TEXT NOT NULL,
        wave INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        decision TEXT NOT NULL,
        detail TEXT
    );
    CREATE TABLE fleet_attempts (
        campaign TEXT NOT NULL,
        key TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        session_id TEXT,
        url TEXT,
        fingerprint TEXT,
        status TEXT,
        status_detail TEXT,
        outcome TEXT,
        acus_consumed DOUBLE PRECISION,
        pull_requests TEXT,
        structured_output TEXT,
        created_at DOUBLE PRECISION,
        superseded_at DOUBLE PRECISION NOT NULL,
        termination TEXT NOT NULL,
        request TEXT NOT NULL,
        PRIMARY KEY (campaign, key, attempt)
    );
    CREATE TABLE fleet_lock (
        campaign TEXT PRIMARY KEY,
        held BOOLEAN NOT NULL,
        owner TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        acquired_at DOUBLE PRECISION NOT NULL,
        heartbeat_at DOUBLE PRECISION NOT NULL,
        ttl DOUBLE PRECISION NOT NULL,
        generation BIGINT NOT NULL
    );
    CREATE TABLE fleet_writes (
        id UUID PRIMARY KEY,
        campaign TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL
    );
    """,
    # v2: the API base URL and org a campaign launched into (the first binder wins)
    """
    ALTER TABLE fleet_campaigns ADD COLUMN target_base_url TEXT, ADD COLUMN target_org_id TEXT;
    """,
    # v3: what an org's API was seen to do (its list lag), shared by the org's campaigns
    """
    CREATE TABLE fleet_org_facts (
        base_url TEXT NOT NULL,
        org_id TEXT NOT NULL,
        list_lag DOUBLE PRECISION NOT NULL,
        measured_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (base_url, org_id)
    );
    """,
]
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)
