"""Where a campaign's ledger lives, and opening it: a path or a URL (`sqlite:///path`, a plain
path, `postgresql://...`) names the backend; by default `.devin-fleet/<campaign>.db` beside the
manifest. The store, not its caller, answers whether a campaign has a ledger yet."""

from __future__ import annotations

import re
from pathlib import Path

from launcher.errors import LedgerError
from launcher.ledger.sqlite import SqliteLedger
from launcher.ledger.store import LedgerStore, redact_url

LEDGER_DIR = ".devin-fleet"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
POSTGRES_SCHEMES = ("postgresql", "postgres")


def default_ledger_path(manifest_path: Path, campaign: str) -> Path:
    """`.devin-fleet/<campaign>.db` beside the manifest."""
    return manifest_path.parent / LEDGER_DIR / f"{campaign}.db"


def ledger_location(manifest_path: Path, campaign: str, location: str | Path | None = None) -> str:
    """The location a campaign's ledger is opened from: `location`, else the default path."""
    if location is None or str(location) == "":
        return str(default_ledger_path(manifest_path, campaign))
    return str(location)


def _sqlite_path(location: str) -> Path | None:
    """The file a location names, or None when it names a server. `sqlite:///abs/path`,
    `sqlite:rel/path` and plain paths (a Windows drive letter is a path, not a scheme)."""
    m = _SCHEME.match(location)
    if m is None or len(m.group(1)) == 1:
        return Path(location)
    scheme = m.group(1).lower()
    if scheme == "sqlite":
        rest = location[m.end() :]
        if rest.startswith("//"):
            rest = rest[2:]  # sqlite:///abs -> /abs
        if not rest:
            raise LedgerError(f"ledger URL {location!r} names no file", hint="use sqlite:///path/to.db")
        return Path(rest)
    if scheme in POSTGRES_SCHEMES:
        return None
    raise LedgerError(
        f"unknown ledger location {redact_url(location)!r}: scheme {scheme!r}",
        hint="pass a file path, sqlite:///path/to.db, or postgresql://user@host:5432/db",
    )


def describe(location: str) -> str:
    """A location as messages show it (never a password)."""
    path = _sqlite_path(location)
    return str(path) if path is not None else redact_url(location)


def _open(location: str, campaign: str, create: bool) -> LedgerStore:
    path = _sqlite_path(location)
    if path is not None:
        return SqliteLedger(path, campaign, create=create)
    from launcher.ledger.postgres import PostgresLedger  # the driver is an optional extra

    return PostgresLedger(location, campaign, create=create)


def open_ledger(
    manifest_path: Path,
    campaign: str,
    location: str | Path | None = None,
    *,
    create: bool = True,
) -> LedgerStore:
    """The campaign's ledger at `location` (a path or a URL), else `.devin-fleet/<campaign>.db`
    beside the manifest. With `create=False`, LedgerError when the campaign has none yet."""
    return _open(ledger_location(manifest_path, campaign, location), campaign, create)


def ledger_exists(manifest_path: Path, campaign: str, location: str | Path | None = None) -> bool:
    """Whether the campaign has a ledger at `location` yet (nothing is created)."""
    where = ledger_location(manifest_path, campaign, location)
    path = _sqlite_path(where)
    if path is not None:
        return SqliteLedger.exists(path)
    from launcher.ledger.postgres import PostgresLedger

    return bool(PostgresLedger.exists(where, campaign))


def scratch_copy(manifest_path: Path, campaign: str, location: str | Path | None = None) -> LedgerStore:
    """An in-memory copy of the campaign's ledger (empty when it has none): `plan
    --check-remote` reconciles into it and nothing is written where the ledger lives."""
    mem = SqliteLedger(":memory:", campaign)
    if ledger_exists(manifest_path, campaign, location):
        with open_ledger(manifest_path, campaign, location, create=False) as src:
            mem.import_rows(src.export_rows())
            if (target := src.target()) is not None:  # the org it belongs to, checked too
                mem.bind_target(*target)
    return mem


def sqlite_campaign(location: str | Path) -> str | None:
    """The campaign a SQLite ledger file belongs to (None: not a file location, or none)."""
    path = _sqlite_path(str(location))
    return None if path is None else SqliteLedger.campaign_of(path)


def copy_ledger(source: str | Path, dest: str | Path, campaign: str) -> dict[str, int]:
    """Copy a campaign's ledger from `source` to `dest` (SQLite <-> PostgreSQL, or alike):
    while holding the source's lease (nothing writes it meanwhile), into a destination that
    holds no ledger for the campaign yet, in one transaction there, then verified by reading
    it back. Returns the rows copied per table. A failed copy into a new file leaves none."""
    src_where, dst_where = str(source), str(dest)
    if not ledger_exists(Path("."), campaign, src_where):
        raise LedgerError(
            f"no ledger for campaign {campaign!r} at {describe(src_where)}",
            hint="check the source location (and --campaign)",
        )
    new_file = (path := _sqlite_path(dst_where)) is not None and not path.exists()
    try:
        with _open(src_where, campaign, create=False) as src:
            src.acquire_lock()
            try:
                rows = src.export_rows()
                with _open(dst_where, campaign, create=True) as dst:
                    dst.import_rows(rows)
                    if dst.export_rows() != rows:
                        raise LedgerError(
                            f"the copy at {describe(dst_where)} does not read back as the source",
                            hint="remove the copy and try again; the source is unchanged",
                        )
            finally:
                src.release_lock()
    except BaseException:
        if new_file and path is not None:
            for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                leftover.unlink(missing_ok=True)
        raise
    return {table: len(r) for table, r in rows.items()}
