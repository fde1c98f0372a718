"""The PostgreSQL ledger's connection: one connection per store, short transactions with
statement and lock timeouts, retries on serialization failures, deadlocks and dropped
connections (a retried write applies once: it is logged under an id), versioned migrations
under a transaction-level advisory lock, and errors that never show a password. No session
state: no session advisory locks, no prepared statements (PgBouncer's transaction mode)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from launcher.errors import LedgerError
from launcher.ledger.migrations import PG_MIGRATIONS, PG_SCHEMA_VERSION
from launcher.ledger.records import LockLease
from launcher.ledger.store import redact_url

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.rows import dict_row
except ImportError:  # pragma: no cover - the optional extra is missing
    psycopg = None  # type: ignore[assignment]

RETRIES = 5
STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 5_000
CONNECT_TIMEOUT_S = 10
MIGRATION_LOCK = 0x64657669  # the advisory lock key of migrations (transaction-level)
IDLE_TIMEOUT_MS = 5_000
# Per transaction (SET LOCAL: nothing outlives it). A client paused inside a transaction (a
# SIGSTOPped apply) is cut off by the server after IDLE_TIMEOUT_MS, so its row locks never
# block a takeover for long.
_TIMEOUTS = (
    f"SELECT set_config('statement_timeout', '{STATEMENT_TIMEOUT_MS}', true), "
    f"set_config('lock_timeout', '{LOCK_TIMEOUT_MS}', true), "
    f"set_config('idle_in_transaction_session_timeout', '{IDLE_TIMEOUT_MS}', true)"
)
NOW = "extract(epoch from now())"
# Read from the catalog tables (a snapshot), not through to_regclass (a backend's cache, which
# can miss a table another process created while this one waited for the migration lock).
_TABLE_EXISTS = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() "
    "AND tablename = %s) AS t"
)  # the database's clock, never a client's
_T = TypeVar("_T")
Cursor = Any  # psycopg.Cursor[dict[str, Any]] (the driver is optional: not imported for types)


def _require_driver() -> None:
    if psycopg is None:
        raise LedgerError(
            "a PostgreSQL ledger needs the psycopg driver, which is not installed",
            hint="pip install 'devin-fleet[postgres]'",
        )


class _Retry(Exception):
    """A transaction to run again: it surely did not commit (or its write is logged)."""


class PgConnection:
    """A campaign's connection to a PostgreSQL ledger (its store is `PostgresLedger`)."""

    def __init__(self, url: str, campaign: str) -> None:
        _require_driver()
        self.url = url
        self.campaign = campaign
        self.where = redact_url(url)
        self.lease: LockLease | None = None
        self._mutex = threading.RLock()
        self._conn: Any = None

    @classmethod
    def exists(cls, url: str, campaign: str) -> bool:
        """Whether the database holds a ledger for `campaign` (nothing is created)."""
        probe = cls.__new__(cls)
        PgConnection.__init__(probe, url, campaign)
        try:
            if probe._tx(lambda c: c.execute(_TABLE_EXISTS, ("fleet_campaigns",)).fetchone()["t"]):
                return bool(probe._tx(probe._has_campaign, write=False))
            return False
        finally:
            probe.close()

    def _connect(self) -> Any:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self.url, prepare_threshold=None, connect_timeout=CONNECT_TIMEOUT_S
                )
            except psycopg.Error as exc:
                raise self._error("connect to", exc) from None
        return self._conn

    def _error(self, doing: str, exc: BaseException) -> LedgerError:
        text = redact_url(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        password = _password(self.url)
        if password:
            text = text.replace(password, "***")
        return LedgerError(
            f"cannot {doing} ledger {self.where}: {text}",
            path=self.where,
            hint="check the URL, that the server is up and reachable, and the credentials "
            "(libpq variables and ~/.pgpass work as usual); then re-run",
        )

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None and not self._conn.closed:
                self._conn.close()
            self._conn = None

    def _tx(
        self,
        body: Callable[[Cursor], _T],
        *,
        write: bool = True,
        once: bool = False,
        idempotent: bool = True,
    ) -> _T:
        """Run `body` in one short transaction, retried on serialization failures, deadlocks
        and dropped connections. `once`: the write is logged under an id, so a retry after a
        commit whose answer was lost does not apply it twice (then it returns None). A write
        neither `once` nor `idempotent` is not retried after a dropped connection."""
        token = uuid.uuid4() if once else None
        for attempt in range(RETRIES):
            try:
                with self._mutex:
                    return self._run(body, token, write, idempotent or once)
            except _Retry:
                time.sleep(min(1.0, 0.05 * 2**attempt))
        raise LedgerError(
            f"cannot write ledger {self.where}: gave up after {RETRIES} tries",
            path=self.where,
            hint="the database is overloaded or unreachable; re-run when it is back (nothing "
            "is sent while the ledger cannot record it)",
        )

    def _run(
        self, body: Callable[[Cursor], _T], token: uuid.UUID | None, write: bool, retry: bool
    ) -> _T:
        conn = self._connect()
        try:
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                cur.execute(_TIMEOUTS)
                if token is not None:
                    cur.execute(
                        f"INSERT INTO fleet_writes VALUES (%s, %s, {NOW}) ON CONFLICT DO NOTHING",
                        (token, self.campaign),
                    )
                    if cur.rowcount == 0:
                        return None  # type: ignore[return-value]  # applied by an earlier try
                return body(cur)
        except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected, pg_errors.LockNotAvailable):
            raise _Retry() from None  # rolled back: surely nothing was written
        except psycopg.OperationalError as exc:
            if conn.closed or conn.broken:  # dropped: reconnect and try again
                self._conn = None
                if not retry:
                    raise self._error("write", exc) from None
                raise _Retry() from None
            raise self._error("write" if write else "read", exc) from None
        except psycopg.Error as exc:
            raise self._error("write" if write else "read", exc) from None

    def _migrate(self) -> None:
        def version(cur: Cursor) -> int:
            if not cur.execute(_TABLE_EXISTS, ("fleet_schema",)).fetchone()["t"]:
                return 0
            row = cur.execute("SELECT version FROM fleet_schema").fetchone()
            return int(row["version"]) if row else 0

        have = self._tx(version, write=False)
        if have > PG_SCHEMA_VERSION:
            raise LedgerError(
                f"ledger {self.where} has schema v{have}; this devin-fleet knows up to "
                f"v{PG_SCHEMA_VERSION}",
                path=self.where,
                hint="upgrade devin-fleet (every machine that shares this ledger)",
            )
        while have < PG_SCHEMA_VERSION:

            def step(cur: Cursor) -> int:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                now = version(cur)  # another process may have migrated meanwhile
                if now < PG_SCHEMA_VERSION:
                    if now == 0:
                        cur.execute("CREATE TABLE fleet_schema (version INTEGER NOT NULL)")
                        cur.execute("INSERT INTO fleet_schema VALUES (0)")
                    cur.execute(PG_MIGRATIONS[now])
                    cur.execute("UPDATE fleet_schema SET version = %s", (now + 1,))
                return now + 1

            have = self._tx(step)

    def schema_version(self) -> int:
        return int(
            self._tx(lambda c: c.execute("SELECT version FROM fleet_schema").fetchone()["version"])
        )

    def _has_campaign(self, cur: Cursor) -> bool:
        q = "SELECT 1 FROM fleet_campaigns WHERE campaign=%s"
        return cur.execute(q, (self.campaign,)).fetchone() is not None

    def _add_campaign(self, cur: Cursor) -> None:
        cur.execute(
            f"INSERT INTO fleet_campaigns VALUES (%s, {NOW}) ON CONFLICT DO NOTHING", (self.campaign,)
        )


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None
